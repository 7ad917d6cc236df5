"""Count replay: hits, misses and victims with no timing at all (the inner loop of every sweep).

It drives the same CacheCore the timing engine and the GPU executor drive; with prefetch off and
the same replay mode, the engine must agree with it request for request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.policies.base import PolicyContext
from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim.cache_core import CacheCore, CoreConfig, CoreCounters
from moesim.sim.future import StreamFuture
from moesim.sim.requests import RequestStream, build_request_stream
from moesim.traces.trace import Trace


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


def make_core(trace: Trace, config: ReplayConfig, stream: RequestStream,
              spec: PolicySpec | None = None) -> tuple[CacheCore, PolicySpec, StreamFuture | None]:
    """The cache core for a replay of `stream`, with the policy's future view when it is offline."""
    spec = spec or parse_spec(config.policy, "eviction")
    offline = bool(getattr(spec.entry.cls, "offline", False))
    future = StreamFuture(stream.obj, trace.n_objects) if offline else None
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
    end = int(trace.cell_offsets[end_cell])
    return np.bincount(trace.object_ids()[:end], minlength=trace.n_objects)


def count_replay(trace: Trace, config: ReplayConfig, record_victims: bool = False,
                 spec: PolicySpec | None = None) -> CountResult:
    """Replay `trace` through the cache core: one CacheCore.serve_cell per protection unit.

    O(requests) Python steps and no per-request objects beyond the outcome list; the stream and the
    split into passes are built with numpy beforehand.
    """
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
                # event mode, the common case: one protection unit per cell
                if future is not None:
                    future.position = hi - 1
                outs, missed = serve(obj_list[lo:hi], 0.0, cell_victims)
                extend(outs)
                if missed:
                    bypassed[[lo + k for k in missed]] = True
                if cell_victims:
                    victims_log.extend((lo + k, v) for k, v in cell_victims)  # type: ignore[union-attr]
                    cell_victims.clear()
                continue
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
