"""A compute-bound timeline worked out by hand: FLOPs, not bytes, set the cell times.

No catalog model (meta.model is None): expert params = object bytes / 2 = 0.5 M, dense FLOPs per
token = dense bytes = 2 M (sim/cost_model.py's bf16 fallback). Profile: 1 TFLOP/s, HBM 1 TB/s,
5 us per kernel launch, h2d 1 GB/s + 10 us. One layer, experts 0 and 1 (1 MB each), top-2.

pass 0, request 0's 1-token prompt: dense max(2 MB / 1 TB/s, 2 MFLOP / 1 TFLOP/s) + 5 = 7 us;
    gate 7; two compulsory misses copy 7-1017 and 1017-2027 (stall 2020 us); experts
    max(2 MB / 1 TB/s, 1 token x 2 x 0.5 M x 2 experts / 1 TFLOP/s) + 5 = 7 us; ends 2034 us.
pass 1, request 1's 100-token prompt, both experts resident: dense 100 x 2 MFLOP / 1 TFLOP/s = 200 us
    (bytes: 2 us) + 5 = 205 us; experts 100 tokens x 2 x 0.5 M x 2 / 1 TFLOP/s = 200 us (bytes: 2 us)
    + 5 = 205 us; ends 2034 + 410 = 2444 us.
"""

from __future__ import annotations

import pytest

from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.trace_meta import PREFILL, TraceMeta
from moesim.traces.format.build import build_trace

from timing_helpers import MB, US, hand_profile


def _trace(prompt: int = 100):
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=2, object_bytes=[MB], dense_bytes=[2 * MB], model=None)
    return build_trace(meta, [
        {"phase": PREFILL, "tokens": [(0, 0)], "cells": [(0, [[0, 1]])]},
        {"phase": PREFILL, "tokens": [(1, i) for i in range(prompt)], "cells": [(0, [[0, 1]] * prompt)]},
    ])


def test_compute_bound_prompt_timeline_by_hand():
    result = timed_replay(_trace(), hand_profile(peak_flops=1e12), TimedConfig(eviction="lru", capacity_bytes=4 * MB))
    cells = result.cells
    assert cells["dense_s"].tolist() == pytest.approx([7 * US, 205 * US], abs=1e-12)
    assert cells["expert_s"].tolist() == pytest.approx([7 * US, 205 * US], abs=1e-12)
    assert cells["gate_s"].tolist() == pytest.approx([7 * US, 2239 * US], abs=1e-12)
    assert cells["stall_s"].tolist() == pytest.approx([2020 * US, 0.0], abs=1e-12)
    assert cells["end_s"].tolist() == pytest.approx([2034 * US, 2444 * US], abs=1e-12)
    assert cells["hits"].tolist() == [0, 2]
    assert result.summary["time"]["total_s"] == pytest.approx(2444 * US, abs=1e-12)
    req = result.requests.set_index("request")
    assert req.loc[0, "ttft_s"] == pytest.approx(2034 * US, abs=1e-12)
    assert req.loc[1, "ttft_s"] == pytest.approx(410 * US, abs=1e-12)  # from its own pass's start, not t = 0


def test_compute_bound_bound_by_hand():
    """The time bound on the same run: C = [14, 410] us, MIN misses 2 MB in cell 0 (A = 2000 us), so
    E = [max(14, 2000 + 7), max(2007 + 410, 2000 + 205)] = [2007, 2417] us. Pass minima: pass 0 fits
    (2 objects in 4), so its compute, 14 us; pass 1 the same, 410 us. Request 1's TTFT bound is its
    pass's minimum, 410 us, which the run meets exactly (it only computes)."""
    result = timed_replay(_trace(), hand_profile(peak_flops=1e12), TimedConfig(eviction="lru", capacity_bytes=4 * MB))
    b = result.bounds
    assert b.ideal_cell_end.tolist() == pytest.approx([2007 * US, 2417 * US], abs=1e-12)
    assert b.pass_min_duration.tolist() == pytest.approx([14 * US, 410 * US], abs=1e-12)
    req = result.requests.set_index("request")
    assert req.loc[1, "ttft_bound_s"] == pytest.approx(410 * US, abs=1e-12)
    assert req.loc[0, "ttft_bound_s"] == pytest.approx(2007 * US, abs=1e-12)


def test_memory_bound_when_flops_are_cheap():
    """The same prompt at 1 PFLOP/s: FLOPs take 0.2 us, so bytes bind: dense 2 + 5 = 7 us, experts
    2 + 5 = 7 us in both passes (a roofline is a max, not a sum)."""
    result = timed_replay(_trace(), hand_profile(peak_flops=1e15), TimedConfig(eviction="lru", capacity_bytes=4 * MB))
    assert result.cells["dense_s"].tolist() == pytest.approx([7 * US, 7 * US], abs=1e-12)
    assert result.cells["expert_s"].tolist() == pytest.approx([7 * US, 7 * US], abs=1e-12)


def test_cpu_experts_compute_bound_and_idle_energy_by_hand():
    """Miss handler cpu, capacity 0: every expert runs on the host CPU (100 GFLOP/s, 100 GB/s).

    pass 0: 1 token: max(2 MB / 100 GB/s = 20 us, 2 MFLOP / 100 GFLOP/s = 20 us) = 20 us.
    pass 1: 100 tokens: max(20 us, 200 MFLOP / 100 GFLOP/s = 2000 us) = 2000 us.
    Activations cross each way: width sqrt(0.5 M / 3) = 408, 816 bytes per token: 10 + 0.816 us per
    direction for pass 0, 10 + 81.6 us for pass 1. The device runs no expert and idles while it waits.
    Energy: 100 W idle during the waits, 500 W the rest (dense 7 + 205 us), no bytes priced.
    """
    profile = hand_profile(peak_flops=1e12, cpu_flops=1e11, cpu_bw=1e11, joules_per_byte={})
    result = timed_replay(_trace(), profile, TimedConfig(miss="cpu", capacity_bytes=0))
    cells = result.cells
    waits = [20 + 2 * 10.816, 2000 + 2 * 91.6]
    assert cells["cpu_s"].tolist() == pytest.approx([w * US for w in waits], abs=1e-12)
    assert cells["expert_s"].tolist() == pytest.approx([0.0, 0.0], abs=1e-15)
    total = 7 + waits[0] + 205 + waits[1]
    assert result.summary["time"]["total_s"] == pytest.approx(total * US, abs=1e-12)
    assert result.summary["idle_s"] == pytest.approx(sum(waits) * US, abs=1e-12)
    assert result.summary["energy_j"]["idle"] == pytest.approx(100.0 * sum(waits) * US)
    assert result.summary["energy_j"]["total"] == pytest.approx(100.0 * sum(waits) * US + 500.0 * 212 * US)
