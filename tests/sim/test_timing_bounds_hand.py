"""The time bound's value worked out by hand (docs/metrics.md, "Bounds"), not only "simulated >= bound".

Hand trace and profile of test_timing_hand (timing_helpers): cells need objects [0, 1], [4, 5],
[0, 2], [5, 7]; 1 MB objects; h2d 1 GB/s (W; the bound ignores the 10 us latency); each cell
computes 7 us dense + 7 us experts. No catalog model: the trace's object and dense bytes only.

MIN with bypass at 3 objects keeps 0 and 5 for their reuse, so it misses exactly the 6 first uses:
1 MB per miss, per cell [2, 2, 1, 1] MB. Its bytes land over W by A = [2000, 4000, 5000, 6000] us,
and a cell's experts end no earlier than its bytes plus their 7 us, nor than the compute before them:
    E = max(E_prev + 14, A + 7) = [2007, 4007, 5007, 6007] us.
Per pass: 4 distinct objects, 3 fit, so at least 1 MB (1000 us) is fetched during each pass.
"""

from __future__ import annotations

import pytest

from moesim.sim.timed_replay import TimedConfig, timed_replay

from timing_helpers import MB, US, hand_profile, hand_trace


def _bounds(profile=None, **config):
    config.setdefault("capacity_bytes", 3 * MB)
    result = timed_replay(hand_trace(), profile or hand_profile(), TimedConfig(eviction="lru", **config))
    assert result.bounds is not None
    return result, result.bounds


def test_time_bound_by_hand_when_the_link_binds():
    result, b = _bounds()
    assert b.belady_misses == 6 and b.belady_miss_bytes == 6 * MB
    assert b.belady_is_bound
    assert b.ideal_cell_end.tolist() == pytest.approx([2007 * US, 4007 * US, 5007 * US, 6007 * US], abs=1e-12)
    assert b.pass_min_duration.tolist() == pytest.approx([1000 * US, 1000 * US], abs=1e-12)
    assert b.time_bound_s == pytest.approx(6007 * US, abs=1e-12)
    # LRU (7126 us by hand in test_timing_hand) is 1119 us above the bound
    assert result.summary["time"]["total_s"] - b.time_bound_s == pytest.approx(1119 * US, abs=1e-12)
    # from the start of pass 1 on: 2 MB of MIN's misses, 3 MB may be resident: only the per-pass 1 MB binds
    assert b.interval_bound(1, 1) == pytest.approx(1000 * US, abs=1e-12)
    assert b.interval_bound(0, 1) == pytest.approx(max(2000, (6 - 3) * 1000) * US, abs=1e-12)


def test_time_bound_by_hand_when_compute_binds():
    """Everything fits and the link is 1000x faster (1 TB/s): per cell A = [2, 4, 5, 6] us, so compute
    binds: E = [14, 28, 42, 56] us. Each pass fits (4 objects in 8), so its minimum is its compute, 28 us."""
    _, b = _bounds(hand_profile(host_bw=1e12), capacity_bytes=8 * MB)
    assert b.ideal_cell_end.tolist() == pytest.approx([14 * US, 28 * US, 42 * US, 56 * US], abs=1e-12)
    assert b.pass_min_duration.tolist() == pytest.approx([28 * US, 28 * US], abs=1e-12)
    assert b.time_bound_s == pytest.approx(56 * US, abs=1e-12)


def test_ssd_behind_a_dram_cache_bounds_first_uses_by_ssd_bandwidth():
    """Objects live on an SSD read at 0.5 GB/s behind a DRAM cache: every first use must cross the SSD
    first, so the 6 first-use MB land no earlier than [4000, 8000, 10000, 12000] us (twice A)."""
    profile = hand_profile(dram=4 * MB, ssd_bw=0.5e9)
    _, b = _bounds(profile)
    assert b.ideal_cell_end.tolist() == pytest.approx([4007 * US, 8007 * US, 10007 * US, 12007 * US], abs=1e-12)


def test_low_bit_fetches_scale_the_bytes_the_bound_counts():
    """lowbit:bits=4 moves 4/16 of each object: MIN's misses are the same 6 objects but 0.25 MB each,
    A = [500, 1000, 1250, 1500] us. Slots are full size, so each pass still fetches at least
    (4 - 3) MB x 0.25 = 0.25 MB: 250 us."""
    _, b = _bounds(miss="lowbit:bits=4")
    assert b.valid
    assert b.belady_miss_bytes == 6 * MB  # reported in full-size bytes
    assert b.ideal_cell_end.tolist() == pytest.approx([507 * US, 1007 * US, 1257 * US, 1507 * US], abs=1e-12)
    assert b.pass_min_duration.tolist() == pytest.approx([250 * US, 250 * US], abs=1e-12)

