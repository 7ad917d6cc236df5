"""The compiled planner against the Python one, decision for decision.

The reference is Planner.plan_rest in Python (itself checked against count replay, the step API and
hand-timed cases in tests/sim). Over hypothesis traces with unequal object sizes, repeated experts,
skipped layers and empty cells, both scopes, pinned objects (static-hot), both copy routes and every
prefetch policy (with compute windows that make score-budget quiet in some cells and not others),
every array of the Plan, the core's counters and final state, and the final policy state must be
equal; then timed replays on both planners must give identical results.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.policies.compiled import compiled_form
from moesim.policies.registry import lookup
from moesim.sim import fast
from moesim.sim.fast import build
from moesim.sim.plan import PlanConfig, Planner
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.sim.topology import build_topology

from fast_helpers import assert_same_core, sized_traces
from timing_helpers import make_profile, random_trace

pytestmark = pytest.mark.skipif(build.library() is None,
                                reason=f"compiled replay unavailable: {build.unavailable_reason()}")

# every registered eviction policy whose compiled form covers the planner (nothing to edit when one
# is added), plus parameter variants the defaults do not reach
PLAN_SPECS = [name for name in fast.compiled_policies() if compiled_form(lookup(name).cls).planner_prefetch] + [
    "lfu:decay=0.5", "static-hot:profile_passes=2:share=0.7", "slru:protected_share=0.3", "lru-ds:protect=1",
    "moe-infinity:decay=0.5"]
PREFETCH = ["none", "score-budget", "score-budget:source=frequency:lookahead=2", "oracle:lookahead=1",
            "oracle:lookahead=2:cross_pass=true", "previous-pass", "frequency", "markov", "noisy-oracle"]
EXAMPLES = int(os.environ.get("MOESIM_HYPOTHESIS_EXAMPLES", "25"))
PLAN_ARRAYS = ("outcomes", "bypassed", "gpu_tokens", "cpu_tokens", "req_tokens", "altered", "copy_obj", "copy_bytes",
               "copy_route", "copy_prefetch", "copy_resident", "copy_cell", "dep_offsets", "deps", "cancel_offsets",
               "cancels", "victim_offsets", "victims", "cell_copy_offsets", "wait_offsets", "waits")


def _planners(trace, config, profile, window):
    topology = build_topology(profile, trace.total_object_bytes())
    return [Planner(trace, topology, config, window) for _ in range(2)]


def assert_same_plan(fast_planner, ref_planner, fast_plan, ref_plan):
    for name in PLAN_ARRAYS:
        got, want = getattr(fast_plan, name), getattr(ref_plan, name)
        assert got.dtype == want.dtype, name
        assert got.tolist() == want.tolist(), name
    assert fast_plan.n_setup_copies == ref_plan.n_setup_copies
    assert fast_plan.counters == ref_plan.counters
    assert fast_plan.dram_counters == ref_plan.dram_counters
    assert_same_core(fast_planner.core, ref_planner.core)
    assert fast_planner.inbound == ref_planner.inbound
    assert bytes(fast_planner.unwaited) == bytes(ref_planner.unwaited)
    assert fast_planner.orphans == ref_planner.orphans


@pytest.mark.parametrize("policy", PLAN_SPECS)
@settings(max_examples=EXAMPLES, deadline=None)
@given(trace=sized_traces(), data=st.data())
def test_compiled_planner_makes_the_python_planners_decisions(policy, trace, data):
    total = trace.total_object_bytes()
    capacity = data.draw(st.integers(0, total + 2), label="capacity")
    scope = data.draw(st.sampled_from(["global", "layer"]), label="scope")
    prefetch = data.draw(st.sampled_from(PREFETCH), label="prefetch")
    ssd_home = data.draw(st.booleans(), label="weights on ssd (gpudirect)")
    profile = make_profile(ssd_bw=1e9, dram=None) if ssd_home else make_profile(dram=1e12)
    # windows around one object's copy time (link 1 GB/s, objects of 1-3 bytes): some cells quiet
    window = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 0.5e-9, 1e-9, 2e-9, 5e-9]),
                                           min_size=trace.n_cells, max_size=trace.n_cells), label="window"))
    config = PlanConfig(eviction=policy, prefetch=prefetch, capacity_bytes=capacity, scope=scope, seed=3)
    fast_planner, ref_planner = _planners(trace, config, profile, window)
    assert fast_planner.plan_engine("fast") == "fast"
    fast_plan = fast_planner.plan_rest("fast")
    ref_plan = ref_planner.plan_rest("reference")
    assert (fast_plan.engine, ref_plan.engine) == ("fast", "reference")
    assert_same_plan(fast_planner, ref_planner, fast_plan, ref_plan)


@pytest.mark.parametrize("policy", [name for name in fast.compiled_policies()
                                    if not compiled_form(lookup(name).cls).planner_prefetch])
@settings(max_examples=EXAMPLES, deadline=None)
@given(trace=sized_traces(), data=st.data())
def test_policies_planned_only_without_prefetch_match_with_prefetch_off(policy, trace, data):
    capacity = data.draw(st.integers(0, trace.total_object_bytes() + 2), label="capacity")
    scope = data.draw(st.sampled_from(["global", "layer"]), label="scope")
    config = PlanConfig(eviction=policy, prefetch="none", capacity_bytes=capacity, scope=scope)
    fast_planner, ref_planner = _planners(trace, config, make_profile(dram=1e12), None)
    fast_plan, ref_plan = fast_planner.plan_rest("fast"), ref_planner.plan_rest("reference")
    assert (fast_plan.engine, ref_plan.engine) == ("fast", "reference")
    assert_same_plan(fast_planner, ref_planner, fast_plan, ref_plan)


@pytest.mark.parametrize("prefetch", ["score-budget", "oracle:lookahead=1", "none"])
@pytest.mark.parametrize("policy", ["lru", "least-stale", "lfu", "arc", "random"])
def test_timed_replays_on_both_planners_are_identical(monkeypatch, policy, prefetch):
    trace = random_trace(11, n_layers=4, n_experts=8, top_k=2, requests=3, prompt=6, decode=10)
    profile = make_profile(host_bw=2e9, host_latency=1e-6, launch=1e-6)
    config = TimedConfig(eviction=policy, prefetch=prefetch, capacity_bytes=int(trace.total_object_bytes() * 0.3),
                         profile="test")
    results = {}
    for engine in ("fast", "reference"):
        monkeypatch.setenv(fast.ENV_VAR, engine)
        results[engine] = timed_replay(trace, profile, config)
    a, b = results["fast"], results["reference"]
    assert a.summary == b.summary
    assert a.cells.equals(b.cells)
    assert a.requests.equals(b.requests)


def test_score_budget_learns_the_same_estimate_from_batched_cells():
    trace = random_trace(4, n_layers=3, n_experts=6, top_k=2, requests=2, prompt=5, decode=8)
    window = np.where(np.arange(trace.n_cells) % 5 == 0, 1.0, 0.0)  # every fifth cell may propose
    profile = make_profile()
    config = PlanConfig(eviction="lru", prefetch="score-budget:source=markov", capacity_bytes=trace.total_object_bytes() // 3)
    fast_planner, ref_planner = _planners(trace, config, profile, window)
    fast_planner.plan_rest("fast")
    ref_planner.plan_rest("reference")
    chains = []
    for planner in (fast_planner, ref_planner):
        planner.prefetcher._flush()
        chains.append(planner.prefetcher._chain)
    assert np.array_equal(chains[0].pair, chains[1].pair)
    assert np.array_equal(chains[0].source, chains[1].source)
    assert np.array_equal(chains[0].frequency.used, chains[1].frequency.used)
    assert np.array_equal(chains[0].frequency.cells, chains[1].frequency.cells)


@pytest.mark.parametrize("config, reason", [
    (PlanConfig(eviction="belady", prefetch="oracle", capacity_bytes=10),
     "eviction policy belady has no compiled planner with prefetch"),
    (PlanConfig(eviction="lru", miss="cpu", capacity_bytes=10), "miss handling cpu"),
])
def test_runs_the_compiled_planner_does_not_cover_fall_back_or_are_refused(config, reason):
    trace = random_trace(2, requests=1, decode=3)
    profile = make_profile(cpu_flops=1e12, cpu_bw=1e11)
    planner = Planner(trace, build_topology(profile, trace.total_object_bytes()), config)
    assert planner.plan_engine("auto") == "reference"
    with pytest.raises(UserError, match=f"cannot plan this: {reason}"):
        planner.plan_engine("fast")
    planner.plan_rest("auto")  # the Python planner decides it


def test_a_planner_that_already_stepped_finishes_in_python():
    trace = random_trace(2, requests=1, decode=3)
    planner = Planner(trace, build_topology(make_profile(), trace.total_object_bytes()),
                      PlanConfig(eviction="lru", capacity_bytes=trace.total_object_bytes() // 4))
    planner.step(0)
    assert planner.plan_engine("auto") == "reference"
