"""FIFO: evict in insertion order; hits change nothing."""

from __future__ import annotations

from moesim.policies.compiled import CompiledForm, restore_order
from moesim.policies.eviction.lru import LRU
from moesim.policies.registry import register


@register("fifo")
class FIFO(LRU):
    """First in, first out: LRU's queue with hits left where they are. A prefetch insertion enters
    the queue like a demand one.

    Identical hit counts to libCacheSim's FIFO on unit-size objects (tests/policies check it).
    Departure from the textbook: a protected object at the head (in use or in flight) is skipped
    and keeps its place, so the victim is the oldest *eligible* object. O(1) per hook.
    """

    compiled = CompiledForm("fifo", restore=restore_order)

    def on_access(self, obj: int, now: float) -> None:
        pass
