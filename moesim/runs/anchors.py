"""Published anchors without traces: KTransformers' DeepSeek-V3/R1 tutorial (hybrid CPU+GPU decode).

Source: github.com/kvcache-ai/ktransformers, doc/en/DeepseekR1_V3_tutorial.md, section "V0.2":
DeepSeek-V3 Q4_K_M ("DeepseekV3-q4km (int4)"), dual Xeon Gold 6454S (32 cores per socket, 2 NUMA
nodes, 8 x DDR5-4800 per socket, 1 TB) + RTX 4090D 24 GB, 500-token prompt, routed experts on the
CPU, MLA and the dense parts on the GPU, "after enough warm up". Decode: 12.208 tok/s dual socket
(--cpu_infer 65, USE_NUMA=1: "we copy the critical matrix on both nodes"), 8.73 single socket
(numactl -N 1 -m 1, --cpu_infer 33), with 6 experts 13.69 and 10.303; llama.cpp 4.51 on the same
machine (2 x 32 cores, no settings given). Prefill: 82.94, 54.21, 97.32, 65.14 and 10.31 tok/s.

The trace is synthetic with the model's shapes (moesim/traces/synth/synthetic.py, catalog deepseek-v3):
58 MoE layers x 256 experts, top-8 (or top-6). Expert bytes follow llama.cpp's Q4_K_M recipe: gate
and up in Q4_K (4.5 bits/weight), down in Q6_K (6.5625) on the layers `use_more_bits` picks (the first
and last eighth and every third in between) and Q4_K elsewhere; each matrix is 7168 x 2048. The dense
weights (meta.dense_bytes) follow the same recipe: attention and shared gate/up in Q4_K, the shared
down like the routed one, the router in F32.

Which row is fitted and which predicted: moesim/runs/anchor_fit.py fits two figures on the
dual-socket rows and predicts the others with them; `Anchor.role` says which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from moesim.traces.format.trace import Trace

SOURCE = "github.com/kvcache-ai/ktransformers doc/en/DeepseekR1_V3_tutorial.md (V0.2 table)"
MODEL = "deepseek-v3"
N_LAYERS_TOTAL = 61
FIRST_MOE_LAYER = 3
HIDDEN, MOE_INTER = 7168, 2048
MATRIX = HIDDEN * MOE_INTER
Q4K, Q6K, F32 = 144 / 256, 210 / 256, 4.0  # bytes per weight (ggml block layouts)
FIT, PREDICT = "fit", "predict"


@dataclass(frozen=True)
class Anchor:
    name: str
    profile: str
    engine: str
    decode_tok_s: float
    prefill_tok_s: float
    experts: int  # routed experts per token (the run's top-k)
    placement: str  # placement spec (moesim/policies/placement.py)
    where: str  # the placement in words, with its assumptions
    role: str  # FIT: the figures are fitted on it; PREDICT: predicted with them
    engine_figures: bool = True  # the KTransformers per-layer CPU hand-off applies (False: another engine)
    framework: str | None = None  # kernel counts per operator (moesim/sim/compute/processors.py); None: the profile's


KT_PLACE = "routed experts on the CPU (each socket reads its own copy), the rest on the GPU"
LLAMA_NOTE = "(assumed: the tutorial gives no llama.cpp settings)"
ANCHORS = (
    Anchor("KTransformers V0.2, dual socket, 8 experts", "ktransformers-xeon6454s-2s-4090d",
           "KTransformers V0.2 (--cpu_infer 65, USE_NUMA=1)", 12.208, 82.94, 8, "cpu-all", KT_PLACE, FIT),
    Anchor("KTransformers V0.2, dual socket, 6 experts", "ktransformers-xeon6454s-2s-4090d",
           "KTransformers V0.2 (--cpu_infer 65, USE_NUMA=1)", 13.69, 97.32, 6, "cpu-all", KT_PLACE, FIT),
    Anchor("KTransformers V0.2, single socket, 8 experts", "ktransformers-xeon6454s-1s-4090d",
           "KTransformers V0.2 (numactl -N 1 -m 1, --cpu_infer 33)", 8.73, 54.21, 8, "cpu-all", KT_PLACE, PREDICT),
    Anchor("KTransformers V0.2, single socket, 6 experts", "ktransformers-xeon6454s-1s-4090d",
           "KTransformers V0.2 (numactl -N 1 -m 1, --cpu_infer 33)", 10.303, 65.14, 6, "cpu-all", KT_PLACE, PREDICT),
    Anchor("llama.cpp, dual socket, pages interleaved", "ktransformers-xeon6454s-2s-4090d", "llama.cpp (2 x 32 cores)",
           4.51, 10.31, 8, "cpu-only:numa=interleave",
           f"everything on the CPU, pages spread over both nodes {LLAMA_NOTE}", PREDICT, False, "llama.cpp"),
    Anchor("llama.cpp, dual socket, pages on one node", "ktransformers-xeon6454s-2s-4090d", "llama.cpp (2 x 32 cores)",
           4.51, 10.31, 8, "cpu-only:numa=node",
           f"everything on the CPU, every page on one node {LLAMA_NOTE}", PREDICT, False, "llama.cpp"),
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


def q4_k_m_dense_bytes() -> list[int]:
    """Non-expert bytes of every MoE layer under the Q4_K_M recipe (router F32, shared down like the routed)."""
    from moesim.traces.models.catalog import load_model

    spec = load_model(MODEL)
    router = spec.n_routed_experts * HIDDEN
    shared_down = spec.n_shared_experts * HIDDEN * spec.shared_intermediate_size
    out = []
    for layer in range(FIRST_MOE_LAYER, N_LAYERS_TOTAL):
        rest = spec.dense_params_of_layer(layer) - router - shared_down
        down = Q6K if use_more_bits(layer, N_LAYERS_TOTAL) else Q4K
        out.append(int(rest * Q4K + router * F32 + shared_down * down))
    return out


def anchor_trace(decode_tokens: int = 64, prompt_tokens: int = 500, seed: int = 0, experts: int = 8) -> Trace:
    """A seeded synthetic DeepSeek-V3 trace with Q4_K_M expert and dense sizes (one request, top-`experts`)."""
    from moesim.traces.synth.synth_config import preset
    from moesim.traces.synth.synthetic import generate

    config = preset("qwen3").with_settings([f"model={MODEL}", f"prefill=fixed:{prompt_tokens}",
                                            f"decode=fixed:{decode_tokens}"]).resolved()
    # resolved() filled in the catalog's fp8 sizes; the GGUF's own sizes replace them (model=None keeps them)
    config = dataclasses.replace(config, model=None, object_bytes=tuple(q4_k_m_expert_bytes()), top_k=experts,
                                 n_requests=1, accesses=0, seed=seed)
    trace = generate(config)
    trace.meta.dense_bytes = q4_k_m_dense_bytes()
    trace.meta.provenance.update({"anchor": SOURCE, "model": MODEL,
                                  "quantisation": "Q4_K_M expert and dense sizes (llama.cpp recipe)"})
    return trace


def decode_seconds(anchor: Anchor, trace: Trace, profile: object) -> float:
    """Predicted mean seconds per decode token of `anchor` on `profile` (its placement and framework)."""
    from moesim.sim.timed_replay import TimedConfig, timed_replay

    config = TimedConfig(capacity_bytes=0, placement=anchor.placement, model=MODEL, bounds=False,
                         profile=anchor.profile, framework=anchor.framework)
    result = timed_replay(trace, profile, config)  # type: ignore[arg-type]
    return float(result.summary["tpot_s"]["mean"])


@dataclass(frozen=True)
class AnchorRow:
    anchor: Anchor
    datasheet_s: float  # seconds per token on the profile as shipped (datasheet ceilings, nothing fitted)
    predicted_s: float  # with the fitted figures
    fitted: bool  # this row was one the figures were fitted on


def run_anchors(decode_tokens: int = 32, fit_on: tuple[str, ...] | None = None) -> tuple[object, list[AnchorRow]]:
    """Fit the CPU figures on the FIT rows (or the rows named in `fit_on`), then time every row with them."""
    from moesim.hw_profiles.loader import load_profile
    from moesim.runs.anchor_fit import apply_figures, fit_figures

    traces = {k: anchor_trace(decode_tokens, experts=k) for k in sorted({a.experts for a in ANCHORS})}
    profiles = {a.profile: load_profile(a.profile) for a in ANCHORS}
    chosen = [a for a in ANCHORS if (a.name in fit_on if fit_on is not None else a.role == FIT)]

    def timer(anchor: Anchor):  # noqa: ANN202 - a profile -> seconds per decode token
        return lambda profile: decode_seconds(anchor, traces[anchor.experts], profile)

    source = "moesim/runs/anchors.py on " + "; ".join(a.name for a in chosen)
    fit = fit_figures([(a.name, profiles[a.profile], timer(a), 1.0 / a.decode_tok_s) for a in chosen], source)
    rows = []
    for a in ANCHORS:
        base = profiles[a.profile]
        fitted = apply_figures(base, fit.figures, source, overhead=a.engine_figures)
        rows.append(AnchorRow(a, timer(a)(base), timer(a)(fitted), a in chosen))
    return fit, rows
