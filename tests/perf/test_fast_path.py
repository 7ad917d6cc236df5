"""The compiled count replay against the reference one, request for request.

The reference is the Python planner (no topology) with the Python policy objects (itself checked against the
protocol driven by hand and against libCacheSim in tests/sim and tests/policies). Every covered
policy is compared over hypothesis traces with unequal object sizes, multi-token cells (repeated
experts), empty cells, both scopes and both replay modes: outcomes (so miss kinds), bypasses,
victims in order, counters, bytes, the request stream, the final core and the final policy state,
and what the two cores do with further requests.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.policies.compiled import compiled_form
from moesim.policies.registry import available
from moesim.sim import fast, metrics
from moesim.sim.fast import build
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.requests import DeferredRequestStream, build_request_stream
from moesim.traces.format.build import simple_trace

from fast_helpers import assert_same_core, sized_traces

pytestmark = pytest.mark.skipif(build.library() is None,
                                reason=f"compiled replay unavailable: {build.unavailable_reason()}")

# every registered eviction policy whose module declares a compiled form (nothing to edit when one
# is added), plus parameter variants the defaults do not reach
FAST_SPECS = fast.compiled_policies() + ["lfu:decay=0.5", "static-hot:profile_passes=2:share=0.7",
                                         "slru:protected_share=0.3", "lru-ds:protect=1", "moe-infinity:decay=0.5"]
EXAMPLES = int(os.environ.get("MOESIM_HYPOTHESIS_EXAMPLES", "25"))


def assert_same(fast_result, ref):
    assert (fast_result.engine, ref.engine) == ("fast", "reference")
    assert fast_result.outcomes.dtype == ref.outcomes.dtype
    assert fast_result.outcomes.tolist() == ref.outcomes.tolist()
    assert fast_result.bypassed.tolist() == ref.bypassed.tolist()
    assert fast_result.victims == ref.victims
    assert fast_result.counters == ref.counters
    assert fast_result.capacities == ref.capacities
    assert metrics.summary(fast_result) == metrics.summary(ref)  # bytes fetched, miss kinds, phases
    fs, rs = fast_result.stream, ref.stream
    assert fs.n_requests == rs.n_requests
    for name in ("cell_offsets", "obj", "cell", "accesses", "access_request"):
        assert getattr(fs, name).tolist() == getattr(rs, name).tolist(), name
    assert_same_core(fast_result.core, ref.core)


def serve_more(core, cells, first_pass):
    """Keep serving cells (lists of object ids) through a core, one pass per cell."""
    log = []
    for i, cell in enumerate(cells):
        core.begin_pass(first_pass + i)
        victims: list[tuple[int, int]] = []
        outcomes, bypassed = core.serve_cell(cell, 0.0, victims)
        log.append((outcomes, list(bypassed), victims))
    return log


@pytest.mark.parametrize("policy", FAST_SPECS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(trace=sized_traces(), data=st.data())
def test_fast_replay_equals_the_reference(policy, trace, data):
    total = int(trace.object_bytes_array().sum())
    capacity = data.draw(st.integers(0, total + 2), label="capacity")
    weights = data.draw(st.none() | st.lists(st.integers(0, 4), min_size=trace.meta.n_layers,
                                             max_size=trace.meta.n_layers), label="layer capacities")
    for mode in ("event", "sequential"):
        for scope in ("global", "layer"):
            layer_capacity = tuple(weights) if scope == "layer" and weights is not None else None
            cfg = ReplayConfig(policy=policy, capacity_bytes=capacity, mode=mode, scope=scope,
                               layer_capacity=layer_capacity)
            got = count_replay(trace, cfg, record_victims=True, engine="fast")
            ref = count_replay(trace, cfg, record_victims=True, engine="reference")
            assert_same(got, ref)
            # the restored policy state behaves like the reference's on requests that come later
            rng = np.random.default_rng(capacity)
            more = [sorted(set(rng.integers(0, trace.n_objects, size=3).tolist())) for _ in range(4)]
            assert serve_more(got.core, more, trace.n_passes) == serve_more(ref.core, more, trace.n_passes)


@pytest.mark.parametrize("policy", ["lfu", "moe-infinity"])
@pytest.mark.parametrize("decay", [0.1, 0.5])
def test_decay_renormalisation_matches(policy, decay):
    # unit grows by 1/decay per pass and is renormalised past 1e100: after ~100 passes at 0.1 and
    # ~332 at 0.5; 400 passes cross it, with ties from rounding that the kernel must re-heap
    rng = np.random.default_rng(3)
    passes = [[rng.choice(6, 2, replace=False).tolist(), rng.choice(6, 2, replace=False).tolist()]
              for _ in range(400)]
    trace = simple_trace(passes, n_layers=2, n_experts=6, object_bytes=[1, 2], top_k=2)
    for scope in ("global", "layer"):
        cfg = ReplayConfig(policy=f"{policy}:decay={decay}", capacity_bytes=9, scope=scope)
        assert_same(count_replay(trace, cfg, record_victims=True, engine="fast"),
                    count_replay(trace, cfg, record_victims=True, engine="reference"))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_random_draws_past_a_block_of_uniforms_match(scope):
    # the reference draws uniforms 4096 at a time; past the first block the restored generator
    # must stand where blocks would leave it (bit_generator.advance), with the rest queued
    rng = np.random.default_rng(5)
    passes = [[rng.choice(8, 3, replace=False).tolist() for _ in range(3)] for _ in range(3000)]
    trace = simple_trace(passes, n_layers=3, n_experts=8, top_k=3)
    cfg = ReplayConfig(policy="random", capacity_bytes=12, scope=scope, seed=11)
    got = count_replay(trace, cfg, record_victims=True, engine="fast")
    assert sum(len(p._uniforms) for p in got.core.policies) > 0
    assert_same(got, count_replay(trace, cfg, record_victims=True, engine="reference"))
    assert got.counters.evictions > 4096


def test_auto_picks_fast_for_covered_policies_and_reference_otherwise(monkeypatch):
    monkeypatch.delenv(fast.ENV_VAR, raising=False)
    trace = simple_trace([[[0, 1]], [[2, 0]]], n_layers=1, n_experts=4, top_k=2)
    for entry in available("eviction"):
        result = count_replay(trace, ReplayConfig(policy=entry.name, capacity_bytes=2))
        assert result.engine == ("fast" if compiled_form(entry.cls) is not None else "reference"), entry.name
    # the list: these ran on the reference path before they had compiled forms
    assert {"arc", "slru", "lru-ds", "moe-infinity", "random"} <= set(fast.compiled_policies())


def test_fast_replay_builds_no_per_request_arrays():
    # the memory target: outcomes and bypass flags are the only per-request arrays; the stream's
    # arrays (8-16 bytes per request) and Belady's future index are built only when read
    trace = simple_trace([[[0, 1], [2, 3]]] * 50, n_layers=2, n_experts=4, top_k=2)
    for policy in ("lru", "belady"):
        result = count_replay(trace, ReplayConfig(policy=policy, capacity_bytes=3), engine="fast")
        assert isinstance(result.stream, DeferredRequestStream)
        assert "_built" not in vars(result.stream)
        assert result.stream.cell_offsets is trace.cell_offsets  # no repeated experts: shared, not copied
        metrics.summary(result), metrics.by_layer(result), metrics.by_pass(result)
        assert "_built" not in vars(result.stream)  # the metrics walk chunks built from the trace
        assert result.stream.obj.tolist() == build_request_stream(trace, "event").obj.tolist()


def test_fast_replay_memory_is_two_bytes_per_request():
    import tracemalloc

    rng = np.random.default_rng(0)
    passes = [[rng.choice(16, 4, replace=False).tolist() for _ in range(4)] for _ in range(20_000)]
    trace = simple_trace(passes, n_layers=4, n_experts=16, top_k=4)
    cfg = ReplayConfig(policy="lru", capacity_bytes=20)
    count_replay(trace, cfg, engine="fast")  # load the library first
    tracemalloc.start()
    result = count_replay(trace, cfg, engine="fast")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = result.stream.n_requests
    assert n == trace.n_accesses == 320_000
    # int8 outcomes + bool bypass flags, plus O(objects); the reference needs ~30x that
    assert peak < 2 * n + 256 * 1024, peak


def test_a_bad_object_id_is_a_user_error_naming_the_access():
    from moesim.errors import UserError

    trace = simple_trace([[[0, 1]], [[2, 3]]], n_layers=1, n_experts=4, top_k=2)
    trace.expert[3] = 9  # past n_experts, as an unvalidated file could hold
    with pytest.raises(UserError, match="access 3"):
        count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=2), engine="fast")


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_lfu_with_every_object_resident_and_every_count_different(scope):
    # each object alone at its count: a count-bucket LFU needs one bucket more than it has objects
    # for the moment an access moves one up; hits only, so the order is all that is compared
    # after six passes the counts are 1, 2, 3 (three buckets for three objects); then 2 goes to 4
    passes = [[[0]], [[1]], [[1]], [[2]], [[2]], [[2]], [[2]], [[0]], [[1]], [[2]], [[0]], [[0]], [[0]]]
    trace = simple_trace(passes, n_layers=1, n_experts=3)
    for capacity in (3, 2):
        cfg = ReplayConfig(policy="lfu", capacity_bytes=capacity, scope=scope)
        assert_same(count_replay(trace, cfg, record_victims=True, engine="fast"),
                    count_replay(trace, cfg, record_victims=True, engine="reference"))


def test_offsets_out_of_order_are_a_user_error_not_a_crash():
    from moesim.errors import UserError

    trace = simple_trace([[[0, 1]], [[2, 3]], [[1, 2]]], n_layers=1, n_experts=4, top_k=2)
    trace.cell_offsets[1] = 5  # past the next cell's start: an unvalidated file could hold this
    with pytest.raises(UserError, match="offsets decrease at index 1"):
        count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=2), engine="fast")
    trace = simple_trace([[[0, 1]], [[2, 3]]], n_layers=1, n_experts=4, top_k=2)
    trace.cell_offsets[-1] = 99
    with pytest.raises(UserError, match="must run from 0"):
        count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=2), engine="fast")


@settings(max_examples=EXAMPLES, deadline=None)
@given(trace=sized_traces())
def test_compiled_request_stream_equals_the_numpy_one(trace):
    from moesim.sim.requests import event_stream_numpy

    got, want = build_request_stream(trace, "event"), event_stream_numpy(trace)
    for name in ("obj", "cell", "cell_offsets", "accesses", "access_request"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        assert a.tolist() == b.tolist(), name
