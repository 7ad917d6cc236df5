"""Least-Stale (SpecMD): evict objects untouched in the current forward pass first, FIFO."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState, queues
from moesim.policies.registry import register


def _restore(policy: "LeastStale", state: KernelState) -> None:
    stale, current = queues(state, 2)
    policy._stale = OrderedDict.fromkeys(stale)
    policy._current = OrderedDict.fromkeys(current)


@register("least-stale")
class LeastStale(EvictionPolicy):
    """Two FIFO queues, *stale* and *current* (SpecMD's rule, reconstructed from its paper).

    - Objects touched, inserted or prefetched in the running pass are current; at each pass start
      the current queue moves, in order, to the tail of stale.
    - A hit on a stale object moves it to the tail of current; a hit on a current object leaves it
      where it is. Insertions (demand or prefetch) join the tail of current.
    - Victim: the head of stale; only if no stale object is eligible, the head of current.
    Where it departs from a strict reading: "FIFO by layer position" is taken as insertion order
    (the two agree for demand fetching in single-sequence decode, and no source fixes the order
    for prefetched entries). Meant for the global scope: per layer it loses its cross-layer effect.
    Without prefetch, in single-sequence decode, it evicts exactly what LRU evicts (each object is
    touched at most once per pass); it differs with multi-token passes and prefetch insertions.
    O(1) per hook; the pass-start move is O(objects touched in the pass).
    """

    compiled = CompiledForm("least-stale", restore=_restore)

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._stale: OrderedDict[int, None] = OrderedDict()
        self._current: OrderedDict[int, None] = OrderedDict()

    def on_pass_begin(self, pass_index: int, now: float) -> None:
        if not self._stale:
            self._stale, self._current = self._current, self._stale
        else:
            self._stale.update(self._current)
            self._current.clear()

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._current[obj] = None

    def on_access(self, obj: int, now: float) -> None:
        stale = self._stale
        if obj in stale:
            del stale[obj]
            self._current[obj] = None

    def on_evict(self, obj: int) -> None:
        if obj in self._stale:
            del self._stale[obj]
        else:
            del self._current[obj]

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        for queue in (self._stale, self._current):
            for obj in queue:
                if eligible(obj):
                    return obj
        return None

    def tracked_objects(self) -> Iterable[int]:
        return [*self._stale, *self._current]
