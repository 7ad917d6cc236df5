"""Count replay is the planner with prefetch and timing off (issue 17): one Python driver.

A toy eviction policy written here from scratch (registered with one line, no compiled form, so
every path below runs in Python) gives the same decisions through count_replay, which is the
planner with no topology, as through the timing engine's planner (a topology, prefetch "none",
miss handling "stall"), whose decisions come back as copies: outcomes, bypasses, counters, the
victims of every admission (a copy's victims are the evictions of its own admission plus those of
bypassed misses before it, the room they left) and the final core. In sequential mode, which only
the count replay takes, the driver equals the cache core's protocol driven by hand, access by
access, with the future's position at each access and every pass begun, empty ones included.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pytest

from moesim.policies import registry
from moesim.policies.base import NEVER, EvictionPolicy
from moesim.sim.cache_core import MISS_COMPULSORY
from moesim.sim.count_replay import ReplayConfig, count_replay, make_core
from moesim.sim.plan import PlanConfig, Planner
from moesim.sim.requests import build_request_stream
from moesim.sim.topology import build_topology
from moesim.traces.format.build import simple_trace

from timing_helpers import make_profile, random_trace


class ToyFarthestByPass(EvictionPolicy):
    """Offline: evicts the eligible object used again farthest in the future, ties to the one
    inserted in the earliest pass, then the highest id; refuses objects never used again."""

    offline = True

    def __init__(self, params: object, ctx) -> None:
        super().__init__(params, ctx)
        self._inserted_in: dict[int, int] = {}
        self._pass = -1

    def on_pass_begin(self, pass_index: int, now: float) -> None:
        self._pass += 1  # counts the passes begun, so a skipped pass would show

    def _next(self, obj: int) -> int:
        future = self.ctx.future
        return future.next_use(obj, future.position)

    def admit(self, obj: int, prefetch: bool = False) -> bool:
        return self._next(obj) != NEVER

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._inserted_in[obj] = self._pass

    def on_access(self, obj: int, now: float) -> None:
        pass

    def on_evict(self, obj: int) -> None:
        del self._inserted_in[obj]

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        candidates = [o for o in self._inserted_in if eligible(o)]
        if not candidates:
            return None
        return max(candidates, key=lambda o: (self._next(o), -self._inserted_in[o], o))

    def tracked_objects(self) -> Iterable[int]:
        return self._inserted_in


@pytest.fixture(autouse=True)
def toy(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # a copy other tests never see
    registry.register("toy-farthest-by-pass")(ToyFarthestByPass)


def _cases():
    for seed in (1, 2, 3):
        trace = random_trace(seed, n_layers=3, n_experts=6, top_k=2, requests=2, prompt=3, decode=5,
                             object_bytes=[1, 2, 3])
        total = trace.total_object_bytes()
        for scope in ("global", "layer"):
            for capacity in (0, 3, total // 4, total // 2, total):
                yield trace, scope, capacity


def _copy_victims(plan) -> list[list[int]]:
    off, flat = plan.victim_offsets, plan.victims
    return [flat[off[k]:off[k + 1]].tolist() for k in range(plan.n_setup_copies, plan.n_copies)]


def test_the_toy_policy_counts_the_same_through_count_replay_and_the_timing_planner():
    exercised = {"bypass": 0, "eviction": 0, "orphan": 0}
    for trace, scope, capacity in _cases():
        counted = count_replay(trace, ReplayConfig(policy="toy-farthest-by-pass", capacity_bytes=capacity,
                                                   scope=scope), record_victims=True)
        assert counted.engine == "reference"
        planner = Planner(trace, build_topology(make_profile(), trace.total_object_bytes()),
                          PlanConfig(eviction="toy-farthest-by-pass", capacity_bytes=capacity, scope=scope))
        plan = planner.plan_rest("reference")
        assert plan.outcomes.tolist() == counted.outcomes.tolist()
        assert plan.bypassed.tolist() == counted.bypassed.tolist()
        assert plan.counters == counted.counters
        # one demand copy per miss in request order; its victims: the room earlier bypassed misses left, then its own
        missed = np.flatnonzero(counted.outcomes >= MISS_COMPULSORY).tolist()
        assert plan.copy_obj[plan.n_setup_copies:].tolist() == counted.stream.obj[missed].tolist()
        by_request: dict[int, list[int]] = {}
        for r, v in counted.victims:
            by_request.setdefault(r, []).append(v)
        expected, orphans = [], []
        for r in missed:
            if counted.bypassed[r]:
                orphans += by_request.get(r, [])
                expected.append([])
                exercised["orphan"] += bool(by_request.get(r))
            else:
                expected.append(orphans + by_request.get(r, []))
                orphans = []
        assert _copy_victims(plan) == expected
        assert bytes(planner.core.state) == bytes(counted.core.state)
        assert planner.core.used == counted.core.used
        assert planner.core.evicted_in_pass == counted.core.evicted_in_pass
        assert [p._inserted_in for p in planner.core.policies] == [p._inserted_in for p in counted.core.policies]
        exercised["bypass"] += counted.counters.bypasses
        exercised["eviction"] += counted.counters.evictions
    assert all(exercised.values()), exercised  # the cases reach refusals, evictions and half-made room


def _by_hand(trace, policy: str, capacity: int, scope: str):
    """The cache core's protocol, one access at a time (moesim/sim/cache_core.py)."""
    config = ReplayConfig(policy=policy, capacity_bytes=capacity, scope=scope, mode="sequential")
    stream = build_request_stream(trace, "sequential")
    core, _, future = make_core(trace, config, stream)
    log: list[int] = []
    core.eviction_log = log
    outcomes, bypassed, victims = [], [], []
    objs = stream.obj.tolist()
    req = 0
    for p in range(trace.n_passes):
        core.begin_pass(p)
        for c in range(int(trace.pass_cell_offsets[p]), int(trace.pass_cell_offsets[p + 1])):
            for _ in range(int(trace.cell_offsets[c + 1] - trace.cell_offsets[c])):
                obj = objs[req]
                future.position = req
                [out] = core.begin_cell([obj])
                if out >= MISS_COMPULSORY:
                    log.clear()
                    if core.admit(obj) is None:
                        bypassed.append(req)
                    else:
                        core.fill(obj)
                    victims += [(req, v) for v in log]
                core.end_cell([obj])
                outcomes.append(out)
                req += 1
    core.finish()
    return outcomes, bypassed, victims, core


def test_sequential_count_replay_is_the_core_protocol_access_by_access():
    # pass 1 has no cells and pass 3 repeats an expert inside a cell (two requests in sequential mode)
    hand = simple_trace([[[0, 1], [2]], [None, None], [[1, 2], [0, 3]], [[0, 0, 3], [1]], [None, None]],
                        n_layers=2, n_experts=4, object_bytes=[1, 2])
    cases = [(hand, 3, "global"), (hand, 4, "layer")] + [(t, cap, scope) for t, scope, cap in _cases()]
    for trace, capacity, scope in cases:
        counted = count_replay(trace, ReplayConfig(policy="toy-farthest-by-pass", capacity_bytes=capacity, scope=scope,
                                                   mode="sequential"), record_victims=True)
        outcomes, bypassed, victims, core = _by_hand(trace, "toy-farthest-by-pass", capacity, scope)
        assert counted.outcomes.tolist() == outcomes
        assert np.flatnonzero(counted.bypassed).tolist() == bypassed
        assert counted.victims == victims
        assert counted.counters == core.counters
        assert counted.core.pass_index == core.pass_index == trace.n_passes - 1
        assert [p._pass for p in counted.core.policies] == [p._pass for p in core.policies]
        assert [dict(p._inserted_in) for p in counted.core.policies] == [dict(p._inserted_in) for p in core.policies]


def test_a_planner_with_no_topology_refuses_what_needs_copies():
    trace = simple_trace([[[0, 1]]], n_layers=1, n_experts=2)
    with pytest.raises(ValueError, match="no topology"):
        Planner(trace, None, PlanConfig(prefetch="oracle", capacity_bytes=1))
    with pytest.raises(ValueError, match="counts only"):
        Planner(trace, build_topology(make_profile(), trace.total_object_bytes()),
                PlanConfig(capacity_bytes=1, mode="sequential"))


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_passes_with_no_cells_decay_alike_in_count_and_timed_replays(engine):
    """LFU with decay 0.8, capacity two objects. A (expert 0) is read in passes 0-2: 1 + 0.8 + 0.64 = 2.44.
    Passes 3-5 have no cells. B is read in pass 6: A has decayed four times to 2.44 x 0.8^4 = 0.9994
    (one decay, 1.952, if the empty passes were skipped) against B's 1. C in pass 7 evicts the lower,
    A (after pass 7's decay 0.7995 vs 0.8), so pass 8's A misses and its B hits. The timing planner
    must begin the empty passes as the count replay does, or it evicts B instead."""
    trace = simple_trace([[[0]], [[0]], [[0]], [None], [None], [None], [[1]], [[2]], [[0, 1]]],
                         n_layers=1, n_experts=3, object_bytes=[1])
    counted = count_replay(trace, ReplayConfig(policy="lfu:decay=0.8", capacity_bytes=2), engine=engine)
    planner = Planner(trace, build_topology(make_profile(), trace.total_object_bytes()),
                      PlanConfig(eviction="lfu:decay=0.8", capacity_bytes=2))
    plan = planner.plan_rest(engine)
    obj = counted.stream.obj.tolist()
    assert obj[-2:] == [0, 1]
    assert counted.outcomes[-2] >= MISS_COMPULSORY and counted.outcomes[-1] < MISS_COMPULSORY  # A missed, B hit
    assert plan.outcomes.tolist() == counted.outcomes.tolist()
