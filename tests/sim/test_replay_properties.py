"""Properties of the count replay that hold for every trace (hypothesis), with independent references:
distinct-object counts from numpy, Belady's optimality, and the documented event/sequential gap."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.policies.registry import available
from moesim.sim import metrics
from moesim.sim.cache_core import HIT, MISS_COMPULSORY
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.requests import build_request_stream

EVICTION = [r.name for r in available("eviction")]
# static-hot preloads its pins before the first request, so it starts warm: it is outside the
# properties that assume demand fetching from an empty cache.
DEMAND = [name for name in EVICTION if name != "static-hot"]
BELADY = ("belady", "belady-bypass")
EXAMPLES = int(os.environ.get("MOESIM_HYPOTHESIS_EXAMPLES", "40"))
MODES = ("event", "sequential")


def _run(trace, policy, capacity, mode="event", scope="global", record=False):
    return count_replay(trace, ReplayConfig(policy=policy, capacity_bytes=capacity, mode=mode, scope=scope),
                        record_victims=record)


def _max_cell_objects(trace):
    stream = build_request_stream(trace, "event")
    return int(np.diff(stream.cell_offsets).max(initial=1))


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_requests_split_exactly_into_hits_and_misses_everywhere(traces, data):
    trace = data.draw(traces())
    policy = data.draw(st.sampled_from(EVICTION))
    mode = data.draw(st.sampled_from(MODES))
    scope = data.draw(st.sampled_from(("global", "layer")))
    capacity = data.draw(st.integers(1, trace.n_objects + 1))
    result = _run(trace, policy, capacity, mode, scope)
    s = metrics.summary(result)
    expected_requests = trace.n_accesses if mode == "sequential" else len({(c, o) for c, o in zip(
        trace.access_cell().tolist(), trace.object_ids().tolist())})
    assert s["requests"] == expected_requests
    assert s["hits"] + s["late_prefetch"] + s["misses"] == s["requests"]
    assert s["compulsory"] + s["capacity"] + s["collision"] == s["misses"]
    for table in (metrics.by_layer(result), metrics.by_pass(result)):
        for column in ("requests", "hits", "misses", "compulsory", "capacity", "collision", "bytes_fetched"):
            assert int(table[column].sum()) == s[column]
    phases = s["by_phase"]
    assert phases["prefill"]["requests"] + phases["decode"]["requests"] == s["requests"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_compulsory_misses_are_the_distinct_objects_whatever_the_policy(traces, data):
    trace = data.draw(traces())
    mode = data.draw(st.sampled_from(MODES))
    capacity = data.draw(st.integers(1, trace.n_objects))
    distinct = np.unique(trace.object_ids()).size
    for policy in DEMAND:
        result = _run(trace, policy, capacity, mode)
        assert int((result.outcomes == MISS_COMPULSORY).sum()) == distinct, policy


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_room_for_every_object_leaves_only_compulsory_misses(traces, data):
    trace = data.draw(traces())
    mode = data.draw(st.sampled_from(MODES))
    scope = data.draw(st.sampled_from(("global", "layer")))
    distinct = np.unique(trace.object_ids()).size
    for policy in DEMAND:
        result = _run(trace, policy, trace.n_objects, mode, scope)  # unit sizes: every object fits
        misses = result.outcomes >= MISS_COMPULSORY
        assert int(misses.sum()) == distinct == int((result.outcomes == MISS_COMPULSORY).sum()), policy
        assert result.counters.evictions == 0 and result.counters.bypasses == 0


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_belady_never_misses_more_than_any_policy(traces, data):
    trace = data.draw(traces())
    mode = data.draw(st.sampled_from(MODES))
    # every cell's objects must fit together, or admissions fail and no policy is comparable
    low = _max_cell_objects(trace) if mode == "event" else 1
    capacity = data.draw(st.integers(low, max(low, trace.n_objects)))
    misses = {p: int((_run(trace, p, capacity, mode).outcomes >= MISS_COMPULSORY).sum()) for p in DEMAND}
    # every other policy caches every miss it can, so forced-admit MIN bounds them; bypass can
    # only do better still
    for bound in BELADY:
        for policy, count in misses.items():
            if policy not in BELADY:
                assert misses[bound] <= count, (bound, policy, misses)
    assert misses["belady-bypass"] <= misses["belady"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_least_stale_equals_lru_in_single_sequence_decode_without_prefetch(traces, data):
    # every object is touched at most once per pass, so "stale first, FIFO" is last-use order
    trace = data.draw(traces(single_token=True))
    mode = data.draw(st.sampled_from(MODES))
    capacity = data.draw(st.integers(1, trace.n_objects))
    lru = _run(trace, "lru", capacity, mode, record=True)
    ls = _run(trace, "least-stale", capacity, mode, record=True)
    assert np.array_equal(lru.outcomes, ls.outcomes)
    assert lru.victims == ls.victims


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_least_stale_equals_lru_in_event_replay_even_with_multi_token_passes(traces, data):
    # event replay requests an object once per cell and a pass has one cell per layer, so again no
    # object is touched twice in a pass: without prefetch the two policies cannot differ
    trace = data.draw(traces())
    capacity = data.draw(st.integers(_max_cell_objects(trace), max(_max_cell_objects(trace), trace.n_objects)))
    assert np.array_equal(_run(trace, "lru", capacity).outcomes, _run(trace, "least-stale", capacity).outcomes)


@settings(max_examples=EXAMPLES, deadline=None)
@given(data=st.data())
def test_event_and_sequential_replay_differ_only_in_the_documented_ways(traces, data):
    trace = data.draw(traces())
    policy = data.draw(st.sampled_from(DEMAND))
    capacity = data.draw(st.integers(_max_cell_objects(trace), max(_max_cell_objects(trace), trace.n_objects)))
    event = _run(trace, policy, capacity, "event", record=True)
    seq = _run(trace, policy, capacity, "sequential", record=True)
    # 1. same first requests: the compulsory misses are the same objects
    assert int((event.outcomes == MISS_COMPULSORY).sum()) == int((seq.outcomes == MISS_COMPULSORY).sum())
    # 2. event mode never evicts an object of the cell being served; its requests are the cell's
    #    distinct objects, and a repeated routing inside a cell is served by the same request
    stream = event.stream
    for request, victim in event.victims:
        cell = stream.cell[request]
        assert victim not in stream.obj[stream.cell_offsets[cell]:stream.cell_offsets[cell + 1]].tolist()
    assert np.array_equal(stream.obj[stream.access_request], trace.object_ids())
    # 3. where every cell holds one access, the two modes are the same replay
    if (np.diff(trace.cell_offsets) == 1).all():
        assert np.array_equal(event.outcomes, seq.outcomes)


def test_sequential_replay_lets_a_cell_evict_its_own_experts():
    # The documented difference, by hand: capacity 2, one layer; pass 0 routes a, b; pass 1 routes
    # the prefill-like cell [c, a] (one token, top-2).  Event: a is classified at the cell start
    # (hit) and protected, c evicts b.  Sequential: c comes first and evicts a (LRU), then a misses
    # (a collision: evicted earlier in the same pass).
    from moesim.traces.format.build import simple_trace

    trace = simple_trace([[[0, 1]], [[2, 0]]], n_layers=1, n_experts=4, top_k=2)
    assert _run(trace, "lru", 2, "event").outcomes.tolist() == [2, 2, 2, HIT]
    assert _run(trace, "lru", 2, "sequential").outcomes.tolist() == [2, 2, 2, 4]


@pytest.mark.parametrize("policy", EVICTION)
def test_capacity_in_bytes_counts_object_sizes(policy):
    # two layers with 1-byte and 3-byte objects; 4 bytes hold one of each, not four small ones
    from moesim.traces.format.build import simple_trace

    trace = simple_trace([[[0], [0]], [[1], [0]], [[0], [0]]], n_layers=2, n_experts=2, object_bytes=[1, 3])
    result = _run(trace, policy, 4)
    assert result.core.used_bytes() <= 4
    assert int(metrics.summary(result)["bytes_fetched"]) == sum(
        int(trace.object_bytes_array()[o]) for o, out in zip(result.stream.obj, result.outcomes) if out >= 2)


def test_hit_rate_per_lookup_and_per_routed_access_by_hand():
    """A 3-token prefill routes all three tokens to expert 0 (one lookup, three accesses: a compulsory
    miss), then one decode token hits it (one lookup, one access). Per lookup 1 of 2 hit; per routed
    access 1 of 4."""
    from moesim.traces.format.trace_meta import PREFILL
    from moesim.traces.format.build import simple_trace

    trace = simple_trace([[[0, 0, 0]], [[0]]], n_layers=1, n_experts=2, top_k=1, phases=[PREFILL, 1])
    s = metrics.summary(_run(trace, "lru", 2))
    assert (s["requests"], s["hits"], s["routed_accesses"]) == (2, 1, 4)
    assert s["hit_rate"] == pytest.approx(1 / 2)
    assert s["hit_rate_per_access"] == pytest.approx(1 / 4)
