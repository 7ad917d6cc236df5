"""Decaying frequency counts in O(1) per pass, and a lazy min-heap over them.

Multiplying every count by `decay` at each pass start would cost O(n) per pass. Instead each new
access adds `unit`, and `unit` grows by 1/decay per pass: all counts keep the same ratios as the
decayed ones, so every comparison gives the same answer. When `unit` grows large the counts are
divided down once (O(n log n), every few hundred passes at decay 0.5, never at decay 1).
With decay 1 counts stay exact integers.
"""

from __future__ import annotations

import heapq
from typing import Callable

from moesim.errors import UserError

_RENORMALISE_AT = 1e100


def check_decay(decay: float, where: str) -> None:
    if not 0.0 < decay <= 1.0:
        raise UserError(f"decay must be in (0, 1], got {decay}", where)


class DecayingUnit:
    """The increment one access adds now; `advance()` once per pass."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.unit: float = 1 if decay == 1.0 else 1.0
        self._growth = 1.0 / decay

    def advance(self) -> bool:
        """Start a pass; True when the caller must divide its counts by `self.unit` and reset it."""
        if self.decay == 1.0:
            return False
        self.unit *= self._growth
        return self.unit > _RENORMALISE_AT


class LazyMinHeap:
    """Min-heap of (key, stamp, obj) where only the entry with an object's latest stamp is live.

    `push` is O(log n); stale entries are dropped when they reach the top, and the heap is
    rebuilt from live entries when stale ones outnumber them (amortised O(1) per push).
    Ties on key go to the smaller stamp (the object touched earlier).
    """

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int]] = []
        self.stamp: dict[int, int] = {}
        self.key: dict[int, float] = {}

    def push(self, obj: int, key: float, stamp: int) -> None:
        self.stamp[obj] = stamp
        self.key[obj] = key
        heapq.heappush(self.heap, (key, stamp, obj))
        if len(self.heap) > 2 * len(self.stamp) + 256:
            self.rebuild()

    def remove(self, obj: int) -> None:
        del self.stamp[obj]
        del self.key[obj]

    def __contains__(self, obj: int) -> bool:
        return obj in self.stamp

    def __len__(self) -> int:
        return len(self.stamp)

    def rebuild(self) -> None:
        self.heap = [(self.key[o], s, o) for o, s in self.stamp.items()]
        heapq.heapify(self.heap)

    def scale_keys(self, factor: float) -> None:
        for obj in self.key:
            self.key[obj] *= factor
        self.rebuild()

    def first(self, eligible: Callable[[int], bool]) -> tuple[float, int, int] | None:
        """The smallest live (key, stamp, obj) with eligible(obj), leaving the heap unchanged."""
        heap = self.heap
        stamp = self.stamp
        aside = []
        found = None
        while heap:
            entry = heap[0]
            if stamp.get(entry[2]) != entry[1]:
                heapq.heappop(heap)
                continue
            if eligible(entry[2]):
                found = entry
                break
            aside.append(heapq.heappop(heap))
        for entry in aside:
            heapq.heappush(heap, entry)
        return found
