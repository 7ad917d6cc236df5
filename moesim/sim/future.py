"""The future of a request stream, for offline policies (Belady) and oracle prefetchers."""

from __future__ import annotations

import numpy as np

from moesim.policies.base import NEVER


class StreamFuture:
    """Next-use look-ups over a request stream of object ids.

    `position` is set by the driver to the last request index of the cell being served, so
    `next_use(obj, position)` is the first request for obj after the current cell.
    Building is O(n log n). A replay asks with non-decreasing `after` per object, so a per-object
    cursor answers in amortised O(1); an earlier `after` falls back to a binary search.
    """

    def __init__(self, objs: np.ndarray, n_objects: int) -> None:
        objs = np.asarray(objs, dtype=np.int64)
        self.position = -1
        order = np.argsort(objs, kind="stable")
        self._positions = order.astype(np.int64)
        counts = np.bincount(objs, minlength=n_objects)
        self._start = np.zeros(n_objects + 1, dtype=np.int64)
        np.cumsum(counts, out=self._start[1:])
        self._cursor = self._start[:-1].tolist()
        self._end = self._start[1:].tolist()
        # next request of the same object, for every request (NEVER if none)
        nxt = np.full(objs.shape[0], NEVER, dtype=np.int64)
        same = objs[order[1:]] == objs[order[:-1]]
        nxt[order[:-1][same]] = order[1:][same]
        self.next_request = nxt

    def next_use(self, obj: int, after: int) -> int:
        positions = self._positions
        k = self._cursor[obj]
        hi = self._end[obj]
        lo = int(self._start[obj])
        if k > lo and positions[k - 1] > after:
            k = lo + int(np.searchsorted(positions[lo:hi], after, side="right"))
        while k < hi and positions[k] <= after:
            k += 1
        self._cursor[obj] = k
        return int(positions[k]) if k < hi else NEVER

    def uses(self, obj: int) -> np.ndarray:
        return self._positions[self._start[obj] : self._start[obj + 1]]


class DeferredFuture:
    """A StreamFuture over `stream.obj`, built on the first query.

    The compiled replay computes next uses itself; the policy objects it leaves in the core hold a
    future only for what may come after (a caller that keeps serving requests), so building the
    O(n log n) index up front would be wasted work. `position` is shared with the built future.
    """

    def __init__(self, stream: object, n_objects: int) -> None:
        self._stream = stream
        self._n_objects = n_objects
        self._future: StreamFuture | None = None
        self._position = -1

    def _built(self) -> StreamFuture:
        if self._future is None:
            self._future = StreamFuture(self._stream.obj, self._n_objects)  # type: ignore[attr-defined]
            self._future.position = self._position
        return self._future

    @property
    def position(self) -> int:
        return self._position if self._future is None else self._future.position

    @position.setter
    def position(self, value: int) -> None:
        self._position = value
        if self._future is not None:
            self._future.position = value

    @property
    def next_request(self) -> np.ndarray:
        return self._built().next_request

    def next_use(self, obj: int, after: int) -> int:
        return self._built().next_use(obj, after)

    def uses(self, obj: int) -> np.ndarray:
        return self._built().uses(obj)
