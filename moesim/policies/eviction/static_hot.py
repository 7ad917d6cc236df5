"""Static hot pinning: the most-requested objects of a profile stay resident; LRU for the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.compiled import CompiledForm, restore_order
from moesim.policies.eviction.lru import LRU
from moesim.policies.registry import register


@register("static-hot")
class StaticHot(LRU):
    """Pin the hottest objects of a profile in `share` of the capacity; LRU over the rest.

    - The profile is ctx.profile_counts: routed accesses per object over the first
      `profile_passes` passes of the replayed trace (0 = the whole trace, which makes this an
      offline bound on static placement, not a deployable policy). The profiled prefix is replayed
      too, so pinned objects hit from the first request.
    - Objects are taken by count, highest first (ties: lower object id), skipping any that no
      longer fits, until `share` x capacity is spent; objects never seen in the profile are not
      pinned. Per-layer scope pins within each layer's own capacity.
    - Pinned objects are loaded before the first request and never evicted; the remaining
      capacity is a plain LRU (see lru.py).
    O(1) per hook; pin selection is O(n log n) once.
    """

    # the kernel runs LRU over the unpinned objects; both parameters are spent choosing the pins,
    # in Python, before the kernel starts
    compiled = CompiledForm("lru", params=("profile_passes", "share"), restore=restore_order)

    @dataclass(frozen=True)
    class Params:
        profile_passes: int = field(default=0, metadata={"help": "passes profiled from the trace's start (0 = all: an offline bound)"})
        share: float = field(default=0.5, metadata={"help": "share of the capacity given to pinned objects (0..1)"})

        def check(self) -> None:
            if self.profile_passes < 0:
                raise UserError(f"profile_passes must be >= 0, got {self.profile_passes}", "policy static-hot")
            if not 0.0 <= self.share <= 1.0:
                raise UserError(f"share must be in [0, 1], got {self.share}", "policy static-hot")

    def pinned_objects(self) -> list[int]:
        ctx = self.ctx
        if ctx.profile_counts is None or ctx.capacity_bytes is None:
            return []
        counts = np.asarray(ctx.profile_counts, dtype=np.int64)
        candidates = np.flatnonzero(counts > 0)
        if ctx.partition is not None:
            candidates = candidates[np.asarray(ctx.object_layer)[candidates] == ctx.partition]
        ranked = candidates[np.lexsort((candidates, -counts[candidates]))]
        budget = int(self.params.share * ctx.capacity_bytes)
        sizes = np.asarray(ctx.object_bytes, dtype=np.int64)
        pins = []
        for obj in ranked.tolist():
            size = int(sizes[obj])
            if size <= budget:
                pins.append(obj)
                budget -= size
        return pins
