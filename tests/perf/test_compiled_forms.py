"""A policy's compiled form is declared in its own module and nowhere else.

A toy eviction policy written from scratch, with a compiled form and its registration line, is
picked up by the fast path and equals the reference request for request; a parameter its form
does not take keeps it on the reference path and the result says why; a subclass that does not
declare a form of its own is not run by its base class's kernel.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pytest
from hypothesis import given, settings

from moesim.errors import UserError
from moesim.policies import registry
from moesim.policies.base import EvictionPolicy
from moesim.policies.compiled import CompiledForm, compiled_form, restore_order
from moesim.policies.eviction.lru import LRU
from moesim.sim import fast
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.fast import build
from moesim.traces.format.build import simple_trace

from fast_helpers import assert_same_core, sized_traces

pytestmark = pytest.mark.skipif(build.library() is None,
                                reason=f"compiled replay unavailable: {build.unavailable_reason()}")


class ToyQueue(EvictionPolicy):
    """First in, first out, written without reusing any moesim policy."""

    compiled = CompiledForm("fifo", restore=restore_order)

    def __init__(self, params: object, ctx) -> None:
        super().__init__(params, ctx)
        self._order: OrderedDict[int, None] = OrderedDict()

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._order[obj] = None

    def on_access(self, obj: int, now: float) -> None:
        pass

    def on_evict(self, obj: int) -> None:
        del self._order[obj]

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        return next((o for o in self._order if eligible(o)), None)

    def tracked_objects(self) -> Iterable[int]:
        return self._order


class LRUWithKnob(LRU):
    """LRU plus a parameter the LRU kernel does not take."""

    compiled = CompiledForm("lru", restore=restore_order)

    @dataclass(frozen=True)
    class Params:
        knob: int = field(default=0, metadata={"help": "a parameter added after the kernel was written"})


class LRUSubclass(LRU):
    """Inherits LRU's compiled form but declares none: it may change behaviour."""


@pytest.fixture
def toys(monkeypatch):
    # the registration lines, in a registry copy other tests never see
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("toy-queue")(ToyQueue)
    registry.register("toy-knob")(LRUWithKnob)
    registry.register("toy-subclass")(LRUSubclass)


@settings(max_examples=25, deadline=None)
@given(trace=sized_traces())
def test_a_toy_policy_with_a_compiled_form_runs_fast_and_equals_the_reference(trace):
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        registry.register("toy-queue")(ToyQueue)
        assert "toy-queue" in fast.compiled_policies()
        for scope in ("global", "layer"):
            cfg = ReplayConfig(policy="toy-queue", capacity_bytes=int(trace.total_object_bytes()) // 2, scope=scope)
            got = count_replay(trace, cfg, record_victims=True)
            ref = count_replay(trace, cfg, record_victims=True, engine="reference")
            assert (got.engine, got.engine_note, ref.engine) == ("fast", None, "reference")
            assert got.outcomes.tolist() == ref.outcomes.tolist()
            assert got.victims == ref.victims
            assert got.counters == ref.counters
            assert_same_core(got.core, ref.core)


def test_a_parameter_the_kernel_does_not_take_keeps_the_reference_path_and_says_so(toys):
    trace = simple_trace([[[0, 1]], [[2, 0]], [[3, 1]]], n_layers=1, n_experts=4, top_k=2)
    result = count_replay(trace, ReplayConfig(policy="toy-knob:knob=3", capacity_bytes=2))
    assert result.engine == "reference"
    assert result.engine_note is not None and "parameter knob" in result.engine_note
    with pytest.raises(UserError, match="parameter knob has no compiled form"):
        count_replay(trace, ReplayConfig(policy="toy-knob", capacity_bytes=2), engine="fast")
    assert "toy-knob" in fast.compiled_policies()  # it declares a form; the form does not cover it


def test_the_cli_says_why_a_run_took_the_reference_engine(toys, capsys):
    from moesim.cli import main

    assert main(["compare", "--trace", "bundled:switch-base-8", "--capacity", "10%", "--count-only",
                 "--policies", "lru,toy-knob:knob=2"]) == 0
    out = capsys.readouterr().out
    assert "engine fast for lru" in out and "reference for toy-knob" in out
    assert "reference engine: policy toy-knob: parameter knob has no compiled form" in out


def test_a_subclass_without_its_own_form_is_not_run_by_its_base_kernel(toys):
    assert compiled_form(LRUSubclass) is None and compiled_form(LRU) is not None
    trace = simple_trace([[[0, 1]], [[2, 0]]], n_layers=1, n_experts=4, top_k=2)
    result = count_replay(trace, ReplayConfig(policy="toy-subclass", capacity_bytes=2))
    assert result.engine == "reference" and "has no compiled form" in result.engine_note
    assert "toy-subclass" not in fast.compiled_policies()


def test_asking_reference_gives_no_note():
    trace = simple_trace([[[0, 1]], [[2, 0]]], n_layers=1, n_experts=4, top_k=2)
    result = count_replay(trace, ReplayConfig(policy="arc", capacity_bytes=2), engine="reference")
    assert (result.engine, result.engine_note) == ("reference", None)


def test_the_kernel_knows_every_declared_kernel_name():
    from moesim.sim.fast import kernel

    for entry in registry.available("eviction"):
        form = compiled_form(entry.cls)
        if form is not None:
            assert kernel.policy_code(form.kernel) >= 0, entry.name
    assert kernel.policy_code("no-such-policy") == -1
