"""Timing worked out by hand on tiny traces: compute, copies, stalls, prefetch, to the nanosecond.

Common set-up (timing_helpers.hand_trace and hand_profile): 2 layers x 4 experts, 1 token per cell routed to 2 experts,
objects of 1 MB; dense bytes 2 MB per layer. Profile: h2d 1 GB/s with 10 us latency (a copy takes
1010 us), HBM 1 TB/s, peak 1 PFLOP/s, launch overhead 5 us. Then a cell's dense part is
2 MB / 1 TB/s + 5 us = 7 us and its expert part 2 x 1 MB / 1 TB/s + 5 us (one grouped kernel) = 7 us
(FLOPs are negligible: 1 token x 2 x 0.5 M params x 2 experts / 1 PFLOP/s = 2 ns).
"""

from __future__ import annotations

import pytest

from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.build import simple_trace

from timing_helpers import MB, US, hand_profile as _profile, hand_trace as _trace


def test_demand_only_lru_matches_the_hand_timeline():
    """LRU, capacity 3 objects, no prefetch.

    cell 0 [0,1]: two compulsory misses; gate at 7; copies 7-1017, 1017-2027; stall 2020; ends 2034
    cell 1 [4,5]: misses; 5 evicts 0 (LRU); gate 2041; copies 2041-3051, 3051-4061; ends 4068
    cell 2 [0,2]: 0 capacity miss (evicted in pass 0), 2 compulsory; evict 1 and 4; gate 4075; ends 6102
    cell 3 [5,7]: 5 hits; 7 compulsory, evicts 0; gate 6109; copy 6109-7119; stall 1010; ends 7126
    """
    result = timed_replay(_trace(), _profile(), TimedConfig(eviction="lru", capacity_bytes=3 * MB))
    cells = result.cells
    assert cells["dense_s"].tolist() == pytest.approx([7 * US] * 4, abs=1e-12)
    assert cells["expert_s"].tolist() == pytest.approx([7 * US] * 4, abs=1e-12)
    assert cells["gate_s"].tolist() == pytest.approx([7 * US, 2041 * US, 4075 * US, 6109 * US], abs=1e-12)
    assert cells["stall_s"].tolist() == pytest.approx([2020 * US, 2020 * US, 2020 * US, 1010 * US], abs=1e-12)
    assert cells["end_s"].tolist() == pytest.approx([2034 * US, 4068 * US, 6102 * US, 7126 * US], abs=1e-12)
    assert cells["hits"].tolist() == [0, 0, 0, 1]
    assert cells["compulsory"].tolist() == [2, 2, 1, 1]
    assert cells["capacity"].tolist() == [0, 0, 1, 0]
    assert cells["collision"].tolist() == [0, 0, 0, 0]
    assert cells["bytes_h2d"].tolist() == [2 * MB, 2 * MB, 2 * MB, MB]
    assert cells["copy_s_h2d"].tolist() == pytest.approx([2020 * US, 2020 * US, 2020 * US, 1010 * US], abs=1e-12)

    s = result.summary
    assert s["time"]["total_s"] == pytest.approx(7126 * US, abs=1e-12)
    req = result.requests.iloc[0]
    assert req["ttft_s"] == pytest.approx(4068 * US, abs=1e-12)  # end of the prefill pass
    assert req["tpot_s"] == pytest.approx((7126 - 4068) * US, abs=1e-12)  # one later decode pass
    assert s["links"]["h2d"]["bytes"] == 7 * MB
    assert s["links"]["h2d"]["utilization"] == pytest.approx(7 * 1010 / 7126)
    # the device computes 4 x (7 + 7) = 56 us; a copy running while it stalls does not make it active:
    # 500 W for 56 us, 100 W idle for the other 7070 us, 1 nJ per byte on the link
    assert s["active_s"] == pytest.approx(56 * US, abs=1e-12)
    assert s["energy_j"]["total"] == pytest.approx(7 * MB * 1e-9 + 500.0 * 56 * US + 100.0 * 7070 * US)
    assert s["energy_j"]["processors"]["gpu"]["idle_j"] == pytest.approx(100.0 * 7070 * US)
    # no prefetch: every hit is on time; per lookup 1 of 8, per routed access (1 token each) the same
    assert s["hit_rate"] == pytest.approx(1 / 8) and s["hit_rate_per_access"] == pytest.approx(1 / 8)


def test_oracle_prefetch_one_cell_ahead_matches_the_hand_timeline():
    """Oracle lookahead 1, LRU, capacity 3 objects.

    cell 0 [0,1]: demand 0, 1; proposes [4,5]: 4 fits, 5 finds no victim (0, 1 in use, 4 in flight).
        copies 0: 7-1017, 1: 1017-2027, prefetch 4: 2027-3037. stall 2020, ends 2034
    cell 1 [4,5]: 4 hits a late prefetch, 5 misses (evicts 0); proposes [0,2]: 0 evicts 1, 2 finds no room.
        gate 2041; demand 5 waits for prefetch 4: 3037-4047; prefetch 0: 4047-5057. stall 2006, ends 4054
    cell 2 [0,2]: 0 hits a late prefetch, 2 misses (evicts 4); proposes [5,7]: 5 present (protected), 7 no room.
        gate 4061; demand 2: 5057-6067. stall 2006, ends 6074
    cell 3 [5,7]: 5 hits; 7 misses (evicts 0). gate 6081; copy 6081-7091; stall 1010; ends 7098
    """
    result = timed_replay(_trace(), _profile(),
                          TimedConfig(eviction="lru", prefetch="oracle:lookahead=1:cross_pass=true", capacity_bytes=3 * MB))
    cells = result.cells
    assert cells["stall_s"].tolist() == pytest.approx([2020 * US, 2006 * US, 2006 * US, 1010 * US], abs=1e-12)
    assert cells["end_s"].tolist() == pytest.approx([2034 * US, 4054 * US, 6074 * US, 7098 * US], abs=1e-12)
    assert cells["late_prefetch"].tolist() == [0, 1, 1, 0]
    assert cells["hits"].tolist() == [0, 0, 0, 1]
    assert cells["compulsory"].tolist() == [2, 1, 1, 1]
    assert cells["prefetch_copies"].tolist() == [1, 1, 0, 0]
    engine = result.engine
    plan = result.plan
    starts = dict(zip(plan.copy_obj.tolist(), (engine.copy_start / US).round(6).tolist()))
    assert plan.copy_obj.tolist() == [0, 1, 4, 5, 0, 2, 7]
    assert (engine.copy_start / US).round(6).tolist() == [7, 1017, 2027, 3037, 4047, 5057, 6081]
    assert starts[7] == 6081
    p = result.summary["prefetch"]
    assert (p["issued"], p["useful"], p["late"], p["wasted"]) == (2, 0, 2, 0)
    # the two late prefetches are not hits: 1 on-time hit (cell 3's object 5) of 8 lookups
    s = result.summary
    assert (s["hits"], s["late_prefetch"]) == (1, 2)
    assert s["hit_rate"] == pytest.approx(1 / 8) and s["hit_rate_incl_late"] == pytest.approx(3 / 8)
    assert s["hit_rate_per_access"] == pytest.approx(1 / 8)
    # prefetching one cell ahead beats demand fetching by 28 us here
    assert result.summary["time"]["total_s"] == pytest.approx(7098 * US, abs=1e-12)


def test_two_copy_engines_share_the_link():
    """2 engines on one 1 GB/s link: the two misses of a cell start together, wait their 10 us
    latencies side by side, then share the link at 0.5 GB/s each: both land at 10 + 2000 us (one
    engine: 1010 + 1010 = 2020 us). The old model gave each engine the full 1 GB/s (stall 1010 us).

    Capacity 8 objects: nothing is evicted, so cells 2 and 3 miss once each (1010 us);
    the run is 4 x (7 + 7) + 2 x 2010 + 2 x 1010 = 6096 us; the link is busy 6040 us of it.
    """
    result = timed_replay(_trace(), _profile(host_engines=2), TimedConfig(eviction="lru", capacity_bytes=8 * MB))
    assert result.cells["stall_s"].tolist() == pytest.approx([2010 * US, 2010 * US, 1010 * US, 1010 * US], abs=1e-12)
    assert result.summary["time"]["total_s"] == pytest.approx(6096 * US, abs=1e-12)
    assert result.summary["links"]["h2d"]["utilization"] == pytest.approx(6040 / 6096)


def test_pageable_host_memory_uses_the_pageable_bandwidth():
    """host_memory "pageable" with 0.5 GB/s: a copy takes 10 + 2000 us."""
    result = timed_replay(_trace(), _profile(pageable_bw=0.5e9, host_memory="pageable"),
                          TimedConfig(eviction="lru", capacity_bytes=8 * MB))
    assert result.cells["stall_s"].iloc[0] == pytest.approx(2 * 2010 * US, abs=1e-12)


def test_hit_only_cells_create_no_events():
    """With everything resident after the first pass, later passes cost no simpy events at all."""
    events = []
    for n_passes in (50, 500):
        trace = simple_trace([[[0, 1], [2, 3]]] * n_passes, n_layers=2, n_experts=4, object_bytes=MB, top_k=2)
        trace.meta.dense_bytes = [2 * MB, 2 * MB]
        trace.meta.model = None
        result = timed_replay(trace, _profile(), TimedConfig(eviction="lru", capacity_bytes=4 * MB, bounds=False))
        assert result.engine.event_cells == 2  # only the two cells of pass 0 copy anything
        assert result.summary["hits"] == 4 * (n_passes - 1)
        # compute-only passes: 2 cells x (7 + 7) us
        assert result.requests.iloc[0]["tpot_s"] == pytest.approx(28 * US, abs=1e-12)
        events.append(result.engine.events)
    assert events[0] == events[1]
