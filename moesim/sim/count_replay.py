"""Count replay: hits, misses and victims with no timing at all (the inner loop of every sweep).

It drives the same CacheCore the timing engine and the GPU executor drive; with prefetch off and
the same replay mode, the engine must agree with it request for request.

Two engines give identical results (moesim.sim.fast): the compiled kernel (replay.c) for the
classic policies, chosen automatically, and the reference loop over CacheCore.serve_cell for
every policy (`engine="reference"`, `--engine reference` or MOESIM_ENGINE=reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext
from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim import fast
from moesim.sim.cache_core import CacheCore, CoreConfig, CoreCounters
from moesim.sim.future import DeferredFuture, StreamFuture
from moesim.sim.requests import MODES, DeferredRequestStream, RequestStream, build_request_stream, object_counts
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


def make_context(trace: Trace, seed: int, future: StreamFuture | None,
                 profile_counts: np.ndarray | None = None, offline: bool = False) -> PolicyContext:
    return PolicyContext(
        n_objects=trace.n_objects,
        n_layers=trace.meta.n_layers,
        n_experts=trace.meta.n_experts,
        object_layer=trace.object_layer_array(),
        object_bytes=trace.object_bytes_array(),
        seed=seed,
        future=future,
        profile_counts=profile_counts,
        trace=trace if offline else None,
    )


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


def profile_counts(trace: Trace, spec: PolicySpec) -> np.ndarray | None:
    """Routed accesses per object over the first `profile_passes` passes (0 = all), for policies
    that have that parameter (static pinning); None for the others."""
    passes = getattr(spec.params, "profile_passes", None)
    if passes is None:
        return None
    end_cell = int(trace.pass_cell_offsets[min(int(passes), trace.n_passes)]) if passes > 0 else trace.n_cells
    return object_counts(trace, int(trace.cell_offsets[end_cell]))


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
    """One CacheCore.serve_cell per protection unit: O(requests) Python steps and no per-request
    objects beyond the outcome list; the stream and the split into passes are built with numpy."""
    stream = build_request_stream(trace, config.mode)
    core, spec, future = make_core(trace, config, stream, spec)
    n_req = stream.n_requests
    bypassed = np.zeros(n_req, dtype=bool)
    victims_log: list[tuple[int, int]] | None = [] if record_victims else None
    cell_victims: list[tuple[int, int]] | None = [] if record_victims else None
    obj_list = stream.obj.tolist()
    req_offsets = stream.cell_offsets.tolist()
    pass_cells = trace.pass_cell_offsets.tolist()
    sequential = stream.mode == "sequential"
    serve = core.serve_cell
    begin_pass = core.begin_pass
    outcomes: list[int] = []
    extend = outcomes.extend
    for p in range(trace.n_passes):
        begin_pass(p)
        for c in range(pass_cells[p], pass_cells[p + 1]):
            lo, hi = req_offsets[c], req_offsets[c + 1]
            if sequential:
                units = [(i, i + 1) for i in range(lo, hi)]
            elif lo == hi:
                continue
            else:
                units = ((lo, hi),)  # event mode: one protection unit per cell
            for a, b in units:
                if future is not None:
                    future.position = b - 1
                outs, missed = serve(obj_list[a:b], 0.0, cell_victims)
                extend(outs)
                if missed:
                    bypassed[[a + k for k in missed]] = True
                if cell_victims:
                    victims_log.extend((a + k, v) for k, v in cell_victims)  # type: ignore[union-attr]
                    cell_victims.clear()
    core.finish()
    return CountResult(trace=trace, config=config, spec=spec, stream=stream,
                       outcomes=np.asarray(outcomes, dtype=np.int8), bypassed=bypassed,
                       counters=core.counters, victims=victims_log, capacities=list(core.capacity), core=core)


