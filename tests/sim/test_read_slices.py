"""Storage reads split into weight slices and the expert-id compute order (moesim/sim/read_slices.py), by hand.

The phone profile's flash: one read alone 0.788 GB/s, four in flight 3.15 GB/s in all, linear between
(aggregate(n) = 0.788 + (n - 1) x 2.362 / 3 GB/s), 100 us to the first byte of every request. Experts of
1 MB, no dense weights; the expert processor reads 14.5 GB/s, so one expert computes in
c = 1 MB / 14.5 GB/s = 68.97 us (its FLOPs take less at 45.5 GFLOP/s).
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.hw_profiles.loader import load_profile
from moesim.runs.cell_clock import ReplayedRun
from moesim.sim.read_slices import check_fractions, piece_order
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.build import simple_trace
from moesim.traces.format.trace_meta import DECODE

from timing_helpers import MB, US

LAT = 100 * US
C = MB / 14.5e9


def agg(n: int) -> float:
    return 0.788e9 + (n - 1) * (3.15e9 - 0.788e9) / 3


def _trace(cells, n_experts=8):
    trace = simple_trace(cells, n_layers=1, n_experts=n_experts, object_bytes=MB, phases=[DECODE] * len(cells))
    trace.meta.dense_bytes = [0]
    trace.meta.model = None
    return trace


def _run(cells, **options):
    config = TimedConfig(capacity_bytes=8 * MB, **options)
    return timed_replay(_trace(cells), load_profile("phone-oneplus-15r"), config)


def test_one_miss_in_three_slices_fills_three_lanes() -> None:
    """Whole: one 1 MB read alone: 100 us + 1 MB / 0.788 GB/s. In thirds: three requests of 1/3 MB flow
    together at aggregate(3) / 3 each: 100 us + 1 MB / aggregate(3) = 523.3 us, and the lanes were busy
    three times that (the engine's io_ms sums lane time)."""
    whole = _run([[[0]]], overlap="layer")
    thirds = _run([[[0]]], overlap="layer", read_slices=(1 / 3, 1 / 3, 1 / 3))
    assert whole.cells["stall_s"].iloc[0] == pytest.approx(LAT + MB / 0.788e9, rel=1e-9)
    piece = LAT + MB / agg(3)
    assert thirds.cells["stall_s"].iloc[0] == pytest.approx(piece, rel=1e-9)
    assert thirds.cells["copy_s_ssd_d"].iloc[0] == pytest.approx(3 * piece, rel=1e-9)
    assert thirds.engine.copy_end[0] - thirds.engine.copy_start[0] == pytest.approx(piece, rel=1e-9)
    assert thirds.summary["config"]["read_slices"] == pytest.approx([1 / 3] * 3)


def test_slice_major_queueing_feeds_the_id_ordered_matmul_sooner() -> None:
    """Two misses (experts 0, 1) in halves on 2 lanes; each wave of two requests takes
    t1 = 100 us + (0.5 MB) / (aggregate(2) / 2) = 100 us + 1 MB / aggregate(2).
    Expert-major: 0's halves land at t1, 1's at 2 t1. Slice-major: both first halves at t1, both second
    halves at 2 t1. Expert-id order, a half of c per (slice, expert) unit:
      expert-major: slice 0: e0 at t1, e1 at 2 t1 (+c/2); slice 1: e0 ready, e1 ready: ends 2 t1 + 1.5 c,
                    stall 2 t1 - c/2;
      slice-major:  slice 0: e0, e1 from t1 (ends t1 + c); slice 1 from 2 t1: ends 2 t1 + c, stall 2 t1 - c.
    Arrival order (moesim's default) with expert-major halves: e0 at t1, e1 at 2 t1: stall 2 t1 - c.
    Under a per-layer barrier both wait 2 t1."""
    t1 = LAT + MB / agg(2)
    halves = dict(io_lanes=2, read_slices=(0.5, 0.5))
    stall = {}
    for name, opts in {"expert-major id": dict(slice_order="expert", expert_order="id"),
                       "slice-major id": dict(slice_order="slice", expert_order="id"),
                       "expert-major arrival": dict(slice_order="expert")}.items():
        stall[name] = _run([[[0, 1]]], overlap="expert", **halves, **opts).cells["stall_s"].iloc[0]
    assert stall["expert-major id"] == pytest.approx(2 * t1 - C / 2, rel=1e-9)
    assert stall["slice-major id"] == pytest.approx(2 * t1 - C, rel=1e-9)
    assert stall["expert-major arrival"] == pytest.approx(2 * t1 - C, rel=1e-9)
    barrier = _run([[[0, 1]]], overlap="layer", slice_order="slice", **halves).cells["stall_s"].iloc[0]
    assert barrier == pytest.approx(2 * t1, rel=1e-9)


def test_in_id_order_a_resident_expert_waits_behind_a_missing_one() -> None:
    """Pass 0 reads expert 1; pass 1 routes [0, 1]: 0 misses (one whole read, A = 100 us + 1 MB / 0.788
    GB/s), 1 is resident. Arrival order runs 1 first (0 to c), then 0 at A: stall A - c. Expert-id
    order runs 0 first, so 1 waits too: stall A."""
    arrival = _run([[[1]], [[0, 1]]], overlap="expert").cells["stall_s"].iloc[1]
    by_id = _run([[[1]], [[0, 1]]], overlap="expert", expert_order="id").cells["stall_s"].iloc[1]
    a = LAT + MB / 0.788e9
    assert arrival == pytest.approx(a - C, rel=1e-9)
    assert by_id == pytest.approx(a, rel=1e-9)


def test_the_closed_form_clock_equals_the_simulator_with_slices() -> None:
    """moesim/runs/cell_clock.py against timed_replay on a random multi-pass trace, both orders, both queues."""
    rng = np.random.default_rng(3)
    cells = [[[int(e) for e in rng.choice(16, 3, replace=False)] for _ in range(3)] for _ in range(12)]
    trace = simple_trace(cells, n_layers=3, n_experts=16, object_bytes=MB, phases=[DECODE] * 12)
    trace.meta.dense_bytes = [200_000] * 3
    trace.meta.model = None
    profile = load_profile("phone-oneplus-15r")
    figures = {"memory_bandwidth": 14.5e9, "peak_flops": 45.5e9, "launch_overhead": 0.0, "ssd_bandwidth": 3.15e9,
               "ssd_bandwidth_qd1": 0.788e9, "ssd_latency": 1e-4}
    for overlap, opts in (("expert", dict(read_slices=(0.25, 0.25, 0.5), slice_order="slice", expert_order="id")),
                          ("expert", dict(read_slices=(0.5, 0.5), expert_order="arrival")),
                          ("layer", dict(read_slices=(1 / 3, 1 / 3, 1 / 3))),
                          ("expert", dict(expert_order="id"))):
        config = TimedConfig(capacity_bytes=20 * MB, overlap=overlap, io_lanes=3, bounds=False, **opts)
        sim = timed_replay(trace, profile, config)
        replayed = ReplayedRun(trace, profile, config)
        cells = replayed.cell_times(figures)
        np.testing.assert_allclose(cells["stall"], sim.cells["stall_s"].to_numpy(), rtol=1e-9, atol=1e-12)
        io = np.bincount(replayed.copy_cell, weights=cells["copy_s"], minlength=trace.n_cells)
        np.testing.assert_allclose(io, sim.cells["copy_s_ssd_d"].to_numpy(), rtol=1e-9, atol=1e-12)


def test_orders_and_bad_shares() -> None:
    assert piece_order([4, 7], 2, slice_major=True) == [(4, 0), (7, 0), (4, 1), (7, 1)]
    assert piece_order([4, 7], 2, slice_major=False) == [(4, 0), (4, 1), (7, 0), (7, 1)]
    assert check_fractions((0.25, 0.75)) == (0.25, 0.75)
    for bad in ((), (0.5, 0.6), (1.0, 0.0), (float("nan"), 1.0)):
        with pytest.raises(UserError, match="slice shares"):
            check_fractions(bad)
    with pytest.raises(UserError, match="slice order"):
        _run([[[0]]], slice_order="sideways", read_slices=(0.5, 0.5))
    with pytest.raises(UserError, match="expert order"):
        _run([[[0]]], expert_order="random")
