"""The front door (moesim/sim/run.py): one RunSpec, one run(), the engines' configs as its views."""

from __future__ import annotations

import dataclasses

import numpy as np

from moesim.policies.registry import parse_spec
from moesim.sim.count_replay import CountResult, ReplayConfig, count_replay
from moesim.sim.run import RunSpec, run
from moesim.sim.timed_replay import TimedConfig, timed_replay

from timing_helpers import make_profile, random_trace


def test_count_run_is_the_count_replay():
    trace = random_trace(3, requests=2, decode=6)
    cap = int(trace.total_object_bytes() * 0.3)
    got = run(RunSpec.build(trace, "lfu:decay=0.5", cap, capacity="30%", mode="sequential", seed=2))
    want = count_replay(trace, ReplayConfig(policy="lfu:decay=0.5", capacity_bytes=cap, mode="sequential", seed=2))
    assert isinstance(got, CountResult)
    assert np.array_equal(got.outcomes, want.outcomes) and np.array_equal(got.bypassed, want.bypassed)
    assert got.config == want.config


def test_timed_run_is_the_timed_replay_with_the_same_config():
    trace = random_trace(5, requests=2, decode=4)
    profile = make_profile(host_latency=5e-6)
    cap = int(trace.total_object_bytes() * 0.25)
    spec = RunSpec.build(trace, "lru", cap, prefetch="oracle:lookahead=1", profile=profile, profile_name="p",
                         overlap="expert", seed=1)
    config = TimedConfig(eviction="lru", prefetch="oracle", capacity_bytes=cap, profile="p", overlap="expert", seed=1)
    assert spec.timed_config() == config  # canonical strings; the parsed specs do not take part in equality
    got, want = run(spec), timed_replay(trace, profile, config)
    assert got.summary == want.summary


def test_label_from_the_parsed_specs():
    trace = random_trace(1, requests=1, decode=2)
    spec = RunSpec.build(trace, "lfu:decay=0.9", 1, prefetch="oracle:lookahead=2", miss="cpu",
                         placement="cpu-layers:n=2", profile=make_profile())
    assert spec.label == "lfu:decay=0.9 pf=oracle:lookahead=2 miss=cpu place=cpu-layers:n=2"
    assert RunSpec.build(trace, "lru", 1).label == "lru"  # defaults left out
    assert spec.timed_config().label() == spec.label


def test_a_changed_config_string_is_parsed_again():
    """TimedConfig keeps a RunSpec's parsed specs only while they match its strings: replace() stays safe."""
    trace = random_trace(1, requests=1, decode=2)
    config = RunSpec.build(trace, "lru", 1, profile=make_profile()).timed_config()
    assert config.specs()[0] is config.parsed[0]
    changed = dataclasses.replace(config, eviction="lfu:decay=0.5", prefetch="oracle:lookahead=2")
    evict, prefetch, miss = changed.specs()
    assert (evict.label(), prefetch.label(), miss.label()) == ("lfu:decay=0.5", "oracle:lookahead=2", "stall")
    assert changed.plan_config().specs()[0].params == parse_spec("lfu:decay=0.5", "eviction").params
