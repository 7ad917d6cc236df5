"""Turning predictions into an ordered list of PrefetchRequests.

Every prefetcher here ends the same way: candidates for the next few layers, each with a
confidence, become requests whose priority puts nearer layers first (a nearer layer's experts are
needed sooner) and, within a layer, more confident objects first. Objects already resident or in
flight are left out, as are repeats, so the engine never sees a request it has to skip.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from moesim.policies.base import PrefetchRequest


def target_layers(layer: int, lookahead: int, n_layers: int) -> range:
    """Layers layer+1 .. layer+lookahead that exist: predictions stay inside the current pass.

    No policy here wraps into the next pass's first layers; a pass boundary is where a decode step
    samples its token, so layer 0 of the next pass is not predictable from the last layer's state.
    """
    return range(layer + 1, min(layer + lookahead, n_layers - 1) + 1)


def nearer_first(distance: int, confidence: float) -> float:
    """Priority for an object `distance` layers (or cells) ahead with a confidence in [0, 1].

    Any object one layer nearer outranks every object farther away; confidence orders a layer.
    """
    return -float(distance) + 0.5 * float(confidence)


def distinct_in_order(objs: np.ndarray) -> np.ndarray:
    """Distinct values of `objs` in order of first appearance (int64).

    A dict keeps insertion order; on the few dozen ids of a cell it is several times faster than
    np.unique, and this runs once per cell.
    """
    keys = dict.fromkeys(np.asarray(objs, dtype=np.int64).tolist())
    return np.fromiter(keys, dtype=np.int64, count=len(keys))


def distinct_with_counts(objs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values in order of first appearance, and how often each occurs."""
    objs = np.asarray(objs, dtype=np.int64)
    if objs.size == 0:
        return objs, np.zeros(0, dtype=np.int64)
    values, first, counts = np.unique(objs, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    return values[order], counts[order]


def rank_by_score(objs: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Objects and scores sorted by decreasing score; ties keep the given order (deterministic)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return np.asarray(objs)[order], np.asarray(scores, dtype=np.float64)[order]


class RequestList:
    """Collects requests, dropping objects that are present (resident or in flight) or repeated."""

    def __init__(self, present: Callable[[int], bool]) -> None:
        self._present = present
        self._seen: set[int] = set()
        self.requests: list[PrefetchRequest] = []

    def add(self, obj: int, priority: float) -> bool:
        """Append obj unless present or already listed; True if it was appended."""
        obj = int(obj)
        if obj in self._seen or self._present(obj):
            return False
        self._seen.add(obj)
        self.requests.append(PrefetchRequest(obj=obj, priority=float(priority)))
        return True

    def add_layer(self, distance: int, objs: Iterable[int], confidence: Iterable[float]) -> None:
        """Append a layer's candidates (already in preference order) with nearer-first priorities."""
        for obj, conf in zip(objs, confidence):
            self.add(obj, nearer_first(distance, conf))
