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
from moesim.sim.cache_core import MISS_COMPULSORY, CacheCore, CoreConfig, CoreCounters
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


def make_context(trace: Trace, seed: int, future: StreamFuture | None,
                 profile_counts: np.ndarray | None = None) -> PolicyContext:
    return PolicyContext(
        n_objects=trace.n_objects,
        n_layers=trace.meta.n_layers,
        n_experts=trace.meta.n_experts,
        object_layer=trace.object_layer_array(),
        object_bytes=trace.object_bytes_array(),
        seed=seed,
        future=future,
        profile_counts=profile_counts,
    )


def make_core(trace: Trace, config: ReplayConfig, stream: RequestStream,
              spec: PolicySpec | None = None) -> tuple[CacheCore, PolicySpec, StreamFuture | None]:
    """The cache core for a replay of `stream`, with the policy's future view when it is offline."""
    spec = spec or parse_spec(config.policy, "eviction")
    offline = bool(getattr(spec.entry.cls, "offline", False))
    future = StreamFuture(stream.obj, trace.n_objects) if offline else None
    ctx = make_context(trace, config.seed, future, _profile_counts(trace, spec))
    core = CacheCore(
        CoreConfig(capacity_bytes=int(config.capacity_bytes), scope=config.scope,
                   layer_capacity=config.layer_capacity),
        spec.build,
        ctx,
    )
    return core, spec, future


def _profile_counts(trace: Trace, spec: PolicySpec) -> np.ndarray | None:
    """Static policies profile on a prefix of the trace itself when asked to (param `profile_passes`)."""
    passes = getattr(spec.params, "profile_passes", None)
    if passes is None:
        return None
    end_cell = int(trace.pass_cell_offsets[min(int(passes), trace.n_passes)]) if passes > 0 else trace.n_cells
    end = int(trace.cell_offsets[end_cell])
    return np.bincount(trace.object_ids()[:end], minlength=trace.n_objects)


def count_replay(trace: Trace, config: ReplayConfig, record_victims: bool = False) -> CountResult:
    """Replay `trace` through the cache core; O(requests) Python steps, no per-access allocation."""
    stream = build_request_stream(trace, config.mode)
    core, spec, future = make_core(trace, config, stream)
    n_req = stream.n_requests
    outcomes = np.empty(n_req, dtype=np.int8)
    bypassed = np.zeros(n_req, dtype=bool)
    victims_log: list[tuple[int, int]] | None = [] if record_victims else None
    obj_list = stream.obj.tolist()
    cell_pass = trace.cell_pass()
    sequential = stream.mode == "sequential"
    req_offsets = stream.cell_offsets.tolist()
    begin_cell, admit, fill, end_cell = core.begin_cell, core.admit, core.fill, core.end_cell
    current_pass = -1
    for c in range(trace.n_cells):
        p = int(cell_pass[c])
        if p != current_pass:
            core.begin_pass(p)
            current_pass = p
        lo, hi = req_offsets[c], req_offsets[c + 1]
        units = [(i, i + 1) for i in range(lo, hi)] if sequential else [(lo, hi)]
        for a, b in units:
            objs = obj_list[a:b]
            if future is not None:
                future.position = b - 1
            outs = begin_cell(objs)
            for k, (obj, out) in enumerate(zip(objs, outs)):
                if out >= MISS_COMPULSORY:
                    victims = admit(obj)
                    if victims is None:
                        bypassed[a + k] = True
                    else:
                        fill(obj)
                        if victims_log is not None:
                            victims_log.extend((a + k, v) for v in victims)
            end_cell(objs)
            outcomes[a:b] = outs
    core.finish()
    return CountResult(trace=trace, config=config, spec=spec, stream=stream, outcomes=outcomes,
                       bypassed=bypassed, counters=core.counters, victims=victims_log)
