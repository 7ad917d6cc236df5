"""Published anchors without traces: KTransformers' DeepSeek-V3/R1 tutorial (hybrid CPU+GPU decode).

Source: github.com/kvcache-ai/ktransformers, doc/en/DeepseekR1_V3_tutorial.md, section "V0.2":
DeepSeek-V3 Q4_K_M ("DeepseekV3-q4km (int4)"), dual Xeon Gold 6454S (32 cores per socket, 2 NUMA
nodes, 8 x DDR5-4800 per socket, 1 TB) + RTX 4090D 24 GB, 500-token prompt, routed experts on the
CPU, MLA and the dense parts on the GPU, "after enough warm up". Decode with 8 experts: 12.208
tok/s dual socket (--cpu_infer 65), 8.73 single socket (numactl -N 1 -m 1, --cpu_infer 33);
llama.cpp 4.51 on the same machine (2 x 32 cores). Prefill: 82.94, 54.21 and 10.31 tok/s.

The trace is synthetic with the model's shapes (moesim/traces/synth/synthetic.py, catalog deepseek-v3):
58 MoE layers x 256 experts, top-8. Expert bytes follow llama.cpp's Q4_K_M recipe: gate and up in
Q4_K (4.5 bits/weight), down in Q6_K (6.5625) on the layers `use_more_bits` picks (the first and last
eighth and every third in between) and Q4_K elsewhere; each matrix is 7168 x 2048.
Predicted with placement cpu-all (every routed expert on the CPU) and the profiles' datasheet figures:
nothing here is fitted to the anchors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from moesim.traces.format.trace import Trace

SOURCE = "github.com/kvcache-ai/ktransformers doc/en/DeepseekR1_V3_tutorial.md (V0.2 table, 8 experts)"
N_LAYERS_TOTAL = 61
FIRST_MOE_LAYER = 3
MATRIX = 7168 * 2048


@dataclass(frozen=True)
class Anchor:
    name: str
    profile: str
    engine: str
    decode_tok_s: float
    prefill_tok_s: float
    placement: str  # where routed experts run
    framework: str | None = None  # kernel counts per operator (moesim/sim/compute/processors.py); None: the profile's


ANCHORS = (
    Anchor("KTransformers V0.2, dual socket", "ktransformers-xeon6454s-2s-4090d", "KTransformers V0.2 (--cpu_infer 65)",
           12.208, 82.94, "all routed experts on the CPU"),
    Anchor("KTransformers V0.2, single socket", "ktransformers-xeon6454s-1s-4090d",
           "KTransformers V0.2 (numactl -N 1 -m 1, --cpu_infer 33)", 8.73, 54.21, "all routed experts on the CPU"),
    Anchor("llama.cpp, dual socket", "ktransformers-xeon6454s-2s-4090d", "llama.cpp (2 x 32 cores)", 4.51, 10.31,
           "all routed experts on the CPU (assumed: the tutorial gives no llama.cpp offload settings)", "llama.cpp"),
)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's Q4_K_M choice of layers whose down projection is stored in Q6_K."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def q4_k_m_expert_bytes() -> list[int]:
    """Bytes of one routed expert per MoE layer (gate + up Q4_K, down Q6_K or Q4_K)."""
    q4k = MATRIX * 144 // 256  # Q4_K: 144 bytes per 256 weights
    q6k = MATRIX * 210 // 256  # Q6_K: 210 bytes per 256 weights
    return [2 * q4k + (q6k if use_more_bits(i, N_LAYERS_TOTAL) else q4k)
            for i in range(FIRST_MOE_LAYER, N_LAYERS_TOTAL)]


def anchor_trace(decode_tokens: int = 64, prompt_tokens: int = 500, seed: int = 0) -> Trace:
    """A seeded synthetic DeepSeek-V3 trace with Q4_K_M expert sizes (one request)."""
    from moesim.traces.synth.synth_config import preset
    from moesim.traces.synth.synthetic import generate

    config = preset("qwen3").with_settings(["model=deepseek-v3"])
    config = dataclasses.replace(config, object_bytes=tuple(q4_k_m_expert_bytes()), n_requests=1, accesses=0,
                                 seed=seed).with_settings([f"prefill=fixed:{prompt_tokens}",
                                                           f"decode=fixed:{decode_tokens}"])
    trace = generate(config)
    trace.meta.provenance.update({"anchor": SOURCE, "quantisation": "Q4_K_M expert sizes (llama.cpp recipe)"})
    return trace


def cpu_placement_available() -> bool:
    """Whether this tree's engine can place routed experts on the CPU as a policy (issue 13)."""
    import dataclasses as dc

    from moesim.sim.timed_replay import TimedConfig

    return any(f.name == "placement" for f in dc.fields(TimedConfig))


def predict_anchor(anchor: Anchor, trace: Trace) -> float:
    """Predicted decode tokens/s: every routed expert on the CPU (placement cpu-all), the rest on the GPU."""
    from moesim.hw_profiles.loader import load_profile
    from moesim.sim.timed_replay import TimedConfig, timed_replay

    config = TimedConfig(capacity_bytes=0, placement="cpu-all", model="deepseek-v3", bounds=False,  # type: ignore[call-arg]
                         profile=anchor.profile, framework=anchor.framework)
    result = timed_replay(trace, load_profile(anchor.profile), config)
    return 1.0 / float(result.summary["tpot_s"]["mean"])
