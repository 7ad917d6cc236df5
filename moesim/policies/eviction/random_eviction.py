"""Random: evict a uniformly random eligible object (seeded, so runs repeat exactly)."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.registry import register

_BLOCK = 4096  # uniforms drawn per call to the generator
_TRIES = 32  # rejection-sampling attempts before listing the eligible objects


@register("random")
class RandomEviction(EvictionPolicy):
    """Uniformly random among eligible residents, from numpy's Generator seeded with ctx.seed.

    Rejection sampling over the resident list (uniform over the eligible ones, O(1) expected when
    few are protected); after 32 rejections it lists the eligible objects and draws among them.
    Per-layer scope gives partition l the seed ctx.seed + l. Same seed, same victims.
    """

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._rng = np.random.default_rng(ctx.seed)
        self._uniforms: list[float] = []
        self._items: list[int] = []
        self._index: dict[int, int] = {}

    def _uniform(self) -> float:
        if not self._uniforms:
            self._uniforms = self._rng.random(_BLOCK).tolist()
            self._uniforms.reverse()
        return self._uniforms.pop()

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._index[obj] = len(self._items)
        self._items.append(obj)

    def on_access(self, obj: int, now: float) -> None:
        pass

    def on_evict(self, obj: int) -> None:
        i = self._index.pop(obj)
        last = self._items.pop()
        if last != obj:
            self._items[i] = last
            self._index[last] = i

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        items = self._items
        if not items:
            return None
        for _ in range(_TRIES):
            obj = items[int(self._uniform() * len(items))]
            if eligible(obj):
                return obj
        candidates = [o for o in items if eligible(o)]
        if not candidates:
            return None
        return candidates[int(self._uniform() * len(candidates))]

    def tracked_objects(self) -> Iterable[int]:
        return self._items
