"""LFU: evict the least frequently used object, optionally with counts that decay every pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState, heap_entries
from moesim.policies.eviction._counts import DecayingUnit, LazyMinHeap, check_decay
from moesim.policies.registry import register


def _restore(policy: "LFU", state: KernelState) -> None:
    integer = policy.params.decay == 1.0  # the reference keeps exact integer counts at decay 1
    policy._heap.key, policy._heap.stamp = heap_entries(state, integer)
    policy._heap.rebuild()
    policy._clock = state.clock
    policy._unit.unit = 1 if integer else state.unit


@register("lfu")
class LFU(EvictionPolicy):
    """Least frequently used, counting requests since the object was (re)inserted.

    - An insertion (demand or prefetch) counts 1; every hit adds 1. A count is forgotten when its
      object is evicted (libCacheSim's LFU does the same; "perfect" LFU with history would not).
    - Ties go to the object whose count reached its value first, i.e. the least recently touched
      of the tied ones: libCacheSim's LFU (FIFO within a frequency bucket) breaks them the same
      way, and its hit counts are identical at decay 1 (tests/policies check it).
    - `decay` < 1 multiplies every count by `decay` at each pass start (done in O(1) by growing
      the increment instead, see _counts.py), so old popularity fades.
    O(log n) per hook (a lazy heap).
    """

    compiled = CompiledForm("lfu", params=("decay",), kernel_params=lambda p: (p.decay,), restore=_restore)

    @dataclass(frozen=True)
    class Params:
        decay: float = field(default=1.0, metadata={"help": "multiply every count by this at each pass start (0 < decay <= 1)"})

        def check(self) -> None:
            check_decay(self.decay, "policy lfu")

    def __init__(self, params: "LFU.Params", ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._unit = DecayingUnit(params.decay)
        self._heap = LazyMinHeap()
        self._clock = 0

    def on_pass_begin(self, pass_index: int, now: float) -> None:
        if self._unit.advance():
            self._heap.scale_keys(1.0 / self._unit.unit)
            self._unit.unit = 1.0

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._clock += 1
        self._heap.push(obj, self._unit.unit, self._clock)

    def on_access(self, obj: int, now: float) -> None:
        self._clock += 1
        self._heap.push(obj, self._heap.key[obj] + self._unit.unit, self._clock)

    def on_evict(self, obj: int) -> None:
        self._heap.remove(obj)

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        entry = self._heap.first(eligible)
        return None if entry is None else entry[2]

    def tracked_objects(self) -> Iterable[int]:
        return self._heap.stamp
