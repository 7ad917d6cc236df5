"""Miss handlers timed by hand on the 2-layer, 2-pass trace of test_timing_hand (same profile).

Cells need objects [0, 1], [4, 5], [0, 2], [5, 7]; capacity 3 objects, LRU. A full copy takes 1010 us,
a cell's dense part 7 us and its expert part 5 us + 1 us per object run on the device.
"""

from __future__ import annotations

import pytest

from moesim.errors import UserError
from moesim.policies.registry import parse_spec
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace, simple_trace

from timing_helpers import MB, US, hand_profile as _profile, hand_trace as _trace


def test_cpu_runs_missing_experts_on_the_host_and_moves_only_activations():
    """CPU: 10 GB/s, 1 TFLOP/s. Every miss runs on the CPU and is never admitted, so all 4 cells
    run both experts there: 2 MB / 10 GB/s = 200 us (FLOPs: 2 us). Activations: without a model spec
    the width is sqrt(0.5 M params / 3) = 408, so 816 bytes for the cell's one token each way, taking
    10 us + 0.816 us on d2h and on h2d. The device runs no expert (0 us) and waits 221.632 us.
    """
    profile = _profile(cpu_flops=1e12, cpu_bw=1e10)
    result = timed_replay(_trace(), profile, TimedConfig(miss="cpu", capacity_bytes=3 * MB))
    cells = result.cells
    cpu_path = 200 + 2 * (10 + 0.816)
    assert cells["cpu_s"].tolist() == pytest.approx([cpu_path * US] * 4, abs=1e-12)
    assert cells["expert_s"].tolist() == pytest.approx([0.0] * 4, abs=1e-15)
    assert cells["cpu_wait_s"].tolist() == pytest.approx([cpu_path * US] * 4, abs=1e-12)
    assert cells["stall_s"].tolist() == [0.0] * 4
    assert cells["bytes_h2d"].tolist() == [816] * 4
    assert cells["bytes_d2h"].tolist() == [816] * 4
    assert result.plan.n_copies == 0
    assert result.summary["time"]["total_s"] == pytest.approx(4 * (7 + cpu_path) * US, abs=1e-12)
    assert result.summary["misses"] == 8  # nothing is ever admitted: 0 and 5 miss again in pass 1
    assert result.summary["lossy"] is False
    assert result.summary["bounds"]["valid"] is False
    # the device idles while the CPU works (no copy runs): 4 x 221.632 us at idle power
    assert result.summary["idle_s"] == pytest.approx(4 * cpu_path * US, abs=1e-12)


def test_cpu_handler_needs_cpu_figures():
    with pytest.raises(UserError, match="cpu_flops"):
        timed_replay(_trace(), _profile(), TimedConfig(miss="cpu", capacity_bytes=3 * MB))


def test_cpu_handler_fetches_experts_with_many_tokens():
    """max_tokens=1: in a 2-token cell routed [0, 1] and [0, 2], expert 0 (2 tokens) is fetched while
    1 and 2 (1 token each) run on the CPU: one copy, and 2 of the 4 expert-token pairs on the CPU."""
    trace = simple_trace([[[0, 1, 0, 2]]], n_layers=1, n_experts=4, object_bytes=MB, top_k=2, phases=[PREFILL])
    trace.meta.model = None
    profile = _profile(cpu_flops=1e12, cpu_bw=1e10)
    result = timed_replay(trace, profile, TimedConfig(miss="cpu:max_tokens=1", capacity_bytes=3 * MB))
    assert result.plan.copy_obj.tolist() == [0]
    assert result.plan.cpu_tokens.tolist() == [0, 1, 1]
    assert result.plan.gpu_tokens.tolist() == [2, 0, 0]
    always = timed_replay(trace, profile, TimedConfig(miss="cpu", capacity_bytes=3 * MB))
    assert always.plan.n_copies == 0
    with pytest.raises(UserError):
        parse_spec("cpu:max_tokens=-1", "miss")


def test_lowbit_fetch_moves_a_quarter_of_the_bytes_and_alters_every_use():
    """4 bits: a copy moves 250 kB in 10 + 250 us. Slots stay full size, so hits and misses are the
    demand-LRU ones (test_timing_hand): stalls 2 x 260, 2 x 260, 2 x 260, 260 us. Altered applications:
    the 7 fetched ones plus the hit on 5 in cell 3 (still the low-bit copy) = 8.
    """
    result = timed_replay(_trace(), _profile(), TimedConfig(miss="lowbit:bits=4", capacity_bytes=3 * MB))
    cells = result.cells
    assert cells["stall_s"].tolist() == pytest.approx([520 * US, 520 * US, 520 * US, 260 * US], abs=1e-12)
    assert cells["bytes_h2d"].tolist() == [500_000, 500_000, 500_000, 250_000]
    assert cells["altered"].tolist() == [2, 2, 2, 2]
    assert cells["hits"].tolist() == [0, 0, 0, 1]
    s = result.summary
    assert s["lossy"] is True
    assert s["altered_applications"] == 8
    assert s["bounds"]["valid"] is True


def test_drop_skips_the_lowest_gate_missing_expert_of_each_token():
    """Gates: cell 0 (0: .7, 1: .3) drops 1 and fetches 0; cell 1 (0: .4, 1: .6) drops object 4 and
    fetches 5; cells 2 and 3 each miss one expert (2, then 7) and drop it. 2 copies, 4 altered.
    Expert time: one object run per cell, 6 us.
    """
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[MB, MB], dense_bytes=[2 * MB, 2 * MB])
    passes = [
        {"phase": PREFILL, "cells": [(0, [[0, 1]], [[0.7, 0.3]]), (1, [[0, 1]], [[0.4, 0.6]])]},
        {"phase": DECODE, "cells": [(0, [[0, 2]], [[0.9, 0.1]]), (1, [[1, 3]], [[0.5, 0.5]])]},
    ]
    trace = build_trace(meta, passes)
    result = timed_replay(trace, _profile(), TimedConfig(miss="drop", capacity_bytes=3 * MB))
    cells = result.cells
    assert result.plan.copy_obj.tolist() == [0, 5]
    assert cells["altered"].tolist() == [1, 1, 1, 1]
    assert cells["expert_s"].tolist() == pytest.approx([6 * US] * 4, abs=1e-12)
    assert cells["stall_s"].tolist() == pytest.approx([1010 * US, 1010 * US, 0, 0], abs=1e-12)
    assert cells["misses"].tolist() == [2, 2, 1, 1]
    assert result.summary["lossy"] is True
    assert result.summary["altered_applications"] == 4


def test_drop_without_weights_uses_router_order():
    """No gate weights: the later router rank is the lower gate, so cell 0 drops expert 1 (rank 2)."""
    result = timed_replay(_trace(), _profile(), TimedConfig(miss="drop", capacity_bytes=3 * MB))
    assert result.plan.copy_obj.tolist()[0] == 0
    assert result.cells["altered"].iloc[0] == 1


@pytest.mark.parametrize("spec", ["lowbit:bits=0", "lowbit:bits=17", "drop:per_token=0", "nosuch"])
def test_bad_miss_specs_are_user_errors(spec):
    with pytest.raises(UserError):
        parse_spec(spec, "miss")
