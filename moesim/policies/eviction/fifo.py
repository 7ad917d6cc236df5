"""FIFO: evict in insertion order; hits change nothing."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.registry import register


@register("fifo")
class FIFO(EvictionPolicy):
    """First in, first out. A prefetch insertion enters the queue like a demand one.

    Identical hit counts to libCacheSim's FIFO on unit-size objects (tests/policies check it).
    Departure from the textbook: a protected object at the head (in use or in flight) is skipped
    and keeps its place, so the victim is the oldest *eligible* object. O(1) per hook.
    """

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._order: OrderedDict[int, None] = OrderedDict()

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._order[obj] = None

    def on_access(self, obj: int, now: float) -> None:
        pass

    def on_evict(self, obj: int) -> None:
        del self._order[obj]

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        for obj in self._order:
            if eligible(obj):
                return obj
        return None

    def tracked_objects(self) -> Iterable[int]:
        return self._order
