"""Bounds hold for every policy on every profile (hypothesis over small synthetic traces).

Object sizes are equal across layers here: Belady's optimality on every prefix, which the time
bound rests on, is exact only then (docs/metrics.md, "Bounds").
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.policies.registry import available
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.build import simple_trace

from timing_helpers import make_profile, random_trace

EVICTION = sorted(r.name for r in available("eviction"))
EPS = 1e-12


@st.composite
def workloads(draw):
    n_experts = draw(st.integers(3, 8))
    trace = random_trace(
        draw(st.integers(0, 10_000)),
        n_layers=draw(st.integers(1, 3)),
        n_experts=n_experts,
        top_k=draw(st.integers(1, min(3, n_experts))),
        requests=draw(st.integers(1, 2)),
        prompt=draw(st.integers(1, 4)),
        decode=draw(st.integers(1, 5)),
        skew=draw(st.sampled_from([0.2, 1.0, 5.0])),
    )
    tiers = draw(st.sampled_from(["dram", "ssd-dram", "gds", "unified"]))
    kw = dict(
        host_bw=10 ** draw(st.floats(8.5, 10.5)),
        host_latency=draw(st.sampled_from([0.0, 5e-6, 20e-6])),
        host_engines=draw(st.integers(1, 2)),
        memory_bandwidth=10 ** draw(st.floats(11, 12.5)),
        peak_flops=10 ** draw(st.floats(11, 15)),
        launch=draw(st.sampled_from([0.0, 5e-6])),
    )
    total = trace.total_object_bytes()
    if tiers != "dram":
        kw.update(ssd_bw=10 ** draw(st.floats(8.5, 10)), ssd_latency=draw(st.sampled_from([0.0, 50e-6])),
                  ssd_queue=draw(st.integers(1, 4)))
    if tiers == "ssd-dram":
        kw.update(dram=total * draw(st.floats(0.05, 0.9)))
    elif tiers == "gds":
        kw.update(dram=total * 0.5, ssd_link="ssd_d")
    elif tiers == "unified":
        kw.update(unified=True)
    capacity = int(total * draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])))
    scope = draw(st.sampled_from(["global", "layer"]))
    return trace, make_profile(**kw), capacity, scope


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from(EVICTION), st.sampled_from(["none", "oracle:lookahead=1:cross_pass=true", "oracle:lookahead=3"]),
       st.sampled_from(["layer", "expert"]))
def test_no_policy_beats_the_bounds(workload, eviction, prefetch, overlap):
    trace, profile, capacity, scope = workload
    result = timed_replay(trace, profile, TimedConfig(eviction=eviction, prefetch=prefetch, capacity_bytes=capacity,
                                                      scope=scope, overlap=overlap))
    bounds = result.bounds
    assert bounds is not None and bounds.valid
    assert np.all(result.cells["end_s"].to_numpy() >= bounds.ideal_cell_end - EPS)
    assert result.summary["time"]["total_s"] >= bounds.time_bound_s - EPS
    req = result.requests
    assert np.all(req["ttft_s"] >= req["ttft_bound_s"] - EPS)
    has_tpot = req["tpot_s"].notna()
    assert np.all(req.loc[has_tpot, "tpot_s"] >= req.loc[has_tpot, "tpot_bound_s"] - EPS)
    # no policy fetches fewer objects than Belady misses (static pins are fetched before the first cell)
    pinned_loads = result.plan.n_setup_copies
    fetched = result.summary["misses"] + result.summary["prefetch"]["issued"] + pinned_loads
    if bounds.belady_is_bound:  # every cell fits: MIN's argument holds (else the in-use rule binds)
        assert fetched >= bounds.belady_misses
        if prefetch == "none":
            assert result.summary["misses"] + pinned_loads >= bounds.belady_misses


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from(EVICTION), st.integers(1, 3), st.floats(1.0, 2.0))
def test_oracle_prefetch_is_never_slower_when_it_evicts_nothing(workload, eviction, lookahead, slack):
    """With room for every object the trace uses, an oracle only issues the same copies earlier, in
    the same order, so no copy and no cell ends later than without prefetch. (Into a full cache it
    can be slower: see the next test.) DRAM must hold the objects too, so no SSD-backed DRAM cache."""
    trace, profile, _, _ = workload
    if profile.tier("dram") is not None and profile.link("ssd_d") is None:
        return  # DRAM caching SSD: prefetch reorders DRAM's own evictions
    distinct = np.unique(trace.object_ids()).size * int(trace.meta.object_bytes[0])
    base = TimedConfig(eviction=eviction, capacity_bytes=int(distinct * slack), bounds=False)
    none = timed_replay(trace, profile, base)
    oracle = timed_replay(trace, profile, TimedConfig(**{**base.__dict__, "prefetch": f"oracle:lookahead={lookahead}"}))
    assert none.summary["evictions"] == 0 and oracle.summary["evictions"] == 0
    assert np.all(oracle.cells["end_s"].to_numpy() <= none.cells["end_s"].to_numpy() * (1 + 1e-9) + EPS)


def test_prefetching_into_a_full_cache_can_be_slower():
    """Belady, room for 2 objects; cells need objects 2, 5, 6, 2, 5, 6 (3 layers, 2 passes).

    Without prefetch Belady misses 4 times (at cell 2 it keeps 2, needed next, and drops 5). The
    oracle, prefetching 6 during cell 1 while 5 is in use, can only evict 2, and ends up copying all
    6 objects: 6 ms of copies instead of 4 (1 MB at 1 GB/s each). Dense 20 us, experts 10 us.
    """
    trace = simple_trace([[[2], [2], [0]], [[2], [2], [0]]], n_layers=3, n_experts=3, object_bytes=1_000_000)
    trace.meta.dense_bytes = [2_000_000] * 3
    trace.meta.model = None
    profile = make_profile(peak_flops=1e11, memory_bandwidth=1e11)
    base = TimedConfig(eviction="belady", capacity_bytes=2_000_000)
    none = timed_replay(trace, profile, base)
    oracle = timed_replay(trace, profile, TimedConfig(**{**base.__dict__, "prefetch": "oracle:lookahead=1:cross_pass=true"}))
    assert none.plan.n_copies == 4 and oracle.plan.n_copies == 6
    assert none.summary["time"]["total_s"] == pytest.approx(4180e-6, abs=1e-12)
    assert oracle.summary["time"]["total_s"] == pytest.approx(6030e-6, abs=1e-12)


def test_belady_is_not_claimed_as_a_bound_when_a_cell_does_not_fit():
    """One slot, cells of two experts: the in-use rule binds, so Belady's count is information only."""
    from moesim.traces.format.build import simple_trace

    trace = simple_trace([[[0, 1]], [[2, 3]], [[0, 1]]], n_layers=1, n_experts=4, object_bytes=10**6, top_k=2)
    trace.meta.dense_bytes = [10**6]
    result = timed_replay(trace, make_profile(), TimedConfig(capacity_bytes=10**6))
    assert result.bounds.belady_is_bound is False and result.summary["bounds"]["belady_is_bound"] is False
    fits = timed_replay(trace, make_profile(), TimedConfig(capacity_bytes=2 * 10**6))
    assert fits.bounds.belady_is_bound is True


def test_belady_misses_are_the_count_replay_of_belady_with_bypass():
    """The miss bound is MIN with bypass: it may stream a miss, so it never misses more than forced MIN."""
    trace = random_trace(11, requests=2, decode=5)
    capacity = int(trace.total_object_bytes() * 0.3)
    result = timed_replay(trace, make_profile(), TimedConfig(capacity_bytes=capacity))
    belady = count_replay(trace, ReplayConfig(policy="belady-bypass", capacity_bytes=capacity))
    forced = count_replay(trace, ReplayConfig(policy="belady", capacity_bytes=capacity))
    assert result.summary["bounds"]["belady_misses"] == int((belady.outcomes >= 2).sum())
    assert int((belady.outcomes >= 2).sum()) <= int((forced.outcomes >= 2).sum())
    assert result.summary["misses"] >= result.summary["bounds"]["belady_misses"]
