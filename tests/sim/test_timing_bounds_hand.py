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

from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace

from timing_helpers import MB, US, hand_profile, hand_trace, make_profile


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



def _two_layer_trace(passes):
    from moesim.traces.format.build import simple_trace

    trace = simple_trace(passes, n_layers=2, n_experts=4, object_bytes=MB)
    trace.meta.dense_bytes = [2 * MB, 2 * MB]
    trace.meta.model = None
    return trace


# 2 layers, top-1: layer 0 alternates objects 0 1 0 1, layer 1 stays on object 4. Every cell computes
# 7 us dense + 6 us for its one expert = 13 us.
LAYER_PASSES = [[[0], [0]], [[1], [0]], [[0], [0]], [[1], [0]]]
CELL_ENDS_IF_3_MISSES = (1006, 2006, 3006, 3019, 3032, 3045, 3058, 3071)


def test_layer_scope_bounds_by_hand():
    """Scope "layer", 3 MB + 1 byte: each partition holds 1,500,000 bytes (the floor of half): one object.
    MIN per layer: layer 0 sees 0 1 0 1 and keeps 0 (bypassing 1): 3 misses; layer 1 misses 4 once.
    Per cell [1, 1, 1, 0, 0, 0, 1, 0] MB, landing by A = [1, 2, 3, 3, 3, 3, 4, 4] ms;
    E = max(E_prev + 13, A + 6) = [1006, 2006, 3006, 3019, 3032, 3045, 4006, 4019] us.
    Globally 3 objects fit: 3 misses, and E's last misses land at 3 ms.
    Intervals: passes 0-3, layer 0 fetches 3 MB with 1.5 MB of room, layer 1 1 MB (under its room,
    which layer 0 cannot borrow): 1.5 MB = 1500 us; passes 1-3: 2 MB - 1.5 MB: 500 us."""
    trace = _two_layer_trace(LAYER_PASSES)
    config = TimedConfig(eviction="lru", capacity_bytes=3 * MB + 1, scope="layer")
    b = timed_replay(trace, hand_profile(), config).bounds
    assert b.belady_misses == 4 and b.belady_is_bound
    assert b.ideal_cell_end.tolist() == pytest.approx(
        [e * US for e in (1006, 2006, 3006, 3019, 3032, 3045, 4006, 4019)], abs=1e-12)
    assert b.partition_capacity.tolist() == [1_500_000, 1_500_000]
    assert b.pass_min_duration.tolist() == pytest.approx([26 * US] * 4, abs=1e-12)
    assert b.interval_bound(0, 3) == pytest.approx(1500 * US, abs=1e-12)
    assert b.interval_bound(1, 3) == pytest.approx(500 * US, abs=1e-12)
    assert b.interval_bound(3, 2) == 0.0  # an empty interval

    glob = timed_replay(trace, hand_profile(), TimedConfig(eviction="lru", capacity_bytes=3 * MB + 1)).bounds
    assert glob.belady_misses == 3
    assert glob.ideal_cell_end.tolist() == pytest.approx([e * US for e in CELL_ENDS_IF_3_MISSES], abs=1e-12)


def test_layer_scope_with_explicit_partitions_by_hand():
    """layer_capacity (2 MB, 1 MB): layer 0 keeps 0 and 1 (2 misses), layer 1 misses once: 3 MB, per cell
    [1, 1, 1, 0, 0, 0, 0, 0] MB, the global case's E. (Halves of 3 MB would give layer 0 one object.)"""
    trace = _two_layer_trace(LAYER_PASSES)
    config = TimedConfig(eviction="lru", capacity_bytes=3 * MB, scope="layer", layer_capacity=(2 * MB, MB))
    b = timed_replay(trace, hand_profile(), config).bounds
    assert b.belady_misses == 3
    assert b.partition_capacity.tolist() == [2 * MB, MB]
    assert b.ideal_cell_end.tolist() == pytest.approx([e * US for e in CELL_ENDS_IF_3_MISSES], abs=1e-12)


def test_a_cell_that_does_not_fit_its_partition_drops_belady_from_the_time_bound():
    """Scope "layer", 2 MB + 1 byte (1,000,000 bytes per layer). Pass 0 routes objects 0 and 5 (one per
    layer); pass 1 routes layer 0 to experts 0 and 1 (2 MB: more than its partition) and has no layer-1 cell.
    MIN's argument fails (the in-use rule binds), so E is the compute alone: 13, 13, then 7 + 7 = 14 us
    for the 2-expert cell (2 MB read at 1 TB/s + 5 us): [13, 26, 40] us.
    Per pass: pass 1's layer 0 needs 2 MB with 1,000,000 bytes of room: 1000 us; layer 1's unused room
    cannot be borrowed (globally 2 MB fit, and pass 1's minimum would be its 14 us of compute)."""
    trace = _two_layer_trace([[[0], [1]], [[0, 1], None]])
    b = timed_replay(trace, hand_profile(), TimedConfig(eviction="lru", capacity_bytes=2 * MB + 1,
                                                        scope="layer")).bounds
    assert not b.belady_is_bound and b.belady_misses is not None
    assert b.ideal_cell_end.tolist() == pytest.approx([13 * US, 26 * US, 40 * US], abs=1e-12)
    assert b.pass_min_duration.tolist() == pytest.approx([26 * US, 1000 * US], abs=1e-12)
    assert b.belady_cum is None


def test_uneven_partitions_decide_what_fits_and_what_each_pass_must_fetch():
    """layer_capacity (2 MB, 1 MB). Pass 0: layer 0 -> 0 and 1 (fits its 2 MB), layer 1 -> 0; pass 1:
    layer 0 -> 0, layer 1 -> 1 and 2 (2 MB: does not fit layer 1's 1 MB, though it would fit layer 0's).
    Per pass: pass 0 fits both partitions: its compute, 14 + 13 = 27 us; pass 1's layer 1 must fetch
    2 MB - 1 MB: 1000 us. (Even halves of 3 MB would make pass 0 fetch 0.5 MB.)"""
    trace = _two_layer_trace([[[0, 1], [0]], [[0], [1, 2]]])
    config = TimedConfig(eviction="lru", capacity_bytes=3 * MB, scope="layer", layer_capacity=(2 * MB, MB))
    b = timed_replay(trace, hand_profile(), config).bounds
    assert not b.belady_is_bound
    assert b.pass_min_duration.tolist() == pytest.approx([27 * US, 1000 * US], abs=1e-12)


def _one_layer(passes, top_k=1):
    meta = TraceMeta(n_layers=1, n_experts=2, top_k=top_k, object_bytes=[MB], dense_bytes=[2 * MB], model=None)
    return build_trace(meta, passes)


def test_bounds_of_a_trace_with_a_pass_that_routes_nothing():
    """Default test profile (1 GB/s, HBM 1 TB/s, no launch cost): pass 0 routes one token to object 0
    (2 us dense + 1 us expert), pass 1 has a token but no cell. Capacity 1 object: MIN misses once,
    E = 1000 + 1 = 1001 us; pass minima: 3 us and 0; passes 0-1 must fetch 1 MB - 1 MB: 3 us."""
    trace = _one_layer([{"phase": PREFILL, "tokens": [(0, 0)], "cells": [(0, [[0]])]},
                        {"phase": DECODE, "tokens": [(0, 1)], "cells": []}])
    b = timed_replay(trace, make_profile(), TimedConfig(eviction="lru", capacity_bytes=MB)).bounds
    assert b.belady_is_bound and b.belady_misses == 1
    assert b.ideal_cell_end.tolist() == pytest.approx([1001 * US], abs=1e-12)
    assert b.pass_min_duration.tolist() == pytest.approx([3 * US, 0.0], abs=1e-12)
    assert b.interval_bound(0, 1) == pytest.approx(3 * US, abs=1e-12)


def test_bounds_of_a_cell_whose_token_routes_to_no_expert():
    """Cells [0], [1], [] (the last token routed nowhere): capacity 1 object, every cell fits; MIN misses
    0 and 1: A = [1000, 2000, 2000] us, E = [1001, 2001, 2003] us (the empty cell computes 2 us dense)."""
    trace = _one_layer([{"phase": PREFILL, "tokens": [(0, 0)], "cells": [(0, [[0]])]},
                        {"phase": DECODE, "tokens": [(0, 1)], "cells": [(0, [[1]])]},
                        {"phase": DECODE, "tokens": [(0, 2)], "cells": [(0, [[]])]}], top_k=None)
    b = timed_replay(trace, make_profile(), TimedConfig(eviction="lru", capacity_bytes=MB)).bounds
    assert b.belady_is_bound and b.belady_misses == 2
    assert b.ideal_cell_end.tolist() == pytest.approx([1001 * US, 2001 * US, 2003 * US], abs=1e-12)
    assert b.pass_min_duration.tolist() == pytest.approx([3 * US, 3 * US, 2 * US], abs=1e-12)


def test_bounds_of_an_empty_trace_are_zero():
    b = timed_replay(_one_layer([]), make_profile(), TimedConfig(eviction="lru", capacity_bytes=MB)).bounds
    assert b.ideal_cell_end.size == 0 and b.pass_min_duration.size == 0
    assert b.time_bound_s == 0.0 and b.belady_is_bound and b.belady_misses == 0


def test_per_pass_minimum_counts_each_pass_own_objects():
    """One layer, capacity 0: every pass must fetch its object (1000 us > 13 us of compute), also when
    passes outnumber objects: passes route 1, 1, 0 (objects 1, 1, 0)."""
    from moesim.traces.format.build import simple_trace

    trace = simple_trace([[[1]], [[1]], [[0]]], n_layers=1, n_experts=2, object_bytes=MB)
    trace.meta.dense_bytes = [2 * MB]
    trace.meta.model = None
    b = timed_replay(trace, hand_profile(), TimedConfig(eviction="lru", capacity_bytes=0)).bounds
    assert not b.belady_is_bound  # a 1 MB object does not fit in 0 bytes
    assert b.pass_min_duration.tolist() == pytest.approx([1000 * US] * 3, abs=1e-12)
    one = simple_trace([[[1]]], n_layers=1, n_experts=2, object_bytes=MB)
    one.meta.dense_bytes = [2 * MB]
    one.meta.model = None
    b1 = timed_replay(one, hand_profile(), TimedConfig(eviction="lru", capacity_bytes=0)).bounds
    assert not b1.belady_is_bound and b1.pass_min_duration.tolist() == pytest.approx([1000 * US], abs=1e-12)


def test_low_bit_interval_bound_scales_the_resident_room_too():
    """lowbit:bits=4 on the hand trace: MIN fetches 6 x 0.25 MB over passes 0-1; the 3 MB cache could
    hold at most 3 x 0.25 MB of what was fetched before, so >= 0.75 MB = 750 us (per-pass: 500 us)."""
    _, b = _bounds(miss="lowbit:bits=4")
    assert b.interval_bound(0, 1) == pytest.approx(750 * US, abs=1e-12)


def test_belady_available_follows_the_registry(monkeypatch):
    from moesim.errors import UserError
    from moesim.sim import bounds

    assert bounds.belady_available()

    def missing(name, kind):
        raise UserError(f"no {kind} policy {name}", "policy")

    monkeypatch.setattr(bounds, "lookup", missing)
    assert not bounds.belady_available()


def test_ssd_first_use_bound_with_trailing_cells_that_reuse():
    """The SSD case with a third pass reusing [0, 1] and [5, 7]: no first use in its cells, so the SSD
    arrivals stay at 12000 us; MIN misses 7 MB in all (A over h2d <= 7000 us, below the SSD's).
    E = max(E_prev + 14, arrival + 7) = [4007, 8007, 10007, 12007, 12021, 12035] us."""
    from moesim.traces.format.build import simple_trace

    trace = simple_trace([[[0, 1], [0, 1]], [[0, 2], [1, 3]], [[0, 1], [1, 3]]], n_layers=2, n_experts=4,
                         object_bytes=MB, top_k=2)
    trace.meta.dense_bytes = [2 * MB, 2 * MB]
    trace.meta.model = None
    result = timed_replay(trace, hand_profile(dram=4 * MB, ssd_bw=0.5e9), TimedConfig(eviction="lru",
                                                                                       capacity_bytes=3 * MB))
    assert result.bounds.ideal_cell_end.tolist() == pytest.approx(
        [e * US for e in (4007, 8007, 10007, 12007, 12021, 12035)], abs=1e-12)


def test_time_bound_with_per_expert_overlap_drops_the_expert_tail():
    """overlap "expert": a cell's experts may run while its bytes land, so its experts end no earlier than
    its bytes (not bytes + 7 us) nor than the compute before them: E = max(E_prev + 14, A) = A =
    [2000, 4000, 5000, 6000] us (the link binds; the 14 us a cell computes hides under each fetch)."""
    result, b = _bounds(overlap="expert")
    assert b.ideal_cell_end.tolist() == pytest.approx([2000 * US, 4000 * US, 5000 * US, 6000 * US], abs=1e-12)
    assert b.time_bound_s == pytest.approx(6000 * US, abs=1e-12)
    assert result.summary["time"]["total_s"] >= b.time_bound_s
