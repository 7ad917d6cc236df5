"""Slice reads with prefetch: a copy into a VRAM slot that an unwaited prefetch still targets waits for it
(write-after-write, moesim/sim/plan.py's `cancels`), per copy, as whole reads do; with cancel_unstarted a
prefetch none of whose slices has started is dropped.

The phone profile's flash as in tests/sim/test_read_slices.py: aggregate(n) = 0.788 + (n - 1) x 2.362 / 3
GB/s, 100 us to the first byte of every request; 1 MB experts, no dense weights, one expert computes in
c = 1 MB / 14.5 GB/s.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.hw_profiles.loader import load_profile
from moesim.policies import registry
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.build import simple_trace
from moesim.traces.format.trace_meta import DECODE

from test_read_slices import C, LAT, MB, _trace, agg
from test_timing_order import ScriptedPrefetch


@pytest.fixture
def script(monkeypatch):
    """The scripted prefetcher of tests/sim/test_timing_order.py, registered only while a test runs."""
    monkeypatch.setitem(registry._REGISTRY, ("prefetch", "scripted-test"),
                        registry.Registered(name="scripted-test", kind="prefetch", cls=ScriptedPrefetch))
    yield ScriptedPrefetch.script
    ScriptedPrefetch.script = {}


def _reused(cancel_unstarted: bool):
    """Capacity 3; cell 0 needs 0 and prefetches 5 then 6; cell 1 needs 0, 5 and 1. Two lanes, halves."""
    config = TimedConfig(prefetch="scripted-test", capacity_bytes=3 * MB, io_lanes=2, read_slices=(0.5, 0.5),
                         overlap="layer", cancel_unstarted=cancel_unstarted)
    return timed_replay(_trace([[[0]], [[0, 5, 1]]]), load_profile("phone-oneplus-15r"), config)


def test_the_copy_reusing_an_unread_prefetch_slot_starts_when_that_prefetch_lands(script) -> None:
    """Every wave of two half-requests on two lanes takes T = 100 us + 0.5 MB / (aggregate(2) / 2).
    Gate 0 at 0: demand 0's halves 0-T (demand first), prefetch 5's T-2T, prefetch 6's queued, 2T-3T.
    Cell 0 waits for 0 (stall T) and computes c; cell 1's gate at T + c: 0 and 5 hit (5 late), 1 misses
    and evicts 6, whose copy has not landed: 1's halves wait for it and run 3T-4T. Cell 1 stalls 4T - T - c.
    Four copies move 4 MB."""
    script[0] = [5, 6]
    result = _reused(cancel_unstarted=False)
    plan, engine = result.plan, result.engine
    t = LAT + MB / agg(2)
    assert plan.copy_obj.tolist() == [0, 5, 6, 1]
    assert plan.cancels.tolist() == [2]  # copy 1 (object 1) waits for copy 2 (prefetch 6)
    np.testing.assert_allclose(engine.copy_start, [0, t, 2 * t, 3 * t], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(engine.copy_end, [t, 2 * t, 3 * t, 4 * t], rtol=1e-9, atol=1e-12)
    assert engine.copy_start[3] == engine.copy_end[2]
    assert not engine.copy_cancelled.any()
    np.testing.assert_allclose(result.cells["stall_s"], [t, 4 * t - t - C], rtol=1e-9)
    p = result.summary["prefetch"]
    assert (p["issued"], p["late"], p["wasted"], p["cancelled"]) == (2, 1, 1, 0)
    assert result.summary["links"]["ssd_d"]["bytes"] == 4 * MB


def test_with_cancel_unstarted_a_prefetch_with_no_slice_started_is_dropped(script) -> None:
    """As above, but 6's halves are still queued at cell 1's gate (T + c < 2T): 6 is cancelled, moves
    nothing; demand 1 goes ahead in the queue and runs 2T-3T. Cell 1 stalls 3T - T - c."""
    script[0] = [5, 6]
    result = _reused(cancel_unstarted=True)
    engine = result.engine
    t = LAT + MB / agg(2)
    assert engine.copy_cancelled.tolist() == [False, False, True, False]
    assert np.isnan(engine.copy_start[2]) and np.isnan(engine.copy_end[2])
    np.testing.assert_allclose(engine.copy_start[[0, 1, 3]], [0, t, 2 * t], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.cells["stall_s"], [t, 3 * t - t - C], rtol=1e-9)
    assert result.summary["prefetch"]["cancelled"] == 1
    assert result.summary["links"]["ssd_d"]["bytes"] == 3 * MB
    assert engine.copy_busy[2] == 0.0


def _random_run(seed: int, sliced: bool, overlap: str, cancel_unstarted: bool, prefetch: str):
    rng = np.random.default_rng(seed)
    n_layers, n_experts, n_passes = 3, 8, 10
    cells = [[[int(e) for e in rng.choice(n_experts, 2, replace=False)] for _ in range(n_layers)]
             for _ in range(n_passes)]
    trace = simple_trace(cells, n_layers=n_layers, n_experts=n_experts, object_bytes=MB, phases=[DECODE] * n_passes)
    trace.meta.dense_bytes = [100_000] * n_layers
    trace.meta.model = None
    if prefetch == "scripted-test":
        ScriptedPrefetch.script = {c: [int(o) for o in rng.choice(trace.n_objects, 3, replace=False)]
                                   for c in range(trace.n_cells) if rng.random() < 0.6}
    config = TimedConfig(prefetch=prefetch, capacity_bytes=5 * MB, io_lanes=2, overlap=overlap, bounds=False,
                         cancel_unstarted=cancel_unstarted, read_slices=(1.0,) if sliced else ())
    return timed_replay(trace, load_profile("phone-oneplus-15r"), config)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("overlap", ["layer", "expert"])
@pytest.mark.parametrize("cancel_unstarted", [False, True])
@pytest.mark.parametrize("prefetch", ["scripted-test", "markov"])
def test_one_slice_is_the_whole_read_with_prefetch(script, seed, overlap, cancel_unstarted, prefetch) -> None:
    """read_slices (1.0,) queues each storage read as one request on a server of its own: every copy's
    start, end and cancellation and every cell's stall equal the whole-read engine's, with prefetch
    copies whose slots are reused unread (the runs must have some, or the test proves nothing)."""
    whole = _random_run(seed, False, overlap, cancel_unstarted, prefetch)
    one = _random_run(seed, True, overlap, cancel_unstarted, prefetch)
    assert whole.plan.cancels.size > 0
    assert whole.plan.copy_obj.tolist() == one.plan.copy_obj.tolist()
    if cancel_unstarted and prefetch == "scripted-test" and seed == 0:
        assert whole.engine.copy_cancelled.any()
    np.testing.assert_array_equal(one.engine.copy_cancelled, whole.engine.copy_cancelled)
    np.testing.assert_allclose(one.engine.copy_start, whole.engine.copy_start, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(one.engine.copy_end, whole.engine.copy_end, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(one.cells["stall_s"], whole.cells["stall_s"], rtol=1e-12, atol=1e-15)
