"""Contracts every registered prefetch policy keeps, run once per registered name (a policy added
with @register(..., kind="prefetch") is tested with no list to edit; a toy one shows it).

- proposals are well formed (object ids of the trace, finite priorities) and repeat exactly;
- a policy that says `proposes_nothing` proposes nothing;
- where `quiet_cells` says a cell is quiet, propose() returns nothing there, whatever is resident
  (the compiled planner skips those cells without asking);
- `observe_cells` over a batch leaves the policy proposing what per-cell observe() leaves it
  proposing (the compiled planner batches the skipped cells);
- the compiled and the Python planners make the same decisions with it (when a compiler exists).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from moesim.policies import registry
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView, ServedCells
from moesim.policies.registry import available, parse_spec
from moesim.traces.format.build import simple_trace


def prefetch_names() -> list[str]:
    return [r.name for r in available("prefetch")]


def contract_trace():
    """4 layers x 8 experts, top-2, 12 passes, with the recorded predictions gate-lookahead reads."""
    rng = np.random.default_rng(21)
    cells = [[sorted(rng.choice(8, 2, replace=False).tolist()) for _ in range(4)] for _ in range(12)]
    trace = simple_trace(cells, n_layers=4, n_experts=8, top_k=2)
    trace.predictions["lookahead_1"] = trace.expert.reshape(-1, 2)[np.r_[1:trace.n_cells, 0]].astype(np.int16)
    trace.predictions["lookahead_1_score"] = np.full((trace.n_cells, 2), 0.5, dtype=np.float32)
    return trace


def build(name: str, trace) -> PrefetchPolicy:
    ctx = PolicyContext(n_objects=trace.n_objects, n_layers=trace.meta.n_layers, n_experts=trace.meta.n_experts,
                        object_layer=trace.object_layer_array(), object_bytes=trace.object_bytes_array(), seed=4,
                        trace=trace)
    return parse_spec(name, "prefetch").build(ctx)


def views(trace, present, link: float, windows):
    objs, cell_pass = trace.object_ids(), trace.cell_pass()
    for c in range(trace.n_cells):
        lo, hi = trace.cell_offsets[c], trace.cell_offsets[c + 1]
        yield c, objs[lo:hi], PrefetchView(int(cell_pass[c]), c, int(trace.cell_layer[c]), objs[lo:hi],
                                           present.__contains__, link, float(windows[c]))


def drive(policy: PrefetchPolicy, trace, present=frozenset(), link: float = 1e6, windows=None):
    """Proposals (obj, priority) at every cell; the policy observes each cell after proposing."""
    windows = np.ones(trace.n_cells) if windows is None else windows
    cell_pass = trace.cell_pass()
    out = []
    for c, routed, view in views(trace, present, link, windows):
        out.append([(r.obj, r.priority) for r in policy.propose(view)])
        policy.observe(int(cell_pass[c]), c, int(trace.cell_layer[c]), routed)
    return out


def check_prefetch_contract(name: str) -> None:
    trace = contract_trace()
    present = frozenset(range(0, trace.n_objects, 5))
    first = drive(build(name, trace), trace, present)
    assert drive(build(name, trace), trace, present) == first, "proposals must repeat exactly"
    for proposals in first:
        for obj, priority in proposals:
            assert isinstance(obj, (int, np.integer)) and 0 <= obj < trace.n_objects
            assert math.isfinite(priority)
    policy = build(name, trace)
    if policy.proposes_nothing:
        assert not any(first)
    windows = np.where(np.arange(trace.n_cells) % 3 == 0, 1.0, 1e-12)
    quiet = policy.quiet_cells(1e6, windows)
    if quiet is not None:
        quiet = np.asarray(quiet, dtype=bool)
        assert quiet.shape == (trace.n_cells,)
        for residency in (frozenset(), frozenset(range(trace.n_objects)), present):
            props = drive(build(name, trace), trace, residency, 1e6, windows)
            assert not any(props[c] for c in np.flatnonzero(quiet)), "a quiet cell proposed something"
    # observe_cells over the first k cells, then propose at cell k: as if observed one by one
    objs, cell_pass = trace.object_ids(), trace.cell_pass()
    for k in (1, 5, trace.n_cells - 1):
        one_by_one, batched = build(name, trace), build(name, trace)
        for c in range(k):
            lo, hi = trace.cell_offsets[c], trace.cell_offsets[c + 1]
            one_by_one.observe(int(cell_pass[c]), c, int(trace.cell_layer[c]), objs[lo:hi])
        batched.observe_cells(ServedCells(0, cell_pass[:k], trace.cell_layer[:k], trace.cell_offsets[:k + 1], objs))
        _, _, view = list(views(trace, present, 1e6, np.ones(trace.n_cells)))[k]
        assert one_by_one.propose(view) == batched.propose(view)


def check_planners_agree(name: str) -> None:
    from timing_helpers import make_profile

    from moesim.sim.fast import build as fast_build
    from moesim.sim.plan import PlanConfig, Planner
    from moesim.sim.topology import build_topology

    if fast_build.library() is None:
        pytest.skip(f"compiled planner unavailable: {fast_build.unavailable_reason()}")

    trace = contract_trace()
    plans = []
    for engine in ("fast", "reference"):
        config = PlanConfig(eviction="lru", prefetch=name, capacity_bytes=trace.total_object_bytes() // 3, seed=2)
        planner = Planner(trace, build_topology(make_profile(), trace.total_object_bytes()), config,
                          np.full(trace.n_cells, 1e-6))
        plans.append(planner.plan_rest(engine))
    assert plans[0].copy_obj.tolist() == plans[1].copy_obj.tolist()
    assert plans[0].outcomes.tolist() == plans[1].outcomes.tolist()
    assert plans[0].counters == plans[1].counters


@pytest.mark.parametrize("name", prefetch_names())
def test_prefetch_contract(name):
    check_prefetch_contract(name)


@pytest.mark.parametrize("name", prefetch_names())
def test_compiled_and_python_planners_agree(name):
    check_planners_agree(name)


def test_none_declares_it_proposes_nothing_and_the_planner_skips_prefetch():
    from timing_helpers import make_profile

    from moesim.sim.plan import PlanConfig, Planner
    from moesim.sim.topology import build_topology

    trace = contract_trace()
    profile = make_profile()
    for prefetch, on in (("none", False), ("previous-pass", True)):
        planner = Planner(trace, build_topology(profile, trace.total_object_bytes()),
                          PlanConfig(eviction="lru", prefetch=prefetch, capacity_bytes=20))
        assert planner.prefetch_on is on


class _ToyNextLayer(PrefetchPolicy):
    """Toy, registered by this test only: propose the same experts one layer down."""

    @dataclass(frozen=True)
    class Params:
        weight: float = field(default=1.0, metadata={"help": "the priority of every proposal"})

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        n = self.ctx.n_experts
        if view.layer + 1 >= self.ctx.n_layers:
            return []
        return [PrefetchRequest(int(o) + n, self.params.weight) for o in dict.fromkeys(view.routed.tolist())]


def test_a_new_prefetch_policy_is_contract_tested_with_no_list_to_edit(monkeypatch):
    # its registration line, in a registry copy that other tests (CLI listings) never see
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("toy-next-layer", kind="prefetch")(_ToyNextLayer)
    assert "toy-next-layer" in prefetch_names()  # what the parametrised tests above iterate
    check_prefetch_contract("toy-next-layer")
    check_planners_agree("toy-next-layer")


def test_the_contract_catches_a_policy_that_breaks_it(monkeypatch):
    class Liar(_ToyNextLayer):
        def quiet_cells(self, link_bytes_per_s, compute_window_s):
            return np.ones(len(compute_window_s), dtype=bool)  # says quiet, proposes anyway

    monkeypatch.setitem(registry._REGISTRY, ("prefetch", "toy-liar"),
                        registry.Registered(name="toy-liar", kind="prefetch", cls=Liar))
    with pytest.raises(AssertionError, match="quiet cell"):
        check_prefetch_contract("toy-liar")
