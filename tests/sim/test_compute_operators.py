"""Compute by operator (moesim/sim/compute), against values derived by hand from the shapes.

The small model (built through the catalog's schema): hidden 64, 4 heads of 16 with 2 kv heads,
4 routed SwiGLU experts of 32 (top-2) and one shared expert of 48, vocab 100, 2 norms per layer,
untied embeddings, bf16. Per layer:
  attention q/k/v/o = 2 x 64 x 64 + 2 x 64 x 32 = 12288 params (24576 B); norms 2 x 64 = 128 (256 B)
  KV per position   = 2 B x (K + V) x 32 = 128 B;  FLOPs per (query, position) = 2 x 2 x 4 x 16 = 256
  router 4 x 64 = 256 params (512 B); shared 3 x 64 x 48 = 9216 params (18432 B)
  one expert 3 x 64 x 32 = 6144 params (12288 B in bf16), 12288 FLOPs per token
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.sim.compute import compute_model, expert_cell_times, expert_request_times, non_expert_cell_times
from moesim.sim.compute.kernel_table import table_from_report
from moesim.sim.compute.processors import Processor
from moesim.traces.models.catalog import model_from_mapping
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace
from tests.sim.timing_helpers import make_profile

TINY = {
    "name": "tiny", "family": "test", "source": "hand", "n_layers": 2, "moe_layers": "all", "hidden_size": 64,
    "vocab_size": 100, "tie_word_embeddings": False,
    "experts": {"routed": 4, "top_k": 2, "intermediate_size": 32, "shared": 1, "shared_intermediate_size": 48},
    "attention": {"kind": "gqa", "heads": 4, "kv_heads": 2, "head_dim": 16},
}
EXPERT_BYTES = 12288
US = 1e-6


def tiny_spec(**attention: object):
    doc = {**TINY, "attention": {**TINY["attention"], **attention}}
    return model_from_mapping(doc, "tiny")


def tiny_trace(positions: list[int], phase: int = DECODE, experts: list[int] = (0, 1), layers: int = 2):
    """One pass of len(positions) tokens of one sequence; every token routes to `experts` at every layer."""
    meta = TraceMeta(n_layers=layers, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES] * layers, model="tiny")
    cells = [(layer, [list(experts)] * len(positions)) for layer in range(layers)]
    return build_trace(meta, [{"phase": phase, "tokens": [(0, p) for p in positions], "cells": cells}])


def proc(bw: float = 1e9, flops: float = 1e12, overhead: float = 0.0, fp32: float | None = None) -> Processor:
    peak = {"bf16": flops}
    if fp32:
        peak["fp32"] = fp32
    return Processor("gpu", "gpu", "vram", peak, bw, overhead)


class _Profile:
    """A profile that declares its processors (the hardware graph's shape)."""

    def __init__(self, *procs: Processor, framework: str | None = None) -> None:
        self.processors = {p.name: p for p in procs}
        self.framework = framework
        self.name = "hand"


def test_decode_attention_router_shared_and_lm_head_by_hand() -> None:
    """Decode, one token at position 9: it reads 10 cached positions and writes 1.
    attention bytes = 24576 + 256 + 11 x 128 = 26240 -> 26.24 us at 1 GB/s (FLOPs 27136: 27 ns at 1 TFLOP/s)
    router 512 B -> 0.512 us; shared 18432 B -> 18.432 us; LM head 100 x 64 x 2 = 12800 B -> 12.8 us;
    embedding one row of 128 B -> 0.128 us; fused framework: one kernel (1 us) for attention only."""
    spec = tiny_spec()
    trace = tiny_trace([9])
    model = compute_model(trace, _Profile(proc(overhead=1 * US)), spec)
    ne = non_expert_cell_times(trace, model)
    ops = ne.by_operator
    assert ops["attention"].tolist() == pytest.approx([27.24 * US] * 2, rel=1e-12)
    assert ops["router"].tolist() == pytest.approx([0.512 * US] * 2, rel=1e-12)
    assert ops["shared"].tolist() == pytest.approx([18.432 * US] * 2, rel=1e-12)
    assert ops["embedding"].tolist() == pytest.approx([0.128 * US, 0.0], rel=1e-12)
    assert ops["lm_head"].tolist() == pytest.approx([0.0, 12.8 * US], rel=1e-12)
    assert ne.pre.tolist() == pytest.approx([(0.128 + 27.24 + 0.512) * US, (27.24 + 0.512) * US], rel=1e-12)
    assert ne.post.tolist() == pytest.approx([18.432 * US, (18.432 + 12.8) * US], rel=1e-12)


def test_prefill_attention_is_compute_bound_with_causal_pairs() -> None:
    """Prefill of 64 tokens at positions 0..63: pairs = 64 x 65 / 2 = 2080, read 64 positions + write 64.
    FLOPs = 2 x 12288 x 64 + 2080 x 256 = 1572864 + 532480 = 2105344 -> 2.105344 ms at 1 GFLOP/s;
    bytes = 24576 + 256 + 128 x 128 = 41216 -> 41.216 us at 1 GB/s: compute-bound."""
    trace = tiny_trace(list(range(64)), phase=PREFILL)
    model = compute_model(trace, _Profile(proc(flops=1e9)), tiny_spec())
    att = non_expert_cell_times(trace, model).by_operator["attention"]
    assert att.tolist() == pytest.approx([2105344 / 1e9] * 2, rel=1e-12)
    # the LM head runs for one logits row (one sequence), not 64: 2 x 6400 FLOPs = 12.8 us at 1 GFLOP/s
    assert non_expert_cell_times(trace, model).by_operator["lm_head"][-1] == pytest.approx(12.8 * US, rel=1e-12)


def test_kv_read_time_grows_linearly_with_context_length() -> None:
    """Memory-bound decode: each extra cached position adds 128 B / 1 GB/s = 0.128 us per layer."""
    model_times = []
    for pos in (99, 199, 299, 399):
        trace = tiny_trace([pos])
        model = compute_model(trace, _Profile(proc()), tiny_spec())
        model_times.append(non_expert_cell_times(trace, model).by_operator["attention"][0])
    steps = np.diff(model_times)
    assert steps.tolist() == pytest.approx([100 * 128 / 1e9] * 3, rel=1e-9)


def test_sliding_window_caps_the_kv_read() -> None:
    """With a 64-token window, position 999 reads 64 positions, as position 63 does."""
    spec = tiny_spec(sliding_window=64, sliding_layers="all")
    far, near = (non_expert_cell_times(t, compute_model(t, _Profile(proc()), spec)).by_operator["attention"][0]
                 for t in (tiny_trace([999]), tiny_trace([63])))
    assert far == pytest.approx(near, rel=1e-12)


def test_batched_decode_reads_each_sequence_cache_once() -> None:
    """Two sequences at positions 9 and 19 in one pass: reads 10 + 20 = 30 positions, writes 2."""
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES], model="tiny")
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 9), (1, 19)], "cells": [(0, [[0, 1], [0, 1]])]}])
    spec = model_from_mapping({**TINY, "n_layers": 1}, "tiny")
    att = non_expert_cell_times(trace, compute_model(trace, _Profile(proc()), spec)).by_operator["attention"][0]
    assert att == pytest.approx((24576 + 256 + 32 * 128) / 1e9, rel=1e-12)


def test_expert_request_and_grouped_times_with_q8_dequantisation() -> None:
    """An expert in q8_0 (8.5 bits per weight): 6144 params -> 6528 B. Compute-bound processor
    (bw 1 TB/s, 1 GFLOP/s bf16, 0.5 GFLOP/s fp32): 3 tokens -> 3 x 12288 / 1e9 = 36.864 us of matmul
    + 6144 x 2 dequant ops / 0.5e9 = 24.576 us; a request = 61.44 us + 5 eager kernels x 2 us.
    Grouped (two requests in one cell, 3 and 1 tokens): (36.864 + 12.288) + 2 x 24.576 = 98.304 us + 4 x 2 us."""
    spec = tiny_spec()
    trace = tiny_trace([0])
    p = proc(bw=1e12, flops=1e9, overhead=2 * US, fp32=0.5e9)
    model = compute_model(trace, _Profile(p, framework="eager"), spec, expert_formats=("q8_0", "q8_0"))
    layer = np.array([0, 0])
    nbytes = np.array([6528, 6528])
    tokens = np.array([3, 1])
    per = expert_request_times(model, layer, nbytes, tokens, "gpu")
    assert per[0] == pytest.approx((36.864 + 24.576 + 10) * US, rel=1e-12)
    cell = expert_cell_times(model, np.array([0, 0]), layer, nbytes, tokens, 1, "gpu")
    assert cell[0] == pytest.approx((98.304 + 8) * US, rel=1e-12)
    bf16 = compute_model(trace, _Profile(p, framework="eager"), spec, expert_formats=("bf16", "bf16"))
    assert expert_request_times(bf16, layer, nbytes, tokens, "gpu")[0] == pytest.approx((36.864 + 10) * US, rel=1e-12)


def test_cuda_graphs_remove_launch_overhead_and_llama_cpp_adds_barriers() -> None:
    trace = tiny_trace([9])
    spec = tiny_spec()
    base = non_expert_cell_times(trace, compute_model(trace, _Profile(proc(overhead=0.0)), spec)).total
    graphs = non_expert_cell_times(trace, compute_model(trace, _Profile(proc(overhead=5 * US), framework="cuda-graphs"),
                                                        spec)).total
    assert graphs.tolist() == pytest.approx(base.tolist(), rel=1e-12)
    ggml = non_expert_cell_times(trace, compute_model(trace, _Profile(proc(overhead=5 * US), framework="llama.cpp"),
                                                      spec)).total
    # llama.cpp nodes per layer: attention 16, router 6, shared 5; embedding 1 (first), LM head 3 (last)
    assert (ggml - base).tolist() == pytest.approx([(16 + 6 + 5 + 1) * 5 * US, (16 + 6 + 5 + 3) * 5 * US], rel=1e-9)
    with pytest.raises(UserError, match="unknown framework"):
        compute_model(trace, _Profile(proc()), spec, framework="tensorflow")


def test_measured_kernel_table_replaces_the_roofline_for_its_shape() -> None:
    """A calibration report for 64 x 32 experts: 2 active experts x 2 tokens each measured at 7 us."""
    report = {"expert_kernel": {"shapes": {"hidden": 64, "inter": 32, "dtype": "bf16"}, "points": [
        {"tokens_per_expert": t, "active_experts": a, "median": s}
        for (a, t, s) in [(1, 1, 3e-6), (1, 4, 4e-6), (2, 1, 5e-6), (2, 4, 9e-6)]]}}
    table = table_from_report(report, "report.json")
    trace = tiny_trace([0])
    model = compute_model(trace, _Profile(proc(overhead=1 * US)), tiny_spec(), kernel_table=table)
    cell = expert_cell_times(model, np.array([0, 0]), np.array([0, 0]), np.array([EXPERT_BYTES] * 2),
                             np.array([2, 2]), 1, "gpu")
    # log2-linear in tokens between 1 and 4 at 2 active: 5 + (9 - 5) x 0.5 = 7 us, + one fused launch
    assert cell[0] == pytest.approx(8 * US, rel=1e-12)
    other = compute_model(trace, _Profile(proc()), model_from_mapping({**TINY, "hidden_size": 128}, "t"),
                          kernel_table=table)
    assert other.table is None  # measured for another shape: the roofline stands


def test_dense_layers_without_trace_cells_are_charged_to_the_next_traced_cell() -> None:
    """DeepSeek-style: model layer 0 dense (FFN 96), layers 1-2 MoE; the trace holds the MoE layers only.
    Layer 0 = attention 26.24 us (position 9, as above) + dense FFN 3 x 64 x 96 x 2 B = 36864 B -> 36.864 us,
    charged before trace layer 0's experts."""
    doc = {**TINY, "n_layers": 3, "moe_layers": [1, 2], "dense_ffn": {"intermediate_size": 96}}
    spec = model_from_mapping(doc, "tiny3")
    trace = tiny_trace([9])
    ne = non_expert_cell_times(trace, compute_model(trace, _Profile(proc()), spec))
    assert ne.by_operator["untraced_layers"].tolist() == pytest.approx([(26.24 + 36.864) * US, 0.0], rel=1e-12)


def test_legacy_profile_becomes_gpu_and_cpu_processors() -> None:
    profile = make_profile(peak_flops=2e12, memory_bandwidth=3e9, launch=4e-6, cpu_flops=5e10, cpu_bw=6e9)
    model = compute_model(tiny_trace([0]), profile, None)
    assert model.device.peak_flops["bf16"] == 2e12 and model.device.memory_bandwidth == 3e9
    assert model.device.kernel_overhead == 4e-6
    cpu = model.processor("cpu")
    assert (cpu.peak_flops["fp32"], cpu.memory_bandwidth) == (5e10, 6e9)
    with pytest.raises(UserError, match="cpu_flops"):
        compute_model(tiny_trace([0]), make_profile(), None).processor("cpu")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(1, 64), st.integers(1_000, 50_000)), min_size=1, max_size=8),
       st.sampled_from(["bf16", "q4_K", "q8_0", "mxfp4"]))
def test_grouped_cell_lies_between_its_longest_request_and_their_sum(rows, fmt) -> None:
    """max(sum bytes, sum compute) is at least each request's max(bytes, compute) and at most their sum."""
    trace = tiny_trace([0])
    p = proc(bw=1e9, flops=1e10, fp32=5e9)
    model = compute_model(trace, _Profile(p), tiny_spec(), expert_formats=(fmt, fmt))
    layer = np.array([r[0] for r in rows])
    tokens = np.array([r[1] for r in rows])
    nbytes = np.array([r[2] for r in rows])
    per = expert_request_times(model, layer, nbytes, tokens, "gpu")
    cell = expert_cell_times(model, np.zeros(len(rows), dtype=np.int64), layer, nbytes, tokens, 1, "gpu")[0]
    assert per.max() * (1 - 1e-12) <= cell <= per.sum() * (1 + 1e-12)


def test_dequantisation_is_folded_in_where_the_matmul_runs_at_the_fp32_rate() -> None:
    """A CPU with only an fp32 figure (llama.cpp's integer dot products; a fitted effective rate): the
    q8_0 expert of the dequantisation test costs its matmul only, 3 x 12288 / 1 GFLOP/s = 36.864 us."""
    cpu = Processor("cpu", "cpu", "dram", {"fp32": 1e9}, 1e12, 0.0)
    trace = tiny_trace([0])
    model = compute_model(trace, _Profile(cpu), tiny_spec(), expert_formats=("q8_0", "q8_0"))
    t = expert_request_times(model, np.array([0]), np.array([6528]), np.array([3]), "cpu")
    assert t[0] == pytest.approx(36.864 * US, rel=1e-12)
    # profiles spell eager PyTorch "pytorch-eager": 5 kernels per expert at 2 us
    eager = compute_model(trace, _Profile(cpu, framework="pytorch-eager"), tiny_spec(), expert_formats=("q8_0", "q8_0"))
    assert eager.framework == "eager"
    t2 = expert_request_times(eager, np.array([0]), np.array([6528]), np.array([3]), "cpu")
    assert t2[0] == pytest.approx(36.864 * US, rel=1e-12)  # kernel_overhead 0 on this cpu
