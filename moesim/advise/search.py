"""The search: bound every group of configurations, time the promising ones, stop on the budget.

    outcome = search_machine(machine, workload, objective="tpot", deadline=time.monotonic() + 30)

Order (deterministic): the baseline first (LRU, no prefetch, stall, largest cache, the profile's
overlap); then, breadth first over groups of configurations that share a time bound
(moesim/advise/space.py `bound_key` dimensions), every group's cheap configurations (each eviction
policy with no prefetch), then every group's others (prefetchers, miss handling), those whose
eviction policy did best alone first. Groups with a bounds.py bound come first, lowest bound first.
Before a configuration is timed its bound is compared with the best value timed so far: one whose
bound is not below the best cannot win and is skipped (`pruned`). The bound is moesim/sim/bounds.py's
where it holds (lossless, every expert on the device); where experts may run on the CPU (a
placement, miss handling "cpu") it is the weaker bound of the device's non-expert work alone.
A run the time left cannot fit is skipped, and all are once the deadline passes (`not_reached`)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from moesim.advise.bookkeeping import with_bookkeeping
from moesim.advise.space import BASELINE, DIMENSIONS, Candidate, Dimension, Machine, enumerate_space
from moesim.advise.workload import Workload
from moesim.hw_profiles.loader import apply_overrides
from moesim.policies.registry import lookup, parse_spec
from moesim.sim.bounds import compute_bounds
from moesim.sim.timed_replay import TimedConfig, setup_planner, timed_replay

OBJECTIVES = ("tpot", "ttft", "throughput", "energy")
"""Each objective as a value to minimise: tpot_s, ttft_s, seconds per output token (1 / tokens/s), J/token."""


@dataclass
class Evaluation:
    """One timed configuration: its metrics, bound and memory."""

    candidate: Candidate
    metrics: dict[str, float]  # objective name -> value to minimise, plus display metrics
    summary: dict[str, Any]
    bound: dict[str, float]  # objective -> lower bound (0 where none holds)
    vram_bytes: int
    dram_bytes: int
    config: TimedConfig
    seconds: float  # wall time this evaluation took


@dataclass
class MachineOutcome:
    machine: Machine
    evaluations: list[Evaluation]
    pruned: list[tuple[Candidate, float]]  # (candidate, its bound)
    not_reached: list[Candidate]
    total: int
    objective: str
    baseline: Evaluation | None
    group_bounds: dict[tuple[str, ...], dict[str, float]]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def best(self, objective: str) -> Evaluation | None:
        timed = [e for e in self.evaluations if math.isfinite(e.metrics[objective])]
        return min(timed, key=lambda e: (e.metrics[objective], e.candidate.index)) if timed else None


def timed_config(machine: Machine, workload: Workload, candidate: Candidate) -> TimedConfig:
    fields = candidate.config_fields()
    return TimedConfig(profile=machine.name, profile_overrides=candidate.profile_set(),
                       model=workload.model if workload.spec is not None else None, **fields)


def resolved_profile(machine: Machine, candidate: Candidate) -> Any:
    overrides = candidate.profile_set()
    return apply_overrides(machine.profile, overrides) if overrides else machine.profile


def objective_values(summary: dict[str, Any]) -> dict[str, float]:
    """Values to minimise, from a timed summary."""
    tokens = _output_tokens(summary)
    total = float(summary["time"]["total_s"])
    link_bytes = sum(float(link["bytes"]) for link in summary["links"].values())
    return {
        "tpot": _nan_inf(summary["tpot_s"]["mean"]),
        "ttft": _nan_inf(summary["ttft_s"]["mean"]),
        "throughput": total / tokens if tokens else math.inf,
        "energy": float(summary["energy_j"]["total"]) / tokens if tokens else math.inf,
        "bytes_per_token": link_bytes / tokens if tokens else math.inf,
    }


def _output_tokens(summary: dict[str, Any]) -> float:
    tps = float(summary.get("tokens_per_s") or 0.0)
    return tps * float(summary["time"]["total_s"])


def _nan_inf(value: Any) -> float:
    v = float(value) if value is not None else math.nan
    return v if math.isfinite(v) else math.inf


def group_bound(machine: Machine, workload: Workload, candidate: Candidate) -> dict[str, float]:
    """Lower bounds of the candidate's group per objective.

    bounds.py's time bound where it holds (every expert runs on the device, lossless); where it does
    not (a placement or miss handler that runs experts on the CPU) the weaker bound that the device's
    non-expert work runs serially whatever happens to the experts (`non_expert_bound`). The
    per-request TTFT/TPOT bounds are the ones every timed result reports beside itself
    (moesim/sim/timed_result.py builds them from the same Bounds), so pruning and the report agree.
    """
    config = dataclasses.replace(timed_config(machine, workload, candidate), eviction="lru", prefetch="none",
                                 miss="stall")
    profile = resolved_profile(machine, candidate)
    setup = setup_planner(workload.trace, profile, config)
    trace = workload.trace
    if not bounds_hold(candidate) or candidate.config_fields().get("placement", "gpu") != "gpu":
        return non_expert_bound(trace, setup.dense)
    overlap = getattr(config, "overlap", None) or getattr(profile, "overlap", "layer")
    b = compute_bounds(trace, setup.planner.stream, setup.topology, setup.dense, setup.expert_full,
                       config.capacity_bytes, config.scope, config.layer_capacity, config.seed,
                       pipelined=overlap == "expert")
    return _objective_bounds(trace, b)


def non_expert_bound(trace: Any, dense: np.ndarray) -> dict[str, float]:
    """Bounds from the device's non-expert work alone (attention, norms, router: `dense` per cell),
    which runs on the device in cell order wherever the experts run: an interval of passes lasts at
    least the sum of its cells' non-expert times."""
    from moesim.sim.bounds import Bounds

    prefix = np.concatenate(([0.0], np.cumsum(dense)))
    per_pass = np.diff(prefix[trace.pass_cell_offsets])
    b = Bounds(belady_misses=None, belady_miss_bytes=None, ideal_cell_end=np.cumsum(dense),
               pass_min_duration=per_pass, valid=False)
    return _objective_bounds(trace, b)


def _objective_bounds(trace: Any, b: Any) -> dict[str, float]:
    """Per objective, the bound the timed results report beside themselves (timed_result's request
    table built from `b`); no energy bound is derived, so energy is never pruned."""
    from moesim.sim.timed_result import _request_table

    zeros = np.zeros(trace.n_cells)
    requests = _request_table(trace, zeros, zeros, b)
    tokens = float(requests["output_tokens"].sum()) if len(requests) else 0.0
    return {
        "tpot": _mean_or_zero(requests["tpot_bound_s"]) if len(requests) else 0.0,
        "ttft": _mean_or_zero(requests["ttft_bound_s"]) if len(requests) else 0.0,
        "throughput": b.time_bound_s / tokens if tokens else 0.0,
        "energy": 0.0,
    }


def _mean_or_zero(values: Any) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else 0.0


def bounds_hold(candidate: Candidate) -> bool:
    miss = candidate.config_fields().get("miss", "stall")
    handler = lookup(parse_spec(miss, "miss").name, "miss").cls
    return bool(getattr(handler, "bounds_hold", True))


def _rest_order(members: list[Candidate], done: list[Evaluation], objective: str) -> list[Candidate]:
    """A group's remaining configurations (prefetch or miss handling changed), those whose eviction
    policy did best alone first; ties and untimed ones in table order."""
    rest = [c for c in members if not _defaults_beyond_eviction(c)]
    alone: dict[str, float] = {}
    key = members[0].group_key() if members else ()
    for ev in done:
        if _defaults_beyond_eviction(ev.candidate) and ev.candidate.group_key() == key:
            alone[ev.candidate.labels().get("eviction", "")] = ev.metrics[objective]
    return sorted(rest, key=lambda c: (alone.get(c.labels().get("eviction", ""), math.inf), c.index))


def _defaults_beyond_eviction(candidate: Candidate) -> bool:
    labels = candidate.labels()
    return all(labels.get(k, v) == v for k, v in BASELINE.items() if k != "eviction")


def _baseline(candidates: list[Candidate], machine: Machine) -> Candidate:
    """LRU, no prefetch, stall, at the largest cache, with the profile's own overlap mode (its engine's
    default) where the clock has one: what a user gets without changing anything."""
    plain = [c for c in candidates if c.is_baseline()]
    default = getattr(machine.profile, "overlap", None)
    own = [c for c in plain if c.labels().get("overlap", default) == default]
    return (own or plain or candidates)[0]


def _bound_key(candidate: Candidate, dimensions: Sequence[Dimension]) -> tuple[Any, ...]:
    return candidate.group_key(dimensions) + (bounds_hold(candidate),)


def _expected_cost(candidate: Candidate, done: list[Evaluation]) -> float:
    """Seconds the candidate will likely take: the slowest timed run with the same prefetch policy
    (prefetchers dominate the cost), else the slowest so far. Starting a run that would overrun the
    deadline breaks the budget, since a run cannot be interrupted."""
    prefetch = candidate.labels().get("prefetch")
    same = [e.seconds for e in done if e.candidate.labels().get("prefetch") == prefetch]
    pool = same or [e.seconds for e in done]
    return max(pool) if pool else 0.0


def evaluate(machine: Machine, workload: Workload, candidate: Candidate, bound: dict[str, float]) -> Evaluation:
    start = time.perf_counter()
    config = timed_config(machine, workload, candidate)
    profile = resolved_profile(machine, candidate)
    result = timed_replay(workload.trace, profile, config)
    summary = with_bookkeeping(result, workload.trace, profile, machine.bookkeeping_per_byte)
    metrics = objective_values(summary)
    metrics["decode_bytes_per_token"] = decode_bytes_per_token(result)
    return Evaluation(candidate, metrics, summary, bound, candidate.vram_bytes(workload),
                      candidate.dram_bytes(), config, time.perf_counter() - start)


def decode_bytes_per_token(result: Any) -> float:
    """Bytes every link moved during decode passes, per decoded token (steady state: no cold load)."""
    cells = result.cells
    decode = cells["phase"] == "decode"
    tokens = float(cells.loc[decode].groupby("pass")["tokens"].max().sum()) if decode.any() else 0.0
    columns = [c for c in cells.columns if c.startswith("bytes_")]
    moved = float(cells.loc[decode, columns].to_numpy().sum()) if columns else 0.0
    return moved / tokens if tokens else math.inf


def search_machine(machine: Machine, workload: Workload, objective: str = "tpot", deadline: float = math.inf,
                   prune: bool = True, dimensions: Sequence[Dimension] = DIMENSIONS,
                   on_step: Callable[[str], None] | None = None) -> MachineOutcome:
    """Search one machine. `prune=False` with no deadline is the brute-force sweep of the same space."""
    started = time.perf_counter()
    candidates = enumerate_space(machine, workload, dimensions)
    notes: list[str] = []
    if not candidates:
        notes.append("nothing fits: the model's dense weights and KV cache leave no room, or DRAM cannot hold "
                     "the experts and the profile has no SSD")
        return MachineOutcome(machine, [], [], [], 0, objective, None, {}, 0.0, notes)
    groups: dict[tuple[str, ...], list[Candidate]] = {}
    for cand in candidates:
        groups.setdefault(cand.group_key(dimensions), []).append(cand)
    # one bound per group, and one more per group for its members whose experts may run on the CPU
    bounds: dict[tuple[Any, ...], dict[str, float]] = {}
    for cand in candidates:
        key = _bound_key(cand, dimensions)
        if key not in bounds:
            bounds[key] = group_bound(machine, workload, cand)
    baseline = _baseline(candidates, machine)
    # groups with a bounds.py bound first, lowest bound first; then those only the weaker non-expert
    # bound covers (experts placed on the CPU), in table order
    def group_rank(key: tuple[str, ...]) -> tuple[Any, ...]:
        first = groups[key][0]
        strong = bounds_hold(first) and first.config_fields().get("placement", "gpu") == "gpu"
        return (0, bounds[_bound_key(first, dimensions)][objective], first.index) if strong else (1, first.index)

    order = sorted(groups, key=group_rank)
    evaluations: list[Evaluation] = []
    pruned: list[tuple[Candidate, float]] = []
    not_reached: list[Candidate] = []
    state = {"best": math.inf, "stopped": False}

    def visit(cand: Candidate) -> Evaluation | None:
        bound = bounds[_bound_key(cand, dimensions)]
        if prune and bound[objective] >= state["best"]:
            pruned.append((cand, bound[objective]))
            if on_step:
                on_step("pruned")
            return None
        if cand is not baseline:
            now = time.monotonic()
            state["stopped"] = state["stopped"] or now > deadline
            # past the deadline, or a run that would overrun it (a cheaper one after it may still fit)
            if state["stopped"] or now + _expected_cost(cand, evaluations) > deadline:
                not_reached.append(cand)
                return None
        ev = evaluate(machine, workload, cand, bound)
        evaluations.append(ev)
        state["best"] = min(state["best"], ev.metrics[objective])
        if on_step:
            on_step("timed")
        return ev

    base_eval = visit(baseline)
    # breadth first: every group's cheap configurations (each eviction policy, other policies at their
    # defaults) before any group's prefetchers, so that a tight budget still sees every placement
    for key in order:
        for cand in groups[key]:
            if cand is not baseline and _defaults_beyond_eviction(cand):
                visit(cand)
    for key in order:
        for cand in _rest_order(groups[key], evaluations, objective):
            visit(cand)
    return MachineOutcome(machine, evaluations, pruned, not_reached, len(candidates), objective, base_eval,
                          {k[:-1]: v for k, v in bounds.items() if k[-1]}, time.perf_counter() - started, notes)
