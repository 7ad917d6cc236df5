"""Processors, frameworks, storage formats and the compute model without a model spec, by hand.

moesim/sim/compute/processors.py (which peak a matmul runs at, where dequantisation is charged,
kernel counts per framework, which processor runs experts), formats.py (bits per weight from the
block layouts in its docstring) and the legacy path of moesim/sim/compute/__init__.py (a trace
without a model spec: params = object bytes / weight width, 2 FLOPs per weight and token).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.sim.compute import compute_model, expert_cell_times, expert_request_times, non_expert_cell_times
from moesim.sim.compute import formats
from moesim.sim.compute.kernel_table import table_from_report
from moesim.sim.compute.processors import (Processor, cpu_processor, dequant_rate, device_processor, framework_of,
                                           kernels, matrix_key, peak, processors_of)
from moesim.traces.format.trace_meta import DECODE, TraceMeta
from moesim.traces.format.build import build_trace
from tests.sim.test_compute_operators import EXPERT_BYTES, US, _Profile, proc, tiny_spec, tiny_trace


def p(name: str, kind: str, peaks: dict[str, float] | None = None) -> Processor:
    return Processor(name, kind, "vram" if kind != "cpu" else "dram", peaks or {"bf16": 1.0}, 1.0, 0.0)


# --- formats -----------------------------------------------------------------------------------------

def test_bits_per_weight_are_the_block_layouts() -> None:
    """q4_0: 18 B per 32 weights = 0.5625 B; q8_0: 34 / 32 = 1.0625; q6_K: 210 / 256 = 0.8203125;
    mxfp4: 17 / 32 = 0.53125; bf16 2; fp32 4."""
    got = [formats.bytes_per_weight(f) for f in ("q4_0", "q8_0", "q6_K", "mxfp4", "bf16", "fp32")]
    assert got == [18 / 32, 34 / 32, 210 / 256, 17 / 32, 2.0, 4.0]
    # a file type is its main tensor type, whatever the case
    assert [formats.canonical(f) for f in ("Q4_K_M", "q5_k_s", "Q8_0", "q6_K", "GGUF-X")] == \
        ["q4_K", "q5_K", "q8_0", "q6_K", "GGUF-X"]  # unknown names pass unchanged
    assert formats.bytes_per_weight("Q4_K_M") == 144 / 256
    assert formats.known("Q6_K") and not formats.known("gguf-x")


def test_dequant_ops_and_the_dtype_the_matmul_runs_in() -> None:
    assert [formats.dequant_ops(f) for f in ("bf16", "fp8", "q8_0", "q4_0", "q4_K", "mxfp4", "Q6_K")] == \
        [0.0, 1.0, 2.0, 4.0, 5.0, 3.0, 6.0]
    assert [formats.compute_dtype(f) for f in ("q8_0", "fp8", "fp32", "q4_K", "bf16", "weird")] == \
        ["int8", "fp8", "fp32", "bf16", "bf16", "bf16"]


def test_nearest_format_breaks_ties_by_name() -> None:
    # 16 bits: bf16 and fp16 tie, "bf16" sorts first; 8: fp8 and int8 tie; 4.5: q4_0 and q4_K tie
    assert [formats.nearest_format(b) for b in (16.0, 8.0, 4.5, 4.3, 31.0, 0.1)] == \
        ["bf16", "fp8", "q4_0", "mxfp4", "fp32", "q2_K"]


# --- processors --------------------------------------------------------------------------------------

def test_matrix_key_falls_back_from_the_dtype_to_bf16_fp16_fp32_then_the_best() -> None:
    assert matrix_key(p("g", "gpu", {"fp8": 4.0, "bf16": 2.0}), "fp8") == "fp8"
    assert matrix_key(p("g", "gpu", {"fp8": 4.0, "bf16": 2.0}), "int8") == "bf16"
    assert matrix_key(p("g", "gpu", {"fp16": 3.0, "fp32": 1.0}), "int8") == "fp16"
    assert matrix_key(p("c", "cpu", {"fp32": 1.0}), "bf16") == "fp32"
    assert matrix_key(p("c", "cpu", {"fp32": 1.0, "int4": 9.0}), "bf16") == "fp32"  # fp32 before the best
    assert matrix_key(p("n", "npu", {"int8": 5.0, "int4": 9.0}), "bf16") == "int4"
    assert peak(p("n", "npu", {"int8": 5.0, "int4": 9.0}), "int8") == 5.0
    with pytest.raises(UserError) as info:
        matrix_key(Processor("npu0", "npu", "vram", {}, 1.0, 0.0), "bf16")
    assert str(info.value) == "profile: processor npu0 has no peak_flops"


def test_dequantisation_runs_at_the_fp32_rate_only_beside_another_matmul_rate() -> None:
    assert dequant_rate(p("g", "gpu", {"bf16": 8.0, "fp32": 2.0}), "bf16") == 2.0
    assert dequant_rate(p("g", "gpu", {"bf16": 8.0}), "bf16") is None  # no elementwise figure
    assert dequant_rate(p("c", "cpu", {"fp32": 2.0}), "bf16") is None  # the matmul runs at fp32
    assert dequant_rate(p("g", "gpu", {"bf16": 8.0, "fp32": 2.0}), "fp32") is None  # an fp32 matmul


def test_frameworks_kernel_counts_and_aliases() -> None:
    assert kernels("eager", "attention") == 9 and kernels("llama.cpp", "experts_grouped") == 9
    assert framework_of(SimpleNamespace(framework=None)) == "fused"
    assert framework_of(SimpleNamespace(framework="PyTorch-Eager")) == "eager"
    assert framework_of(SimpleNamespace(framework="vllm")) == "cuda-graphs"
    assert framework_of(SimpleNamespace(framework="vllm"), "GGML") == "llama.cpp"
    assert framework_of(SimpleNamespace()) == "fused"
    with pytest.raises(UserError) as info:
        framework_of(SimpleNamespace(framework="tf"))
    assert str(info.value) == "framework: unknown framework 'tf'; known: fused, eager, cuda-graphs, llama.cpp"


def test_which_processor_runs_the_experts() -> None:
    cpu, gpu, npu = p("cpu", "cpu"), p("gpu", "gpu"), p("npu", "npu")
    other = p("acc0", "fpga")

    def prof(*procs: Processor, chosen: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(processors={q.name: q for q in procs}, expert_processor=chosen)

    assert device_processor(prof(cpu, gpu, chosen="cpu")) is cpu
    assert device_processor(prof(cpu, npu, gpu)) is gpu
    assert device_processor(prof(cpu, npu)) is npu
    assert device_processor(prof(cpu, other)) is other
    assert device_processor(prof(cpu, other, npu)) is npu  # an npu by name before any other device
    assert device_processor(prof(cpu)) is cpu
    assert cpu_processor(prof(gpu, cpu), "x") is cpu
    with pytest.raises(UserError) as info:
        cpu_processor(prof(gpu), "profile h")
    assert str(info.value) == ("profile h: running experts on the CPU needs a cpu processor (compute.cpu_flops and "
                               "compute.cpu_memory_bandwidth, or processors.cpu)")


def test_a_profile_without_processors_is_read_from_its_compute_section() -> None:
    compute = SimpleNamespace(peak_flops=2e12, memory_bandwidth=3e9, launch_overhead=4e-6, cpu_flops=5e10,
                              cpu_memory_bandwidth=6e9)
    power = SimpleNamespace(active_watts=300.0, idle_watts=50.0)
    procs = processors_of(SimpleNamespace(compute=compute, power=power))  # no processors attribute at all
    gpu, cpu = procs["gpu"], procs["cpu"]
    assert (gpu.name, cpu.name) == ("gpu", "cpu")
    assert (gpu.kind, gpu.memory, gpu.peak_flops, gpu.memory_bandwidth, gpu.kernel_overhead) == \
        ("gpu", "vram", {"bf16": 2e12, "fp16": 2e12}, 3e9, 4e-6)
    assert (gpu.active_watts, gpu.idle_watts) == (300.0, 50.0)
    assert (cpu.kind, cpu.memory, cpu.peak_flops, cpu.memory_bandwidth, cpu.kernel_overhead) == \
        ("cpu", "dram", {"fp32": 5e10, "bf16": 5e10}, 6e9, 0.0)
    unpowered = processors_of(SimpleNamespace(processors={}, compute=compute, power=SimpleNamespace()))
    assert (unpowered["gpu"].active_watts, unpowered["gpu"].idle_watts) == (None, None)
    for flops, bw in ((None, 6e9), (5e10, None)):  # a CPU needs both figures
        half = SimpleNamespace(**{**vars(compute), "cpu_flops": flops, "cpu_memory_bandwidth": bw})
        assert list(processors_of(SimpleNamespace(processors=None, compute=half, power=power))) == ["gpu"]


# --- experts -----------------------------------------------------------------------------------------

def test_ungrouped_experts_cost_one_call_each_and_idle_rows_nothing() -> None:
    """bf16 tiny experts (12288 B, 12288 FLOPs per token) at 1 GB/s and 1 GFLOP/s, 2 us per kernel, eager
    (5 kernels an expert): 1 token -> max(12.288, 12.288) + 10 = 22.288 us; 3 tokens -> 36.864 + 10 =
    46.864 us; 0 tokens (run elsewhere) -> 0. Ungrouped cell = the sum, 69.152 us; grouped: max(24.576,
    49.152) + 4 kernels x 2 = 57.152 us."""
    trace = tiny_trace([0])
    model = compute_model(trace, _Profile(proc(bw=1e9, flops=1e9, overhead=2 * US), framework="eager"), tiny_spec())
    layer, nbytes, tokens = np.array([0, 0, 1]), np.array([EXPERT_BYTES] * 3), np.array([1, 3, 0])
    assert expert_request_times(model, layer, nbytes, tokens).tolist() == \
        pytest.approx([22.288 * US, 46.864 * US, 0.0], rel=1e-12)
    cells = np.array([0, 0, 1])
    assert expert_cell_times(model, cells, layer, nbytes, tokens, 3, grouped=False).tolist() == \
        pytest.approx([69.152 * US, 0.0, 0.0], rel=1e-12)
    assert expert_cell_times(model, cells, layer, nbytes, tokens, 2).tolist() == \
        pytest.approx([57.152 * US, 0.0], rel=1e-12)
    # an unknown storage format is charged no dequantisation (the bf16 figures)
    odd = compute_model(trace, _Profile(proc(bw=1e9, flops=1e9, overhead=2 * US, fp32=1e8), framework="eager"),
                        tiny_spec(), expert_formats=("gguf-x", "gguf-x"))
    assert expert_request_times(odd, layer, nbytes, tokens).tolist() == \
        pytest.approx([22.288 * US, 46.864 * US, 0.0], rel=1e-12)


def _table():
    report = {"expert_kernel": {"shapes": {"hidden": 64, "inter": 32}, "points": [
        {"tokens_per_expert": t, "active_experts": a, "median": s}
        for (a, t, s) in [(1, 1, 3e-6), (1, 4, 4e-6), (2, 1, 5e-6), (2, 4, 9e-6)]]}}
    return report, table_from_report(report, "report.json")


def test_a_measured_table_times_single_experts_on_the_device_only(tmp_path) -> None:
    """One expert alone is the table's 1-active row: 2 tokens -> 3 + (4 - 3) x 0.5 = 3.5 us, + 1 fused
    launch (1 us); 0 tokens -> 0. On the CPU the roofline stands: 2 x 12288 / 1 GFLOP/s = 24.576 us."""
    report, table = _table()
    cpu = Processor("cpu", "cpu", "dram", {"fp32": 1e9}, 1e12, 0.0)
    trace = tiny_trace([0])
    model = compute_model(trace, _Profile(proc(overhead=1 * US), cpu), tiny_spec(), kernel_table=table)
    layer, nbytes, tokens = np.array([0, 0]), np.array([EXPERT_BYTES] * 2), np.array([2, 0])
    assert expert_request_times(model, layer, nbytes, tokens, "gpu").tolist() == \
        pytest.approx([4.5 * US, 0.0], rel=1e-12)
    assert expert_request_times(model, layer, nbytes, tokens, "cpu").tolist() == \
        pytest.approx([24.576 * US, 0.0], rel=1e-12)
    assert expert_cell_times(model, np.array([0, 0]), layer, nbytes, tokens, 1, "cpu").tolist() == \
        pytest.approx([24.576 * US], rel=1e-12)
    # one call per expert on the device: each one the table's 1-active time; cells 1 and 2 run nothing
    cells = np.array([0, 0, 1])
    three = (np.array([0, 0, 0]), np.array([EXPERT_BYTES] * 3), np.array([2, 4, 0]))
    assert expert_cell_times(model, cells, *three, 3, grouped=False).tolist() == \
        pytest.approx([(3.5 + 1) * US + (4 + 1) * US, 0.0, 0.0], rel=1e-12)
    # grouped: 2 active experts with 3 tokens each on average -> log2 3 of log2 4 between 5 and 9 us
    grouped = 5 + 4 * np.log2(3) / 2
    assert expert_cell_times(model, cells, *three, 3).tolist() == pytest.approx([(grouped + 1) * US, 0.0, 0.0],
                                                                               rel=1e-12)
    # the same table from a report file, or declared by the profile (alone or in a list)
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(report))
    for source in (str(path), None):
        profile = _Profile(proc(overhead=1 * US))
        profile.kernel_tables = [object(), table]
        m = compute_model(trace, profile, tiny_spec(), kernel_table=source)
        assert expert_request_times(m, layer, nbytes, tokens).tolist() == pytest.approx([4.5 * US, 0.0], rel=1e-12)
    profile = _Profile(proc(overhead=1 * US))
    profile.kernel_tables = table
    assert compute_model(trace, profile, tiny_spec()).table is table
    profile.kernel_tables = [object()]
    assert compute_model(trace, profile, tiny_spec()).table is None


# --- the compute model without a model spec ----------------------------------------------------------

def _legacy_trace(weight_dtype: str | None, dense: list[int] | None = None, tokens: int = 1):
    extra = {"weight_dtype": weight_dtype} if weight_dtype else {}
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=1, object_bytes=[EXPERT_BYTES], dense_bytes=dense, extra=extra)
    return build_trace(meta, [{"phase": DECODE, "tokens": [(r, 9) for r in range(tokens)],
                               "cells": [(0, [[0]] * tokens)]}])


@pytest.mark.parametrize("dtype, width, source", [
    (None, 2, "trace object bytes (bf16 assumed)"), ("fp32", 4, "trace object bytes (fp32 from the trace)"),
    ("fp16", 2, "trace object bytes (fp16 from the trace)"), ("int8", 2, "trace object bytes (bf16 from the trace)")])
def test_without_a_spec_experts_and_dense_layers_follow_the_trace_bytes(dtype, width, source) -> None:
    """12288 B experts of `width` B per weight: 12288 / width weights, 2 FLOPs each per token; at
    1 GFLOP/s and 1 PB/s, 3 tokens cost 6 x 12288 / width ns. Dense 4000 B per layer at width 2 B is
    2000 params: 2 x 2000 x 3 tokens = 12000 FLOPs -> 12 us (fp32: 1000 params, 6 us); 5 us per launch."""
    trace = _legacy_trace(dtype, dense=[4000], tokens=3)
    model = compute_model(trace, _Profile(proc(bw=1e15, flops=1e9, overhead=5 * US)), None)
    assert model.source == source
    params = EXPERT_BYTES // width
    assert model.hidden_size == int(np.sqrt(params / 3)) and model.activation_bytes_per_token() == 2 * model.hidden_size
    t = expert_request_times(model, np.array([0]), np.array([EXPERT_BYTES]), np.array([3]))
    assert t.tolist() == pytest.approx([6 * params / 1e9 + 5 * US], rel=1e-12)
    ne = non_expert_cell_times(trace, model)
    dense_s = 2 * (4000 / width) * 3 / 1e9
    assert ne.pre.tolist() == pytest.approx([dense_s + 5 * US], rel=1e-12)
    assert ne.post.tolist() == [0.0] and ne.by_operator["dense"].tolist() == pytest.approx([dense_s + 5 * US])


@pytest.mark.parametrize("object_bytes, params", [(12289, 6144), (3, 1), (1, 1)])
def test_without_a_spec_an_expert_has_whole_weights_and_at_least_one(object_bytes: int, params: int) -> None:
    """bf16 assumed: 12289 B hold 6144 whole weights (the odd byte is no weight); 3 B one; 1 B still one.
    2 FLOPs per weight and token: one token at 1 GFLOP/s (1 PB/s) takes 2 x params ns."""
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=1, object_bytes=[object_bytes])
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 0)], "cells": [(0, [[0]])]}])
    model = compute_model(trace, _Profile(proc(bw=1e15, flops=1e9)), None)
    t = expert_request_times(model, np.array([0]), np.array([object_bytes]), np.array([1]))
    assert t.tolist() == pytest.approx([2 * params / 1e9], rel=1e-12)


def test_without_a_spec_or_dense_bytes_a_layer_costs_its_launch_only() -> None:
    trace = _legacy_trace(None, dense=None)
    model = compute_model(trace, _Profile(proc(overhead=5 * US)), None)
    assert model.dense_bytes == (0,)
    assert non_expert_cell_times(trace, model).pre.tolist() == pytest.approx([5 * US], rel=1e-12)


def test_with_a_spec_dense_bytes_come_from_the_trace_else_the_spec() -> None:
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES] * 2, dense_bytes=[7, 9])
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 0)], "cells": [(0, [[0, 1]]), (1, [[0, 1]])]}])
    assert compute_model(trace, _Profile(proc()), tiny_spec()).dense_bytes == (7, 9)
    model = compute_model(tiny_trace([0]), _Profile(proc()), tiny_spec())
    assert model.dense_bytes == (43776, 43776)  # 21888 dense params a layer x 2 B
    assert model.source == "model spec tiny"
    assert compute_model(tiny_trace([0]), _Profile(proc()), tiny_spec(), source="mine").source == "mine"
    assert model.hidden_size == 64 and model.activation_bytes_per_token() == 128
    assert model.spec is not None and model.spec.name == "tiny" and model.profile_name == "hand"
    # a profile object without a name: the model records an empty one
    nameless = SimpleNamespace(processors={"gpu": proc()})
    assert compute_model(tiny_trace([0]), nameless, tiny_spec()).profile_name == ""


def test_processor_names_and_the_missing_ones() -> None:
    cpu = Processor("cpu", "cpu", "dram", {"fp32": 1e9}, 1e12, 0.0)
    npu = Processor("npu", "npu", "vram", {"int8": 1e9}, 1e12, 0.0)
    model = compute_model(tiny_trace([0]), _Profile(proc(), cpu, npu), tiny_spec())
    assert model.processor("gpu") is model.device and model.processor("device") is model.device
    assert model.processor("cpu") == cpu and model.processor("npu") is npu
    with pytest.raises(UserError) as info:
        model.processor("tpu")
    assert str(info.value) == "processor: the profile has no processor 'tpu'; it has gpu, cpu, npu"
    bare = compute_model(tiny_trace([0]), _Profile(proc()), tiny_spec())
    with pytest.raises(UserError, match="^profile hand: running experts on the CPU"):
        bare.processor("cpu")


def test_experts_run_at_the_peak_of_their_storage_format_and_dequantise_at_fp32() -> None:
    """3 tokens of a tiny expert (36864 FLOPs; 6144 weights), memory 1 TB/s (bytes negligible):
    q8_0 on a CPU with int8 4 GFLOP/s and fp32 1 GFLOP/s: 36864 / 4e9 = 9.216 us of int8 matmul
    + 6144 x 2 dequant ops / 1e9 = 12.288 us -> 21.504 us.
    fp8 on a GPU with bf16 1, fp8 2 and fp32 0.5 GFLOP/s: 36864 / 2e9 = 18.432 us + 6144 x 1 / 0.5e9
    = 12.288 us -> 30.72 us."""
    trace = tiny_trace([0])
    cpu = Processor("cpu", "cpu", "dram", {"int8": 4e9, "fp32": 1e9}, 1e12, 0.0)
    q8 = compute_model(trace, _Profile(cpu), tiny_spec(), expert_formats=("q8_0", "q8_0"))
    assert expert_request_times(q8, np.array([0]), np.array([6528]), np.array([3]), "cpu").tolist() == \
        pytest.approx([21.504 * US], rel=1e-12)
    gpu = Processor("gpu", "gpu", "vram", {"bf16": 1e9, "fp8": 2e9, "fp32": 0.5e9}, 1e12, 0.0)
    fp8 = compute_model(trace, _Profile(gpu), tiny_spec(), expert_formats=("fp8", "fp8"))
    assert expert_request_times(fp8, np.array([0]), np.array([6144]), np.array([3])).tolist() == \
        pytest.approx([30.72 * US], rel=1e-12)


def test_cuda_graphs_experts_cost_their_roofline_only() -> None:
    """Replayed graphs: no per-kernel host time, so 3 bf16 tokens at 1 GFLOP/s are 36.864 us, one
    call per expert or grouped, however large the processor's kernel overhead."""
    trace = tiny_trace([0])
    model = compute_model(trace, _Profile(proc(bw=1e12, flops=1e9, overhead=50 * US), framework="vllm"), tiny_spec())
    args = (np.array([0]), np.array([EXPERT_BYTES]), np.array([3]))
    assert expert_request_times(model, *args).tolist() == pytest.approx([36.864 * US], rel=1e-12)
    assert expert_cell_times(model, np.array([0]), *args, 1).tolist() == pytest.approx([36.864 * US], rel=1e-12)


def test_a_measured_table_times_a_cell_with_one_active_expert() -> None:
    """Cell 1 runs one expert with 2 tokens (the table's 1-active row: 3.5 us, + 1 us launch); cells 0
    and 2 run none."""
    _, table = _table()
    model = compute_model(tiny_trace([0]), _Profile(proc(overhead=1 * US)), tiny_spec(), kernel_table=table)
    got = expert_cell_times(model, np.array([1]), np.array([0]), np.array([EXPERT_BYTES]), np.array([2]), 3)
    assert got.tolist() == pytest.approx([0.0, 4.5 * US, 0.0], rel=1e-12)
