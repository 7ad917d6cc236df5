"""Behavioural contracts every registered eviction policy must keep (gem5 lru_rp.test.cc style).

The core decides eligibility and the policy only orders candidates, so these hold for any policy:
each test is one property, run once per registered name.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.policies.registry import available
from moesim.sim.cache_core import ABSENT, IN_FLIGHT, MISS_COMPULSORY, RESIDENT
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.traces.format.build import simple_trace

EVICTION = [r.name for r in available("eviction")]


def _fill(core, objs):
    core.begin_pass(0)
    for obj in objs:
        outs, missed = core.serve_cell([obj])
        assert outs == [MISS_COMPULSORY] and not missed


@pytest.mark.parametrize("name", EVICTION)
def test_with_one_eligible_candidate_it_is_the_victim(name, make_core):
    # object 5 is needed first in the future Belady sees, so even Belady with bypass admits it
    core = make_core(name, n_objects=8, capacity=4, stream=[5, 0, 1, 2, 3, 4, 6, 7])
    _fill(core, [0, 1, 2, 3])
    core.begin_cell([0, 1, 3])  # everything but object 2 is in use
    assert core.admit(5) == [2]
    core.check()


@pytest.mark.parametrize("name", EVICTION)
def test_with_no_eligible_candidate_the_miss_is_not_admitted(name, make_core):
    core = make_core(name, n_objects=8, capacity=2)
    _fill(core, [0, 1])
    core.begin_cell([0, 1])
    assert core.admit(6) is None
    assert core.counters.bypasses == 1
    assert core.state[0] == core.state[1] == RESIDENT and core.state[6] == ABSENT
    core.check()


@pytest.mark.parametrize("name", EVICTION)
def test_in_use_and_in_flight_objects_are_never_victims(name, make_core):
    rng = np.random.default_rng(7)
    core = make_core(name, n_objects=16, capacity=5, stream=rng.integers(0, 16, 400).tolist())
    in_flight: list[int] = []
    for p in range(60):
        core.begin_pass(p)
        for _ in range(3):
            objs = rng.choice(16, size=3, replace=False).tolist()
            outcomes = core.begin_cell(objs)
            protected = set(objs) | set(in_flight)
            for obj, out in zip(objs, outcomes):
                if out >= MISS_COMPULSORY:
                    victims = core.admit(obj)
                    if victims is not None:
                        assert not protected & set(victims), (victims, protected)
                        in_flight.append(obj)
            # leave one copy in flight across the next cell, finish the others
            for obj in in_flight[:-1]:
                core.fill(obj)
            in_flight = in_flight[-1:]
            core.end_cell(objs)
            core.check()


@pytest.mark.parametrize("name", EVICTION)
def test_pinned_objects_are_never_evicted_and_always_hit(name, make_core):
    rng = np.random.default_rng(3)
    core = make_core(name, n_objects=12, capacity=4, pinned=(0, 5), stream=rng.integers(0, 12, 300).tolist())
    assert core.state[0] == core.state[5] == RESIDENT
    for p in range(100):
        core.begin_pass(p)
        objs = rng.choice(12, size=2, replace=False).tolist()
        outcomes, _ = core.serve_cell(objs)
        for obj, out in zip(objs, outcomes):
            if obj in (0, 5):
                assert out == 0
        assert core.state[0] == core.state[5] == RESIDENT
        core.check()


@pytest.mark.parametrize("name", EVICTION)
def test_same_seed_same_outcomes_and_victims(name):
    rng = np.random.default_rng(11)
    passes = [[rng.choice(6, 2, replace=False).tolist() for _ in range(3)] for _ in range(40)]
    trace = simple_trace(passes, n_layers=3, n_experts=6, top_k=2)
    cfg = ReplayConfig(policy=name, capacity_bytes=5, seed=4)
    a = count_replay(trace, cfg, record_victims=True)
    b = count_replay(trace, cfg, record_victims=True)
    assert np.array_equal(a.outcomes, b.outcomes)
    assert a.victims == b.victims


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("name", EVICTION)
def test_invariants_hold_after_every_step_of_a_random_action_stream(name, scope, make_core):
    """sortedcontainers style: random protocol calls under a fixed seed, CacheCore.check() after each."""
    rng = np.random.default_rng(abs(hash((name, scope))) % 2**32)
    n_layers, per_layer = 3, 5
    n = n_layers * per_layer
    sizes = rng.integers(1, 4, n).tolist()
    core = make_core(name, n_objects=n, capacity=12 if scope == "global" else 15, n_layers=n_layers, sizes=sizes,
                     scope=scope, stream=rng.integers(0, n, 500).tolist(), profile=rng.integers(0, 5, n).tolist())
    in_flight: set[int] = set()
    for step in range(250):
        action = rng.integers(0, 5)
        if action == 0:
            core.begin_pass(step)
        elif action == 1:
            layer = int(rng.integers(0, n_layers))
            objs = (layer * per_layer + rng.choice(per_layer, size=int(rng.integers(1, 4)), replace=False)).tolist()
            outcomes = core.begin_cell(objs)
            core.check()
            for obj, out in zip(objs, outcomes):
                if out >= MISS_COMPULSORY and core.admit(obj) is not None:
                    in_flight.add(obj)
                core.check()
            core.end_cell(objs)
        elif action == 2:
            obj = int(rng.integers(0, n))
            if core.prefetch(obj) is not None:
                in_flight.add(obj)
        elif action == 3 and in_flight:
            obj = sorted(in_flight)[int(rng.integers(0, len(in_flight)))]
            core.fill(obj)
            in_flight.discard(obj)
        else:
            objs = rng.choice(n, size=2, replace=False).tolist()
            core.serve_cell(objs)
            in_flight -= {o for o in objs if core.state[o] != IN_FLIGHT}
        core.check()
    core.finish()
    c = core.counters
    assert c.prefetch_useful + c.prefetch_late + c.prefetch_wasted <= c.prefetch_issued
