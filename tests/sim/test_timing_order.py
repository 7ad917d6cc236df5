"""Copy ordering and slot hazards, timed by hand: demand before prefetch, write-after-read on a
DRAM slot, cancelling a prefetch whose slot was reused, and the SSD queue depth.

A scripted prefetcher (test-only) proposes fixed objects at fixed cells. Objects are 1 MB; a host
copy takes 10 us + 1 MB / 1 GB/s = 1010 us. A cell's dense part takes 5 us launch + 2 MB / 1 TB/s = 7 us,
its expert part 5 us + 1 us per object it runs (1 MB / 1 TB/s).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from moesim.policies import registry
from moesim.policies.base import PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.eviction.lru import LRU
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.build import simple_trace

from timing_helpers import make_profile

US = 1e-6
MB = 1_000_000


class ScriptedPrefetch(PrefetchPolicy):
    """Proposes `script[cell]` (in order, first = highest priority) when that cell starts."""

    script: ClassVar[dict[int, list[int]]] = {}

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        return [PrefetchRequest(obj, -float(i)) for i, obj in enumerate(self.script.get(view.cell, []))]


@pytest.fixture
def script(monkeypatch):
    """The scripted policy, registered only while a test runs: registered at import, it would join the
    registry-generated contract tests of whatever module is collected after this one."""
    monkeypatch.setitem(registry._REGISTRY, ("prefetch", "scripted-test"),
                        registry.Registered(name="scripted-test", kind="prefetch", cls=ScriptedPrefetch))
    yield ScriptedPrefetch.script
    ScriptedPrefetch.script = {}


def _trace(cells: list[list[int]], n_layers: int = 1, n_experts: int = 8):
    """One cell per pass when n_layers = 1; each cell is one token routed to the listed experts."""
    per_pass = [cells[i : i + n_layers] for i in range(0, len(cells), n_layers)]
    trace = simple_trace(per_pass, n_layers=n_layers, n_experts=n_experts, object_bytes=MB)
    trace.meta.dense_bytes = [2 * MB] * n_layers
    trace.meta.model = None
    return trace


def _profile(**kw):
    base = dict(host_bw=1e9, host_latency=10 * US, memory_bandwidth=1e12, peak_flops=1e15, launch=5 * US)
    base.update(kw)
    return make_profile(**base)


def _start_us(result, obj: int) -> float:
    k = int(np.flatnonzero(result.plan.copy_obj == obj)[0])
    return float(result.engine.copy_start[k] / US)


def test_a_demand_copy_overtakes_queued_prefetch_copies(script):
    """Layers 0, 1, 2 need experts 0, 1, 2 (objects 0, 9, 18). Cell 0 also prefetches objects 21, 22.

    gate 0 at 7: demand 0 runs 7-1017, prefetch 21 1017-2027, prefetch 22 waits in the queue.
    cell 0 ends 1017 + 6 = 1023; cell 1's gate at 1030 issues demand 9: it runs next, 2027-3037,
    ahead of 22 (3037-4047). Cell 1 stalls 3037 - 1030 = 2007 us.
    """
    script[0] = [21, 22]
    trace = _trace([[0], [1], [2]], n_layers=3)
    result = timed_replay(trace, _profile(), TimedConfig(prefetch="scripted-test", capacity_bytes=8 * MB))
    assert _start_us(result, 0) == pytest.approx(7)
    assert _start_us(result, 21) == pytest.approx(1017)
    assert _start_us(result, 9) == pytest.approx(2027)
    assert _start_us(result, 22) == pytest.approx(3037)
    assert result.cells["stall_s"].iloc[1] == pytest.approx(2007 * US, abs=1e-12)


def test_a_dram_slot_is_not_overwritten_before_its_reader_copy_ends(script):
    """DRAM holds one object and caches an SSD (0.5 GB/s, one slot: a read takes 2000 us).

    cell 0 needs object 0: ssd->dram a1 7-2007, then h2d a2 2007-3017 (it reads 0's DRAM slot).
    The cell also prefetches object 2: DRAM must evict 0, so the ssd->dram copy b1 may start only
    when a2 has read the slot (3017), although the SSD is free from 2007. Then h2d b2 5017-6027.
    """
    script[0] = [2]
    trace = _trace([[0], [1]], n_experts=4)
    profile = _profile(dram=1 * MB, ssd_bw=0.5e9)
    result = timed_replay(trace, profile, TimedConfig(prefetch="scripted-test", capacity_bytes=8 * MB))
    plan, engine = result.plan, result.engine
    assert result.summary["topology"]["home"] == "ssd"
    routes = plan.copy_route.tolist()[:4]
    assert plan.copy_obj.tolist()[:4] == [0, 0, 2, 2]
    assert routes == [1, 0, 1, 0]  # ssd->dram, dram->vram, ssd->dram, dram->vram
    start = (engine.copy_start[:4] / US).round(6).tolist()
    end = (engine.copy_end[:4] / US).round(6).tolist()
    assert start == [7, 2007, 3017, 5017]
    assert end == [2007, 3017, 5017, 6027]
    assert result.cells["stall_s"].iloc[0] == pytest.approx(3010 * US, abs=1e-12)
    # DRAM sees 0 (demand), 2 (prefetch, evicting 0) and 1 (cell 1, evicting 2)
    assert result.summary["dram"] == {"requests": 3, "hits": 0, "misses": 3, "evictions": 2}


def test_a_prefetch_whose_slot_is_reused_before_it_starts_is_cancelled_when_asked(script):
    """Capacity 3. Cell 0 needs 0 and prefetches 5 then 6; cell 1 needs 0, 5 and 1.

    gate 0 at 7: demand 0 7-1017, prefetch 5 1017-2027, prefetch 6 queued; cell 0 ends 1023. Cell 1
    (gate 1030): 0 and 5 hit (5 late), 1 misses and the only evictable object is 6, whose copy has not
    started: with cancel_unstarted it is cancelled and never moves a byte. Demand 1 runs 2027-3037;
    cell 1 stalls 2007 us.
    """
    script[0] = [5, 6]
    trace = _trace([[0], [0, 5, 1]])
    result = timed_replay(trace, _profile(), TimedConfig(prefetch="scripted-test", capacity_bytes=3 * MB,
                                                         cancel_unstarted=True))
    plan, engine = result.plan, result.engine
    assert plan.copy_obj.tolist() == [0, 5, 6, 1]
    assert engine.copy_cancelled.tolist() == [False, False, True, False]
    assert _start_us(result, 1) == pytest.approx(2027)
    assert result.cells["stall_s"].iloc[1] == pytest.approx((3037 - 1030) * US, abs=1e-12)
    p = result.summary["prefetch"]
    assert (p["issued"], p["late"], p["wasted"], p["cancelled"]) == (2, 1, 1, 1)
    assert result.summary["links"]["h2d"]["bytes"] == 3 * MB


def test_by_default_an_issued_prefetch_runs_and_the_copy_reusing_its_slot_waits(script):
    """The same cells without cancel_unstarted: an issued copy runs (as on a CUDA stream).

    Prefetch 6 runs 2027-3037 after prefetch 5; demand 1 reuses 6's slot, so it waits for it
    (write-after-write) and runs 3037-4047; cell 1 stalls 4047 - 1030 us. Four copies move 4 MB.
    """
    script[0] = [5, 6]
    trace = _trace([[0], [0, 5, 1]])
    result = timed_replay(trace, _profile(), TimedConfig(prefetch="scripted-test", capacity_bytes=3 * MB))
    plan, engine = result.plan, result.engine
    assert plan.copy_obj.tolist() == [0, 5, 6, 1]
    assert not engine.copy_cancelled.any()
    assert (engine.copy_start / US).round(6).tolist() == [7, 1017, 2027, 3037]
    assert result.cells["stall_s"].iloc[1] == pytest.approx((4047 - 1030) * US, abs=1e-12)
    p = result.summary["prefetch"]
    assert (p["issued"], p["late"], p["wasted"], p["cancelled"]) == (2, 1, 1, 0)
    assert result.summary["links"]["h2d"]["bytes"] == 4 * MB


def test_a_running_copy_into_a_reused_slot_delays_the_new_copy(script):
    """Capacity 2. Cell 0 needs 0 and prefetches 5 (runs 1017-2027); cell 1 needs 0 and 1.

    1 misses at gate 1030 and evicts 5 (0 is in use), whose copy is running: the copy of 1 may
    only write the slot when 5's copy is done (write-after-write): 2027-3037.
    """
    script[0] = [5]
    trace = _trace([[0], [0, 1]])
    result = timed_replay(trace, _profile(), TimedConfig(prefetch="scripted-test", capacity_bytes=2 * MB))
    assert result.engine.copy_cancelled.tolist() == [False, False, False]
    assert _start_us(result, 1) == pytest.approx(2027)


@pytest.mark.parametrize("queue_depth, stall_us", [(1, 3 * 1100), (2, 2 * 2100), (3, 3100)])
def test_ssd_reads_share_the_queue_depth(queue_depth, stall_us):
    """Unified memory reading from flash at 1 GB/s with 100 us per read; a cell misses 3 objects.

    Each of q slots reads at 1 GB/s / q: q=1: three reads of 100 + 1000 us in a row (3300 us);
    q=2: two reads of 100 + 2000 us side by side, then the third (4200 us); q=3: 100 + 3000 us.
    """
    trace = _trace([[0, 1, 2]])
    profile = _profile(unified=True, ssd_bw=1e9, ssd_latency=100 * US, ssd_queue=queue_depth)
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB))
    assert result.summary["topology"]["home"] == "ssd"
    assert result.cells["stall_s"].iloc[0] == pytest.approx(stall_us * US, abs=1e-12)
    assert result.summary["links"]["ssd_h"]["bytes"] == 3 * MB


def test_gpudirect_storage_reads_straight_into_vram():
    """With an ssd_d link and a DRAM too small for every object, copies skip DRAM."""
    trace = _trace([[0, 1]])
    profile = _profile(dram=1 * MB, ssd_bw=2e9, ssd_link="ssd_d")
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=8 * MB))
    topology = result.summary["topology"]
    assert (topology["home"], topology["stage"], topology["ssd_link"]) == ("ssd", None, "ssd_d")
    assert topology["routes"] == {"1": "ssd_d", "2": "ssd_d"}  # no CPU processor: host reads use ssd_d too
    assert result.plan.copy_route.tolist() == [2, 2]
    # one slot at 2 GB/s: 500 us per read, two in a row
    assert result.cells["stall_s"].iloc[0] == pytest.approx(1000 * US, abs=1e-12)


class PinZero(LRU):
    """LRU that pins object 0 (a stand-in for static hot pinning)."""

    def pinned_objects(self) -> list[int]:
        return [0]


@pytest.fixture
def pin_zero_registered(monkeypatch):
    """Registers PinZero for one test only, so the registry's contract tests never see it."""
    registry._ensure_loaded()
    monkeypatch.setitem(registry._REGISTRY, ("eviction", "pin-zero-test"),
                        registry.Registered(name="pin-zero-test", kind="eviction", cls=PinZero))


def test_pinned_objects_are_loaded_before_the_first_cell(pin_zero_registered):
    """Pinned object 0 is copied at t = 0 (0-1010 us): cell 0 hits it but waits 1010 - 7 us for it.
    Cell 1 misses 1: gate 1016 + 7 = 1023, copy 1023-2033, ends 2039."""
    result = timed_replay(_trace([[0], [1]]), _profile(), TimedConfig(eviction="pin-zero-test", capacity_bytes=2 * MB))
    assert result.plan.n_setup_copies == 1
    assert result.plan.copy_cell.tolist() == [-1, 1]
    assert result.cells["hits"].tolist() == [1, 0]
    assert result.cells["stall_s"].tolist() == pytest.approx([1003 * US, 1010 * US], abs=1e-12)
    assert result.summary["time"]["total_s"] == pytest.approx(2039 * US, abs=1e-12)
    assert result.summary["links"]["h2d"]["bytes"] == 2 * MB


def test_chip_to_chip_is_the_host_link_when_present():
    """GH200-style: copies take "c2c" (here 100 GB/s: 10 us + 10 us per 1 MB object)."""
    result = timed_replay(_trace([[0, 1]]), _profile(host_link="c2c", host_bw=100e9),
                          TimedConfig(capacity_bytes=8 * MB))
    assert result.summary["topology"]["host_link"] == "c2c"
    assert result.summary["links"]["c2c"]["bytes"] == 2 * MB
    assert result.cells["stall_s"].iloc[0] == pytest.approx(40 * US, abs=1e-12)


@pytest.mark.parametrize("kw, config, message", [
    ({}, TimedConfig(capacity_bytes=200 * 10**9), "usable vram"),
    ({"unified": True}, TimedConfig(capacity_bytes=MB), "no link into the cache tier"),
    ({}, TimedConfig(capacity_bytes=MB, scope="rack"), "scope"),
    ({}, TimedConfig(capacity_bytes=MB, prefetch="oracle:lookahead=0"), "lookahead"),
    ({}, TimedConfig(capacity_bytes=MB, eviction="nosuch"), "unknown eviction policy"),
])
def test_impossible_settings_are_user_errors(kw, config, message):
    from moesim.errors import UserError

    with pytest.raises(UserError, match=message):
        timed_replay(_trace([[0]]), _profile(**kw), config)
