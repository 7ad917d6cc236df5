"""The cache core on its own: the protocol, the miss taxonomy, prefetch accounting, partitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.policies.base import PolicyContext
from moesim.policies.registry import available, parse_spec
from moesim.sim.cache_core import (
    HIT,
    IN_FLIGHT,
    LATE,
    MISS_CAPACITY,
    MISS_COLLISION,
    MISS_COMPULSORY,
    RESIDENT,
    CacheCore,
    CoreConfig,
)
from moesim.sim.count_replay import ReplayConfig, count_replay, make_core
from moesim.sim.requests import build_request_stream

EVICTION = [r.name for r in available("eviction")]


def _core(policy="lru", capacity=2, n_layers=1, n_experts=8, scope="global", layer_capacity=None, pinned=()):
    n = n_layers * n_experts
    ctx = PolicyContext(n_objects=n, n_layers=n_layers, n_experts=n_experts,
                        object_layer=np.repeat(np.arange(n_layers), n_experts), object_bytes=np.ones(n, np.int64))
    return CacheCore(CoreConfig(capacity, scope, layer_capacity, pinned), parse_spec(policy).build, ctx)


def test_miss_taxonomy_compulsory_collision_capacity():
    core = _core(capacity=1)
    core.begin_pass(0)
    assert core.serve_cell([0])[0] == [MISS_COMPULSORY]
    assert core.serve_cell([1])[0] == [MISS_COMPULSORY]   # evicts 0 in pass 0
    assert core.serve_cell([0])[0] == [MISS_COLLISION]    # 0 was evicted earlier in this pass
    core.begin_pass(1)
    assert core.serve_cell([1])[0] == [MISS_CAPACITY]     # 1 was evicted in pass 0
    assert core.serve_cell([1])[0] == [HIT]


def test_prefetch_accounting_useful_late_wasted():
    core = _core(capacity=3)
    core.begin_pass(0)
    assert core.prefetch(0) == [] and core.prefetch(1) == [] and core.prefetch(2) == []
    core.fill(0)
    assert core.prefetch(0) is None  # already present
    assert core.begin_cell([0, 1]) == [HIT, LATE]  # 1 is still in flight: a late prefetch
    assert core.classify(2) == LATE
    core.end_cell([0, 1])
    core.fill(1)
    core.fill(2)
    core.serve_cell([3])  # evicts 2 (LRU, never used): wasted
    core.finish()
    c = core.counters
    assert (c.prefetch_issued, c.prefetch_useful, c.prefetch_late, c.prefetch_wasted) == (3, 1, 1, 1)
    assert c.prefetch_bytes == 3
    # a prefetched object demanded only after eviction is still a compulsory miss (first demand)
    assert core.classify(2) == MISS_COMPULSORY


def test_a_prefetch_never_evicts_protected_objects():
    core = _core(capacity=2)
    core.begin_pass(0)
    core.serve_cell([0])
    core.serve_cell([1])
    core.begin_cell([0, 1])
    assert core.prefetch(5) is None
    assert core.counters.bypasses == 0  # a refused prefetch is not a bypassed miss
    core.end_cell([0, 1])
    assert core.prefetch(5) == [0]


def test_layer_scope_splits_capacity_evenly_or_by_table():
    core = _core(capacity=7, n_layers=2, n_experts=4, scope="layer")
    assert core.capacity == [3, 3]
    core = _core(capacity=0, n_layers=2, n_experts=4, scope="layer", layer_capacity=[1, 3])
    assert core.capacity == [1, 3]
    core.begin_pass(0)
    core.serve_cell([4, 5, 6])          # layer 1 holds three
    core.serve_cell([0])
    core.serve_cell([1])                # layer 0 holds one: 1 evicts 0, layer 1 untouched
    assert [o for o in range(8) if core.state[o] == RESIDENT] == [1, 4, 5, 6]
    with pytest.raises(UserError, match="3 entries for 2 layers"):
        _core(n_layers=2, n_experts=4, scope="layer", layer_capacity=[1, 1, 1])
    with pytest.raises(UserError, match="scope must be one of"):
        _core(scope="device")


def test_configured_pins_take_capacity_first_and_must_fit():
    core = _core(capacity=2, pinned=(3,))
    assert core.state[3] == RESIDENT and core.used == [1]
    core.begin_pass(0)
    core.serve_cell([0])
    core.serve_cell([1])  # only one free slot: 1 evicts 0, never 3
    assert core.state[3] == RESIDENT and core.state[0] != RESIDENT
    with pytest.raises(UserError, match="do not fit"):
        _core(capacity=1, pinned=(0, 1))
    with pytest.raises(UserError, match="outside"):
        _core(capacity=1, pinned=(99,))


def test_an_object_larger_than_its_partition_streams_through():
    ctx = PolicyContext(n_objects=2, n_layers=1, n_experts=2, object_layer=np.zeros(2, int),
                        object_bytes=np.array([1, 5]))
    core = CacheCore(CoreConfig(3), parse_spec("lru").build, ctx)
    core.begin_pass(0)
    core.serve_cell([0])
    outcomes, bypassed = core.serve_cell([1])
    assert outcomes == [MISS_COMPULSORY] and list(bypassed) == [0]
    assert core.state[0] == RESIDENT and core.counters.bypasses == 1


def _drive_by_hand(trace, policy, capacity, mode, scope):
    """The four protocol calls, one by one, as the timing engine makes them."""
    stream = build_request_stream(trace, mode)
    core, spec, future = make_core(trace, ReplayConfig(policy=policy, capacity_bytes=capacity, mode=mode,
                                                       scope=scope), stream)
    objs = stream.obj.tolist()
    outcomes, victims = [], []
    offsets = stream.cell_offsets.tolist()
    pass_cells = trace.pass_cell_offsets.tolist()
    for p in range(trace.n_passes):
        core.begin_pass(p, now=float(p))
        for c in range(pass_cells[p], pass_cells[p + 1]):
            lo, hi = offsets[c], offsets[c + 1]
            units = [(i, i + 1) for i in range(lo, hi)] if mode == "sequential" else [(lo, hi)]
            for a, b in units:
                if future is not None:
                    future.position = b - 1
                cell = objs[a:b]
                outs = core.begin_cell(cell, now=float(p))
                for k, (obj, out) in enumerate(zip(cell, outs)):
                    if out >= MISS_COMPULSORY:
                        got = core.admit(obj, now=float(p))
                        if got is not None:
                            assert core.state[obj] == IN_FLIGHT
                            core.fill(obj, now=float(p))
                            victims += [(a + k, v) for v in got]
                core.end_cell(cell, now=float(p))
                outcomes += outs
    core.finish()
    return outcomes, victims, core


@pytest.mark.parametrize("policy", EVICTION)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_serve_cell_gives_what_the_protocol_calls_give(policy, traces, data):
    trace = data.draw(traces())
    n = trace.n_objects
    for mode in ("event", "sequential"):
        for scope, capacity in (("global", max(3, n // 2)), ("layer", trace.meta.n_layers * 3)):
            fast = count_replay(trace, ReplayConfig(policy=policy, capacity_bytes=capacity, mode=mode, scope=scope),
                                record_victims=True)
            outcomes, victims, core = _drive_by_hand(trace, policy, capacity, mode, scope)
            assert fast.outcomes.tolist() == outcomes
            assert fast.victims == victims
            assert fast.counters == core.counters
            assert bytes(fast.core.state) == bytes(core.state)
