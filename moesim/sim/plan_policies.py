"""The policies one plan runs, built once from its config: eviction, prefetch, miss handling, placement.

One PolicyContext is built per run; the eviction policy gets it without the trace unless it is
offline (it reads the future), prefetchers and the placement policy get the trace (oracles,
recorded predictions, profiling). The miss handler's and prefetcher's capabilities the planner
branches on are read here once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from moesim.policies.base import PolicyContext
from moesim.policies.placement import parse_placement
from moesim.policies.registry import PolicySpec
from moesim.sim.future import DeferredFuture, StreamFuture
from moesim.sim.requests import RequestStream, object_counts
from moesim.traces.format.trace import Trace


def make_context(trace: Trace, seed: int, future: StreamFuture | DeferredFuture | None,
                 profile_counts: np.ndarray | None = None, offline: bool = False) -> PolicyContext:
    """The policies' view of a run: its objects, seed, future (offline policies) and the trace."""
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


def profile_counts(trace: Trace, spec: PolicySpec) -> np.ndarray | None:
    """Routed accesses per object over the first `profile_passes` passes (0 = all), for policies
    that have that parameter (static pinning); None for the others."""
    passes = getattr(spec.params, "profile_passes", None)
    if passes is None:
        return None
    end_cell = int(trace.pass_cell_offsets[min(int(passes), trace.n_passes)]) if passes > 0 else trace.n_cells
    return object_counts(trace, int(trace.cell_offsets[end_cell]))  # read in chunks: no per-access copy


@dataclass
class PlanPolicies:
    eviction_spec: PolicySpec
    prefetch_spec: PolicySpec
    miss_spec: PolicySpec
    ctx: PolicyContext
    eviction_ctx: PolicyContext  # ctx without the trace unless the eviction policy is offline
    future: StreamFuture | None  # the offline eviction policy's view of the requests to come
    prefetcher: Any
    handler: Any
    placed: bytearray | None  # per object: 1 where the placement policy keeps it on the CPU; None: none is
    prefetch_on: bool
    handler_fetch_all: bool
    keeps_lowbit: bool
    lossy: bool

    @classmethod
    def build(cls, trace: Trace, stream: RequestStream, specs: tuple[PolicySpec, ...], placement: str,
              seed: int) -> PlanPolicies:
        eviction_spec, prefetch_spec, miss_spec = specs
        offline = bool(getattr(eviction_spec.entry.cls, "offline", False))
        future = StreamFuture(stream.obj, trace.n_objects) if offline else None
        ctx = make_context(trace, seed, future, profile_counts(trace, eviction_spec), offline=True)  # with the trace
        # the trace goes only to offline eviction policies; prefetchers get it (oracles, recorded predictions)
        eviction_ctx = ctx if offline else dataclasses.replace(ctx, trace=None)
        prefetcher = prefetch_spec.build(ctx)
        handler = miss_spec.build(ctx)
        on_cpu = parse_placement(placement).build(dataclasses.replace(ctx, trace=trace)).on_cpu()
        return cls(
            eviction_spec=eviction_spec, prefetch_spec=prefetch_spec, miss_spec=miss_spec, ctx=ctx,
            eviction_ctx=eviction_ctx, future=future, prefetcher=prefetcher, handler=handler,
            placed=bytearray(on_cpu.astype("uint8").tobytes()) if on_cpu.any() else None,
            prefetch_on=not getattr(prefetcher, "proposes_nothing", False),
            handler_fetch_all=bool(getattr(handler, "fetch_all", False)),
            keeps_lowbit=bool(getattr(handler, "keeps_lowbit", False)),
            lossy=bool(getattr(handler, "lossy", False)),
        )
