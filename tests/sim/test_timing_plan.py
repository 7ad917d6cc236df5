"""The decision layer: with prefetch off it is the count replay, request for request; its step API
gives the same decisions as the bulk path; runs are deterministic to the byte."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.policies.registry import available
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.plan import PlanConfig, Planner, plan_trace
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.reports.run_file import read_run_file
from moesim.reports.run_results import save_runs
from moesim.sim.run import RunSpec, run
from moesim.sim.topology import build_topology

from timing_helpers import make_profile, random_trace

EVICTION = [r.name for r in available("eviction")]


def _topology(trace):
    return build_topology(make_profile(), trace.total_object_bytes())


@pytest.mark.parametrize("policy", EVICTION)
@pytest.mark.parametrize("scope, share", [("global", 0.2), ("global", 0.5), ("layer", 0.4), ("global", 0.0)])
def test_plan_without_prefetch_equals_count_replay(policy, scope, share):
    for seed in (1, 2):
        trace = random_trace(seed, n_layers=3, n_experts=8, top_k=2, requests=3, prompt=4, decode=6)
        capacity = int(trace.total_object_bytes() * share)
        counted = count_replay(trace, ReplayConfig(policy=policy, capacity_bytes=capacity, scope=scope, seed=seed))
        plan = plan_trace(trace, _topology(trace), PlanConfig(eviction=policy, capacity_bytes=capacity, scope=scope,
                                                              seed=seed))
        assert np.array_equal(plan.outcomes, counted.outcomes)
        assert np.array_equal(plan.bypassed, counted.bypassed)
        assert plan.counters.evictions == counted.counters.evictions
        # one demand copy per miss, in request order
        misses = counted.stream.obj[counted.outcomes >= 2]
        assert plan.copy_obj[plan.n_setup_copies:].tolist() == misses.tolist()


def test_timed_replay_counts_equal_count_replay_per_layer():
    trace = random_trace(5, requests=2, decode=5)
    capacity = int(trace.total_object_bytes() * 0.3)
    counted = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=capacity))
    result = timed_replay(trace, make_profile(), TimedConfig(capacity_bytes=capacity))
    per_layer = result.cells.groupby("layer")[["hits", "compulsory", "capacity", "collision"]].sum()
    from moesim.sim.metrics import by_layer

    expected = by_layer(counted).set_index("layer")[["hits", "compulsory", "capacity", "collision"]]
    assert per_layer.to_numpy().tolist() == expected.to_numpy().tolist()


@pytest.mark.parametrize("prefetch", ["none", "oracle:lookahead=2"])
def test_step_api_gives_the_bulk_decisions(prefetch):
    trace = random_trace(3, requests=2, decode=4)
    config = PlanConfig(eviction="lru", prefetch=prefetch, capacity_bytes=int(trace.total_object_bytes() * 0.3))
    bulk = plan_trace(trace, _topology(trace), config)
    planner = Planner(trace, _topology(trace), config)
    assert planner.setup_copies() == ()
    copies, outcomes, waits = [], [], []
    for c in range(trace.n_cells):
        cell = planner.step(c)
        assert cell.cell == c and cell.layer == int(trace.cell_layer[c])
        outcomes.extend(cell.outcomes)
        waits.extend(cell.waits)
        copies.extend(cell.copies)
    assert outcomes == bulk.outcomes.tolist()
    assert waits == bulk.waits.tolist()
    assert [k.obj for k in copies] == bulk.copy_obj.tolist()
    assert [k.prefetch for k in copies] == bulk.copy_prefetch.tolist()
    assert [k.copy_id for k in copies] == list(range(bulk.n_copies))
    with pytest.raises(ValueError):
        planner.step(0)


def test_identical_runs_write_identical_files(tmp_path):
    trace = random_trace(7, requests=2, decode=5)
    profile = make_profile(host_latency=5e-6, joules_per_byte={"h2d": 2e-11})
    spec = RunSpec.build(trace, "lru", int(trace.total_object_bytes() * 0.25), prefetch="oracle:lookahead=1",
                         profile=profile, profile_name="test", seed=3)
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path in paths:
        save_runs(path, [(spec, run(spec))], "t.parquet")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    results, meta = read_run_file(paths[0])
    assert meta["trace"]["hash"] == trace.content_hash()
    assert meta["runs"][0]["config"]["prefetch"] == {"name": "oracle", "kind": "prefetch",
                                                     "params": {"cross_pass": False, "lookahead": 1}}
    assert meta["profile"]["values"]["name"] == "test"
    assert meta["versions"]["dependencies"]["simpy"]
    assert len(results.requests) == 2 and results.runs["profile"].tolist() == ["test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]  # no temp files left