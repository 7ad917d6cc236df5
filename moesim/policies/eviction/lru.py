"""LRU: evict the least recently used object (hits and insertions both count as a use)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, restore_order
from moesim.policies.registry import register


@register("lru")
class LRU(EvictionPolicy):
    """Least recently used. A prefetch insertion counts as a use, as in mixtral-offloading's cache.

    Per-layer LRU (mixtral-offloading's eviction groups) is this policy with `--scope layer`.
    Identical hit counts to libCacheSim's LRU on unit-size objects (tests/policies check it).
    O(1) per hook; victim() skips only protected objects at the cold end.
    """

    compiled = CompiledForm("lru", restore=restore_order)

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._order: OrderedDict[int, None] = OrderedDict()

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._order[obj] = None

    def on_access(self, obj: int, now: float) -> None:
        self._order.move_to_end(obj)

    def on_evict(self, obj: int) -> None:
        del self._order[obj]

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        for obj in self._order:
            if eligible(obj):
                return obj
        return None

    def tracked_objects(self) -> Iterable[int]:
        return self._order
