"""The sweep spec: every mistake is a one-line UserError naming the file and key; runs are keyed
by a hash of everything that decides their numbers, and two spellings of one run are one run."""

from __future__ import annotations

import dataclasses

import pytest
import toy_plugin

from moesim.errors import UserError
from moesim.sweeps.plan import plan_sweep
from moesim.sweeps.run_config import RunConfig
from moesim.sweeps.spec import load_spec, parse_spec

TRACE = {"t": {"factory": "toy_plugin:zipf_trace", "args": {"passes": 5}}}


def spec(**extra):
    data = {"traces": TRACE, "eviction": ["lru"], "capacities": ["50%"]}
    data.update(extra)
    return data


@pytest.mark.parametrize("data, fragment", [
    ({"traces": TRACE, "eviction": "lru", "capacities": "5%", "colour": "red"}, "unknown key 'colour'"),
    ({"eviction": "lru", "capacities": "5%"}, "names no traces"),
    (spec(capacities=[5]), "needs a unit or %"),
    (spec(scope="row"), "'row' is not one of global, layer"),
    (spec(replay=["event", "random"]), "'random' is not one of event, sequential"),
    (spec(eviction=["lru", "no-such-policy"]), "unknown eviction policy 'no-such-policy'"),
    (spec(eviction=["lru:nope=1"]), "takes no parameters"),
    (spec(prefetch=["oracle"]), "need a timed run"),
    (spec(seeds=["one"]), "seeds must be integers"),
    (spec(traces={"t": {"factory": "toy_plugin.zipf_trace"}}), "must look like 'package.module:function'"),
    (spec(traces={"t": {"excel": "x.xlsx"}}), "a trace source is a file name"),
    (spec(tables={"passes": "yes"}), "passes must be true or false"),
    (spec(imports=["no_such_module_xyz"]), "cannot import 'no_such_module_xyz'"),
    (spec(profiles=["rtx4090"], replay="sequential"), "timed runs replay cells atomically"),
])
def test_spec_mistakes_are_one_line_user_errors_naming_the_spec(data, fragment):
    with pytest.raises(UserError) as info:
        parse_spec(data, "study.yaml")
    message = str(info.value)
    assert fragment in message
    assert message.startswith("study.yaml")
    assert "\n" not in message


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("traces: [a\neviction: lru\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d: not valid YAML"):
        load_spec(path)


def test_spellings_of_one_policy_make_one_run():
    plan = plan_sweep(parse_spec(spec(eviction=["lru", " lru"], capacities=["50%", "50%"]), "s"))
    assert len(plan.runs) == 1


def test_axes_multiply_and_capacities_resolve_against_each_trace():
    data = spec(traces={"a": {"factory": "toy_plugin:zipf_trace", "args": {"passes": 5, "object_bytes": 1000}},
                        "b": {"factory": "toy_plugin:zipf_trace", "args": {"passes": 5, "object_bytes": 3000}}},
                eviction=["lru", "toy-fifo"], capacities=["25%", "8slots", "6000B"], scope=["global", "layer"],
                replay=["event", "sequential"], seeds=[0, 1], imports=["toy_policies"])
    plan = plan_sweep(parse_spec(data, "s"))
    assert len(plan.runs) == 2 * 2 * 3 * 2 * 2 * 2
    # 4 layers x 16 experts: 25% is 16 objects; 8 slots are 8 objects of the trace's size
    got = {(r.trace, r.capacity): r.capacity_bytes for r in plan.runs}
    assert got == {("a", "25%"): 16_000, ("a", "8slots"): 8_000, ("a", "6000B"): 6_000,
                   ("b", "25%"): 48_000, ("b", "8slots"): 24_000, ("b", "6000B"): 6_000}
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)


def test_run_id_changes_with_every_field_and_only_with_them():
    base = RunConfig(trace="t", trace_hash="h", eviction="lru", capacity="5%", capacity_bytes=100)
    assert RunConfig.from_dict(base.to_dict()).run_id == base.run_id
    changes = {"trace": "u", "trace_hash": "h2", "eviction": "toy-fifo", "capacity": "6%", "capacity_bytes": 101,
               "scope": "layer", "mode": "sequential", "seed": 1, "prefetch": "oracle", "miss": "cpu",
               "engine": "timed", "profile": "rtx4090", "profile_set": (("links.h2d.bandwidth", "8 GB/s"),),
               "profile_hash": "p", "pass_table": True, "timeline_passes": 3}
    assert set(changes) == {f.name for f in dataclasses.fields(RunConfig)} - set()
    ids = {dataclasses.replace(base, **{k: v}).run_id for k, v in changes.items()}
    assert base.run_id not in ids and len(ids) == len(changes)


def test_a_trace_change_changes_the_run_id():
    one = plan_sweep(parse_spec(spec(traces={"t": {"factory": "toy_plugin:zipf_trace", "args": {"seed": 1}}}), "s"))
    two = plan_sweep(parse_spec(spec(traces={"t": {"factory": "toy_plugin:zipf_trace", "args": {"seed": 2}}}), "s"))
    assert one.runs[0].trace_hash != two.runs[0].trace_hash
    assert one.runs[0].run_id != two.runs[0].run_id


def test_a_factory_that_returns_something_else_is_named(tmp_path):
    with pytest.raises(UserError, match="returned dict, not a Trace"):
        plan_sweep(parse_spec(spec(traces={"t": {"factory": "builtins:dict", "args": {"x": 1}}}), "s"))
    with pytest.raises(UserError, match="cannot call toy_plugin:zipf_trace"):
        plan_sweep(parse_spec(spec(traces={"t": {"factory": "toy_plugin:zipf_trace", "args": {"colour": 1}}}), "s"))
    assert toy_plugin.zipf_trace(passes=2).n_passes == 2
