"""Compute by operator through timed replay, CPU execution and placements, timed by hand.

Shapes for the catalog case are Qwen3-30B-A3B's published config.json
(https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json): hidden 2048, 32 heads and 4 kv
heads of 128, 128 experts of 768 (top-8), vocab 151936, untied, per-head q/k RMSNorm, bf16.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.hw_profiles.loader import load_profile
from moesim.policies.base import PolicyContext
from moesim.policies.placement import CpuLayers, parse_placement
from moesim.sim.compute import processors_of
from moesim.sim.plan import PLACED
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace

from timing_helpers import MB, US, hand_profile, hand_trace, make_profile

QWEN_EXPERT_BYTES = 3 * 2048 * 768 * 2  # 9,437,184 B in bf16


def qwen_two_passes() -> object:
    """Prefill of one token at position 0, then one decode token at position 1; experts 0-7 everywhere."""
    meta = TraceMeta(n_layers=48, n_experts=128, top_k=8, object_bytes=[QWEN_EXPERT_BYTES] * 48, model="qwen3-30b-a3b")
    cells = [(layer, [list(range(8))]) for layer in range(48)]
    return build_trace(meta, [{"phase": PREFILL, "tokens": [(0, 0)], "cells": cells},
                              {"phase": DECODE, "tokens": [(0, 1)], "cells": cells}])


def test_qwen3_decode_step_by_hand_through_timed_replay() -> None:
    """HBM 1 TB/s, 1 PFLOP/s, no launch cost; the decode pass hits all its experts (the prefill fetched them).

    Per layer (bytes bound; FLOPs are ~1000x smaller at 1 PFLOP/s):
      attention: q,k,v,o = 2 x 2048 x 4096 + 2 x 2048 x 512 = 18,874,368 params = 37,748,736 B
                 norms 2 x 2048 + q/k norms 2 x 128 = 4352 params = 8704 B
                 KV: 2 B x (K + V) x 4 x 128 = 2048 B per position; position 1 reads 2 and writes 1: 6144 B
                 = 37,763,584 B -> 37.763584 us
      router:    128 x 2048 x 2 B = 524,288 B -> 0.524288 us
      experts:   8 x 9,437,184 B = 75,497,472 B -> 75.497472 us
    Per pass: embedding 2048 x 2 B = 4096 B -> 0.004096 us; LM head 151936 x 2048 x 2 B = 622,329,856 B
    -> 622.329856 us. TPOT = 48 x 113.785344 + 0.004096 + 622.329856 = 6084.030464 us.
    """
    profile = make_profile(peak_flops=1e15, memory_bandwidth=1e12, launch=0.0)
    result = timed_replay(qwen_two_passes(), profile, TimedConfig(capacity_bytes=4 * 10**9))
    assert result.summary["tpot_s"]["mean"] == pytest.approx(6084.030464 * US, rel=1e-9)
    decode = result.cells[result.cells["pass"] == 1]
    assert decode["expert_s"].tolist() == pytest.approx([75.497472 * US] * 48, rel=1e-12)
    assert decode["stall_s"].tolist() == [0.0] * 48
    dense = [37.763584 + 0.524288] * 48
    dense[0] += 0.004096
    dense[-1] += 622.329856
    assert decode["dense_s"].tolist() == pytest.approx([d * US for d in dense], rel=1e-12)


def test_placement_first_layer_on_the_cpu_by_hand() -> None:
    """cpu-layers:1 on the hand trace (cells [0, 1], [4, 5], [0, 2], [5, 7]; 1 MB experts; capacity 3 MB).

    Layer 0's experts stay in host DRAM and run on the CPU (10 GB/s, 1 TFLOP/s): 2 MB / 10 GB/s =
    200 us, above 2 x 2 x 0.5 M FLOPs / 1 TFLOP/s = 2 us; activations (816 B) cross d2h and h2d at
    10 us + 0.816 us each: 221.632 us per layer-0 cell, during which the GPU runs nothing.
    Layer 1 goes through the cache: cell [4, 5] two compulsory misses, 2 x 1010 us of copies; cell
    [5, 7]: 5 hits, 7 misses (1010 us). Dense 7 us per cell, device experts 5 us + 1 us each.
    Total = 2 x (7 + 221.632) + (7 + 2020 + 7) + (7 + 1010 + 7) = 3515.264 us.
    """
    profile = hand_profile(cpu_flops=1e12, cpu_bw=1e10)
    result = timed_replay(hand_trace(), profile, TimedConfig(capacity_bytes=3 * MB, placement="cpu-layers:1"))
    cells = result.cells
    cpu_path = 200 + 2 * (10 + 0.816)
    assert cells["cpu_s"].tolist() == pytest.approx([cpu_path * US, 0, cpu_path * US, 0], abs=1e-12)
    assert cells["expert_s"].tolist() == pytest.approx([0, 7 * US, 0, 7 * US], abs=1e-12)
    assert cells["stall_s"].tolist() == pytest.approx([0, 2020 * US, 0, 1010 * US], abs=1e-12)
    assert result.summary["time"]["total_s"] == pytest.approx(3515.264 * US, rel=1e-12)
    assert result.plan.copy_obj.tolist() == [4, 5, 7]  # layer 0 is never copied
    assert result.plan.outcomes.tolist() == [PLACED, PLACED, 2, 2, PLACED, PLACED, 0, 2]
    assert result.summary["misses"] == 3
    assert result.summary["bounds"]["valid"] is False
    from moesim.sim.cli_timing import timed_table

    row = timed_table([result.summary]).iloc[0]  # the compare table claims no distance to a bound that does not hold
    assert row["tpot_over_bound"] is None or np.isnan(row["tpot_over_bound"])


def test_cpu_time_is_the_larger_of_bytes_over_bandwidth_and_flops_over_peak() -> None:
    """cpu-all with a slow CPU core count: at 1 GFLOP/s a layer-0 cell's 2 M FLOPs take 2 ms, more than
    2 MB / 10 GB/s = 200 us: the CPU part is compute bound."""
    profile = hand_profile(cpu_flops=1e9, cpu_bw=1e10)
    result = timed_replay(hand_trace(), profile, TimedConfig(capacity_bytes=3 * MB, placement="cpu-all"))
    assert result.cells["cpu_s"].tolist() == pytest.approx([(2000 + 2 * 10.816) * US] * 4, abs=1e-12)
    assert result.plan.n_copies == 0


def test_cpu_and_gpu_parts_of_a_cell_run_in_parallel() -> None:
    """--miss cpu:max_tokens=1 on one 2-token cell routed [0, 1], [0, 2]: expert 0 (2 tokens) is fetched
    (1010 us) and runs on the device; 1 and 2 run on the CPU: 2 MB / 10 GB/s = 200 us plus two
    tokens' activations (1632 B) each way at 10 us + 1.632 us: 223.264 us. The cell takes
    dense + stall + max(device, cpu): with 5 us launches, 7 + 1010 + max(6, 223.264) us; with 500 us
    launches the device part (1 + 500 us) is the longer: 502 + 1010 + 501 us."""
    from moesim.traces.format.build import simple_trace

    trace = simple_trace([[[0, 1, 0, 2]]], n_layers=1, n_experts=4, object_bytes=MB, top_k=2, phases=[PREFILL])
    trace.meta.dense_bytes = [2 * MB]
    trace.meta.model = None
    config = TimedConfig(capacity_bytes=3 * MB, miss="cpu:max_tokens=1")
    fast_gpu = timed_replay(trace, hand_profile(cpu_flops=1e12, cpu_bw=1e10), config)
    assert fast_gpu.summary["time"]["total_s"] == pytest.approx((7 + 1010 + 223.264) * US, rel=1e-12)
    slow_gpu = timed_replay(trace, hand_profile(cpu_flops=1e12, cpu_bw=1e10, launch=500 * US), config)
    assert slow_gpu.summary["time"]["total_s"] == pytest.approx((502 + 1010 + 501) * US, rel=1e-12)


def test_cpu_layers_follows_llama_cpp_n_cpu_moe_model_layer_numbers() -> None:
    """--n-cpu-moe N counts the model's layers (blk.0 .. blk.N-1), dense ones included: on a trace of
    DeepSeek's MoE layers (model layers 3, 4, 5), n=4 keeps only model layer 3's experts on the CPU."""
    n_obj = 3 * 2
    meta = TraceMeta(n_layers=3, n_experts=2, top_k=1, object_bytes=[1] * 3, layer_ids=[3, 4, 5])
    trace = build_trace(meta, [{"phase": DECODE, "cells": [(0, [[0]]), (1, [[1]]), (2, [[0]])]}])
    ctx = PolicyContext(n_objects=n_obj, n_layers=3, n_experts=2, object_layer=np.repeat(np.arange(3), 2),
                        object_bytes=np.ones(n_obj), trace=trace)
    spec = parse_placement("cpu-layers:4")
    assert spec.params.n == 4
    assert CpuLayers(spec.params, ctx).on_cpu().tolist() == [True, True, False, False, False, False]
    plain = PolicyContext(n_objects=n_obj, n_layers=3, n_experts=2, object_layer=np.repeat(np.arange(3), 2),
                          object_bytes=np.ones(n_obj))
    assert CpuLayers(parse_placement("cpu-layers:n=2").params, plain).on_cpu().tolist() == [True] * 4 + [False] * 2


SHIPPED = ["a100-80gb", "apple-m4-max", "gh200", "h100-pcie", "h100-sxm", "h200-sxm", "phone-oneplus-15r",
           "rtx3090", "rtx4090", "specmd-a100-5gbps"]


@pytest.mark.parametrize("name", SHIPPED)
def test_cpu_miss_and_cpu_placement_run_on_every_shipped_profile_with_a_cpu(name: str) -> None:
    profile = load_profile(name)
    if "cpu" not in {p.kind for p in processors_of(profile).values()}:
        pytest.skip(f"{name} declares no cpu processor yet")
    trace = hand_trace()
    for config in (TimedConfig(capacity_bytes=3 * MB, miss="cpu"), TimedConfig(capacity_bytes=3 * MB, placement="cpu-all")):
        result = timed_replay(trace, profile, config)
        assert (result.cells["cpu_s"] > 0).any()


def test_placed_experts_are_never_prefetched_and_the_fast_planner_declines() -> None:
    """With an oracle prefetcher, layer 0's experts (on the CPU) are never copied; the compiled planner
    has no placement, so "fast" is refused in one line and "auto" falls back to the reference planner."""
    from moesim.errors import UserError
    from moesim.sim.plan import PlanConfig, Planner
    from moesim.sim.topology import build_topology

    trace = hand_trace()
    profile = hand_profile(cpu_flops=1e12, cpu_bw=1e10)
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=3 * MB, placement="cpu-layers:1",
                                                      prefetch="oracle:lookahead=2"))
    assert not np.isin(result.plan.copy_obj, [0, 1, 2, 3]).any()
    planner = Planner(trace, build_topology(profile, trace.total_object_bytes()),
                      PlanConfig(capacity_bytes=3 * MB, placement="cpu-all"))
    with pytest.raises(UserError, match="placement has no compiled planner"):
        planner.plan_engine("fast")
    assert planner.plan_engine("auto") == "reference"


def test_placement_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from moesim.cli import main

    base = ["replay", "--trace", "bundled:qwen", "--capacity", "2000MiB", "--profile", "h100-pcie"]
    assert main(base + ["--placement", "cpu-layers:n=-1"]) == 1
    assert main(base + ["--placement", "disk"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "n must be >= 0" in err[0] and "unknown placement policy 'disk'" in err[1]


def test_cpu_placement_without_a_cpu_is_one_line_naming_the_profile() -> None:
    from moesim.errors import UserError

    with pytest.raises(UserError, match="profile test: running experts on the CPU needs a cpu processor"):
        timed_replay(hand_trace(), make_profile(), TimedConfig(capacity_bytes=3 * MB, placement="cpu-all"))


def test_olmoe_prefill_flops_by_hand_through_timed_replay() -> None:
    """OLMoE-1B-7B (https://huggingface.co/allenai/OLMoE-1B-7B-0924/blob/main/config.json: hidden 2048,
    16 heads of 128 with 16 kv heads, 64 experts of 1024, top-8, vocab 50304), a 128-token prompt at
    positions 0..127, every token routed to experts 0-7, at 1 TFLOP/s and 1 PB/s (compute bound).
    Per layer:
      attention: 2 x (4 x 2048 x 2048) x 128 = 4,294,967,296 FLOPs for q/k/v/o
                 + 128 x 129 / 2 = 8256 (query, position) pairs x 4 x 16 x 128 = 67,633,152
                 = 4.362600448 ms
      router:    2 x 64 x 2048 x 128 = 33,554,432 -> 0.033554432 ms
      experts:   8 experts x 128 tokens x 2 x 3 x 2048 x 1024 = 12,884,901,888 -> 12.884901888 ms
    LM head once (one sequence, one logits row): 2 x 50304 x 2048 = 206,045,184 -> 0.206045184 ms;
    embedding rows 128 x 2048 x 2 B = 524,288 B at 1 PB/s -> 0.524288 ns (no FLOPs).
    Compute in all: 16 x 17.281056768 + 0.206045184 + 0.000000524288 = 276.702953996288 ms."""
    meta = TraceMeta(n_layers=16, n_experts=64, top_k=8, object_bytes=[3 * 2048 * 1024 * 2] * 16, model="olmoe-1b-7b")
    cells = [(layer, [list(range(8))] * 128) for layer in range(16)]
    trace = build_trace(meta, [{"phase": PREFILL, "tokens": [(0, i) for i in range(128)], "cells": cells}])
    profile = make_profile(peak_flops=1e12, memory_bandwidth=1e15, launch=0.0, host_bw=1e18)
    cells_out = timed_replay(trace, profile, TimedConfig(capacity_bytes=2 * 10**9)).cells
    assert cells_out["expert_s"].tolist() == pytest.approx([12.884901888e-3] * 16, rel=1e-12)
    dense = [4.362600448e-3 + 0.033554432e-3] * 16
    dense[-1] += 0.206045184e-3
    dense[0] += 524288 / 1e15
    assert cells_out["dense_s"].tolist() == pytest.approx(dense, rel=1e-12)
    assert float((cells_out["dense_s"] + cells_out["expert_s"]).sum()) == pytest.approx(276.702953996288e-3, rel=1e-12)


def test_compare_runs_each_listed_placement(capsys: pytest.CaptureFixture[str]) -> None:
    """`--placement gpu,cpu-layers:24,cpu-all`: one timed run per placement, labelled; cpu-all copies
    no expert, and the CPU placements run CPU time that the gpu run has none of."""
    import json

    from moesim.cli import main

    argv = ["compare", "--trace", "bundled:qwen", "--policies", "lru", "--capacity", "2000MiB",
            "--profile", "h100-pcie", "--set", "compute.cpu_flops=2 TFLOP/s",
            "--set", "compute.cpu_memory_bandwidth=200 GB/s", "--placement", "gpu,cpu-layers:24,cpu-all", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    runs = {r["label"]: r for r in out["runs"]}
    assert [r["label"] for r in out["runs"]][:3] == ["lru", "lru place=cpu-layers:n=24", "lru place=cpu-all"]
    gpu, half, cpu = runs["lru"], runs["lru place=cpu-layers:n=24"], runs["lru place=cpu-all"]
    assert gpu["time"]["cpu_s"] == 0 and half["time"]["cpu_s"] > 0 and cpu["time"]["cpu_s"] > half["time"]["cpu_s"]
    assert cpu["misses"] == 0 and cpu["links"]["h2d"]["bytes"] == cpu["links"]["d2h"]["bytes"]  # activations only
    assert half["misses"] < gpu["misses"]  # the cache serves half the layers
    assert main(["replay", "--trace", "bundled:qwen", "--capacity", "2000MiB", "--placement", "cpu-all"]) == 1
    assert "need the timing engine" in capsys.readouterr().err
