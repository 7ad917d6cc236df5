"""Count replay: hits, misses and victims with no timing at all (the inner loop of every sweep).

It drives the same CacheCore the timing engine and the GPU executor drive; with prefetch off and
the same replay mode, the engine must agree with it request for request.

Two engines give identical results (moesim.sim.fast): the compiled kernel (replay.c) for the
classic policies, chosen automatically, and the reference path for every policy
(`engine="reference"`, `--engine reference` or MOESIM_ENGINE=reference). The reference path is not
a loop of its own: it is the planner (moesim/sim/plan.py) with prefetch and timing off, so the
count replay and the timing engine decide outcomes in one Python driver, as replay.c and plan.c
share one cell driver in C. The reference stays the oracle the compiled paths are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim import fast
from moesim.sim.cache_core import CacheCore, CoreConfig, CoreCounters
from moesim.sim.future import DeferredFuture, StreamFuture
from moesim.sim.plan import PlanConfig, Planner
from moesim.sim.plan_policies import make_context, profile_counts
from moesim.sim.requests import MODES, DeferredRequestStream, RequestStream
from moesim.traces.format.trace import Trace


@dataclass(frozen=True)
class ReplayConfig:
    """One replay: a policy, a capacity, a scope and a replay mode. Pure data, hashable."""

    policy: str = "lru"
    capacity_bytes: int = 0
    scope: str = "global"
    mode: str = "event"
    seed: int = 0
    layer_capacity: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "capacity_bytes": int(self.capacity_bytes),
            "scope": self.scope,
            "mode": self.mode,
            "seed": self.seed,
            "layer_capacity": None if self.layer_capacity is None else list(self.layer_capacity),
        }


@dataclass
class CountResult:
    """Per-request outcome codes plus what is needed to split them by phase, layer and request."""

    trace: Trace
    config: ReplayConfig
    spec: PolicySpec
    stream: RequestStream
    outcomes: np.ndarray  # int8 per request (cache_core outcome codes)
    bypassed: np.ndarray  # bool per request: a miss that could not be admitted
    counters: CoreCounters = field(default_factory=CoreCounters)
    victims: list[tuple[int, int]] | None = None  # (request index, victim obj) if recorded
    capacities: list[int] | None = None  # bytes per partition as the core resolved them
    core: CacheCore | None = None  # the core after the last request (final residency, policy state)
    engine: str = "reference"  # which engine ran: "fast" (compiled) or "reference" (Python)
    engine_note: str | None = None  # why the reference engine ran where "auto" would have run the fast one


def make_core(trace: Trace, config: ReplayConfig, stream: RequestStream, spec: PolicySpec | None = None,
              defer_future: bool = False) -> tuple[CacheCore, PolicySpec, StreamFuture | DeferredFuture | None]:
    """The cache core for a replay of `stream`, with the policy's future view when it is offline
    (built on first query with `defer_future`)."""
    spec = spec or parse_spec(config.policy, "eviction")
    offline = bool(getattr(spec.entry.cls, "offline", False))
    future: StreamFuture | DeferredFuture | None = None
    if offline:
        future = DeferredFuture(stream, trace.n_objects) if defer_future else StreamFuture(stream.obj, trace.n_objects)
    ctx = make_context(trace, config.seed, future, profile_counts(trace, spec), offline)
    core = CacheCore(
        CoreConfig(capacity_bytes=int(config.capacity_bytes), scope=config.scope,
                   layer_capacity=config.layer_capacity),
        spec.build,
        ctx,
    )
    return core, spec, future


def count_replay(trace: Trace, config: ReplayConfig, record_victims: bool = False,
                 spec: PolicySpec | None = None, engine: str | None = None) -> CountResult:
    """Replay `trace` through the cache core, with the engine `engine` picks (moesim.sim.fast):
    "auto" (default, or $MOESIM_ENGINE), "fast" or "reference". Both give the same result.
    """
    spec = spec or parse_spec(config.policy, "eviction")
    if config.mode not in MODES:
        raise UserError(f"replay mode must be one of {', '.join(MODES)}, got {config.mode!r}", "replay")
    chosen, note = fast.engine_choice(spec, trace.n_objects, engine)
    if chosen == "fast":
        return _count_replay_fast(trace, config, spec, record_victims)
    result = _count_replay_reference(trace, config, spec, record_victims)
    result.engine_note = note
    return result


def _count_replay_fast(trace: Trace, config: ReplayConfig, spec: PolicySpec, record_victims: bool) -> CountResult:
    """The compiled replay: O(accesses) in C, O(objects) in Python, no per-request Python objects;
    the request stream's per-request arrays are built only if something reads them."""
    from moesim.sim.fast import kernel, policy_state

    sequential = config.mode == "sequential"
    if sequential:
        n_requests, offsets = trace.n_accesses, trace.cell_offsets
    else:
        n_requests, offsets = kernel.event_requests(trace)
    stream = DeferredRequestStream(trace, config.mode, n_requests, offsets)
    core, spec, future = make_core(trace, config, stream, spec, defer_future=True)
    policy = fast.kernel_policy(spec)
    assert policy is not None  # choose_engine checked it
    run = kernel.replay(trace, core, policy.code, sequential=sequential, n_requests=n_requests,
                        record_victims=record_victims, params=policy.params, rng=policy.form.rng)
    policy_state.restore(core.policies, policy.form, run, core.partition_of)
    if future is not None and n_requests:
        future.position = n_requests - 1  # where the reference loop leaves it
    core.finish()
    return CountResult(trace=trace, config=config, spec=spec, stream=stream, outcomes=run.outcomes,
                       bypassed=run.bypassed, counters=core.counters, victims=run.victims,
                       capacities=list(core.capacity), core=core, engine="fast")


def _count_replay_reference(trace: Trace, config: ReplayConfig, spec: PolicySpec, record_victims: bool) -> CountResult:
    """The planner (moesim/sim/plan.py) with prefetch "none", miss handling "stall" and no topology:
    no clock and no copies, so it only decides outcomes, bypasses and victims, in either replay
    mode. Its cell step (moesim/sim/plan_decisions.py `serve_cell`) is the one Python loop that
    decides them, for this replay and for the timing engine alike."""
    none, stall = parse_spec("none", "prefetch"), parse_spec("stall", "miss")
    plan_config = PlanConfig(eviction=spec.label(), prefetch=none.label(), miss=stall.label(),
                             capacity_bytes=int(config.capacity_bytes), scope=config.scope,
                             layer_capacity=config.layer_capacity, seed=config.seed, mode=config.mode,
                             parsed=(spec, none, stall))
    planner = Planner(trace, None, plan_config, record_victims=record_victims)
    planner.decide_rest()
    outcomes, bypassed = planner.finish_counts()
    core = planner.core
    return CountResult(trace=trace, config=config, spec=planner.eviction_spec, stream=planner.stream,
                       outcomes=outcomes, bypassed=bypassed, counters=core.counters, victims=planner.victims,
                       capacities=list(core.capacity), core=core)
