"""The request stream a replay serves: what the cache is asked for, cell by cell.

Event-atomic mode (default): a cell requests each of its distinct objects once, in order of first
appearance; repeated routings to the same expert inside a cell are the same request.
Sequential mode: every routed access is a request of its own, in trace order, as naive
replayers and libCacheSim see it.

Memory: a stream holds per request its object, cell and routed accesses (12 bytes), never per
access; `access_request` (8 bytes per access) is built only when something asks for it. What
reads every request without holding them all (the count metrics, moesim/sim/metrics.py) walks
`chunks()`, which a DeferredRequestStream builds from the trace a bounded slice at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace import Trace

MODES = ("event", "sequential")
CHUNK_REQUESTS = 1 << 18
"""Requests per chunk (about 3 MB of chunk arrays): what the count metrics hold at a time."""


@dataclass(frozen=True)
class RequestChunk:
    """Requests lo:hi of a stream: their objects, cells and routed accesses."""

    lo: int
    hi: int
    obj: np.ndarray
    cell: np.ndarray
    accesses: np.ndarray


@dataclass
class RequestStream:
    """obj[i], cell[i] for every request i; requests of cell c are cell_offsets[c]:cell_offsets[c+1].

    In sequential mode every request is its own protection unit (a "cell" of one) but `cell` still
    names the trace cell it came from, so per-layer and per-phase splits work the same.
    `accesses[i]` counts the routed accesses request i served (1 in sequential mode);
    `access_request` maps every routed access to the request that served it (built on first use).
    """

    mode: str
    obj: np.ndarray
    cell: np.ndarray
    cell_offsets: np.ndarray
    accesses: np.ndarray
    trace: Trace | None = field(default=None, repr=False)

    @property
    def n_requests(self) -> int:
        return int(self.obj.shape[0])

    @cached_property
    def access_request(self) -> np.ndarray:
        """The request of every routed access (int64: 8 bytes per access)."""
        assert self.trace is not None, "a stream without its trace has no per-access map"
        return access_requests(self.trace, self.mode)

    def chunks(self, max_requests: int | None = None) -> Iterator[RequestChunk]:
        """The requests in order, at most `max_requests` (default CHUNK_REQUESTS) at a time (views of
        the stream's arrays)."""
        step = _step(max_requests)
        for lo in range(0, self.n_requests, step):
            hi = min(lo + step, self.n_requests)
            yield RequestChunk(lo, hi, self.obj[lo:hi], self.cell[lo:hi], self.accesses[lo:hi])


def _step(max_items: int | None) -> int:
    return max(int(CHUNK_REQUESTS if max_items is None else max_items), 1)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"replay mode must be one of {', '.join(MODES)}, got {mode!r}", "replay")


def _compiled(trace: Trace) -> bool:
    """Whether the compiled event-stream pass can run on `trace` (int32 object ids, a C compiler)."""
    if not trace.n_accesses or trace.n_objects >= np.iinfo(np.int32).max:
        return False
    from moesim.sim.fast import build

    return build.library() is not None


def build_request_stream(trace: Trace, mode: str = "event") -> RequestStream:
    _check_mode(mode)
    if mode == "sequential":
        return RequestStream(mode, trace.object_ids(), trace.access_cell(), trace.cell_offsets.astype(np.int64),
                             np.ones(trace.n_accesses, dtype=np.int32), trace)
    if _compiled(trace):  # the same arrays in two compiled scans, nothing per access
        from moesim.sim.fast.kernel import event_stream

        obj, cell, accesses, offsets, _ = event_stream(trace)
        return RequestStream(mode, obj, cell, offsets, accesses, trace)
    return event_stream_numpy(trace)


def _event_numpy(objs: np.ndarray, access_cell: np.ndarray, cell_lo: int, n_cells: int,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Event mode with numpy over the accesses of cells cell_lo:cell_lo + n_cells: first occurrence
    of each (cell, obj), kept in access order (a lexsort). Returns per request its object, cell and
    accesses, the requests' cell offsets (from 0) and every access's request (from 0)."""
    n = objs.shape[0]
    if n == 0:
        empty = np.zeros(0, np.int32)
        return objs, access_cell, empty, np.zeros(n_cells + 1, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), objs, access_cell))
    sc, so = access_cell[order], objs[order]
    first_sorted = np.ones(n, dtype=bool)
    first_sorted[1:] = (sc[1:] != sc[:-1]) | (so[1:] != so[:-1])
    is_first = np.zeros(n, dtype=bool)
    is_first[order] = first_sorted
    first_idx = np.flatnonzero(is_first)
    # request number of each first occurrence, then every access maps to its group's first occurrence
    request_of_first = np.full(n, -1, dtype=np.int64)
    request_of_first[first_idx] = np.arange(first_idx.size, dtype=np.int64)
    group_first = np.empty(n, dtype=np.int64)
    group_id = np.cumsum(first_sorted) - 1
    group_first_access = order[first_sorted]
    group_first[order] = group_first_access[group_id]
    access_request = request_of_first[group_first]
    req_cell = access_cell[first_idx]
    counts = np.bincount(req_cell.astype(np.int64) - cell_lo, minlength=n_cells)
    cell_offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(counts, out=cell_offsets[1:])
    accesses = np.bincount(access_request, minlength=first_idx.size).astype(np.int32)
    return objs[first_idx], req_cell, accesses, cell_offsets, access_request


def event_stream_numpy(trace: Trace) -> RequestStream:
    """Event mode with numpy: the path without a C compiler, and the reference the compiled pass is
    tested against (it also builds the per-access map, which it is given)."""
    obj, cell, accesses, offsets, access_request = _event_numpy(trace.object_ids(), trace.access_cell(), 0,
                                                                trace.n_cells)
    stream = RequestStream("event", obj, cell, offsets, accesses, trace)
    stream.__dict__["access_request"] = access_request  # fills the cached property
    return stream


def access_requests(trace: Trace, mode: str) -> np.ndarray:
    """The request of every routed access (int64) in `mode`."""
    _check_mode(mode)
    if mode == "sequential":
        return np.arange(trace.n_accesses, dtype=np.int64)
    if _compiled(trace):
        from moesim.sim.fast.kernel import event_stream

        per_access = event_stream(trace, access_request=True)[4]
        assert per_access is not None
        return per_access
    return _event_numpy(trace.object_ids(), trace.access_cell(), 0, trace.n_cells)[4]


def _cell_range_chunk(trace: Trace, c_lo: int, c_hi: int, req_lo: int) -> RequestChunk:
    """The event-mode requests of cells c_lo:c_hi, the first of them numbered req_lo."""
    if _compiled(trace):
        from moesim.sim.fast.kernel import event_stream

        obj, cell, accesses, _, _ = event_stream(trace, c_lo, c_hi)
    else:
        a_lo, a_hi = int(trace.cell_offsets[c_lo]), int(trace.cell_offsets[c_hi])
        layer = np.repeat(trace.cell_layer[c_lo:c_hi], np.diff(trace.cell_offsets[c_lo:c_hi + 1]))
        dtype = np.int32 if trace.n_objects < np.iinfo(np.int32).max else np.int64
        objs = layer.astype(dtype) * trace.meta.n_experts + trace.expert[a_lo:a_hi].astype(dtype)
        access_cell = np.repeat(np.arange(c_lo, c_hi, dtype=np.int32), np.diff(trace.cell_offsets[c_lo:c_hi + 1]))
        obj, cell, accesses, _, _ = _event_numpy(objs, access_cell, c_lo, c_hi - c_lo)
    return RequestChunk(req_lo, req_lo + int(obj.shape[0]), obj, cell, accesses)


def _sequential_chunk(trace: Trace, lo: int, hi: int) -> RequestChunk:
    """Sequential-mode requests lo:hi (the accesses lo:hi), whatever cells they cut."""
    offsets = trace.cell_offsets
    c_lo = int(np.searchsorted(offsets, lo, side="right")) - 1
    c_hi = int(np.searchsorted(offsets, hi, side="left"))
    counts = np.diff(np.clip(offsets[c_lo:c_hi + 1], lo, hi))
    cell = np.repeat(np.arange(c_lo, c_hi, dtype=np.int32), counts)
    dtype = np.int32 if trace.n_objects < np.iinfo(np.int32).max else np.int64
    obj = trace.cell_layer[cell].astype(dtype) * trace.meta.n_experts + trace.expert[lo:hi].astype(dtype)
    return RequestChunk(lo, hi, obj, cell, np.ones(hi - lo, dtype=np.int32))


def object_counts(trace: Trace, end: int, chunk_accesses: int | None = None) -> np.ndarray:
    """Routed accesses per object (int64, n_objects) among the trace's first `end` accesses, read a
    chunk at a time (no object-id array as long as the trace)."""
    counts = np.zeros(trace.n_objects, dtype=np.int64)
    step = _step(chunk_accesses)
    for lo in range(0, end, step):
        counts += np.bincount(_sequential_chunk(trace, lo, min(lo + step, end)).obj, minlength=trace.n_objects)
    return counts


class DeferredRequestStream(RequestStream):
    """The request stream of `trace` in `mode`, its per-request arrays built on first use.

    The compiled count replay needs only the number of requests and their cell offsets, and the
    count metrics walk `chunks()`, built from the trace a slice at a time: a replay of one huge pass
    never holds its whole stream (bench/hardening_memory.py). `obj`, `cell` and `accesses` are made
    whole only when something else reads them.
    """

    def __init__(self, trace: Trace, mode: str, n_requests: int, cell_offsets: np.ndarray) -> None:
        _check_mode(mode)
        self.mode = mode
        self.cell_offsets = cell_offsets
        self.trace = trace
        self._n_requests = int(n_requests)

    @property
    def n_requests(self) -> int:
        return self._n_requests

    @cached_property
    def _built(self) -> RequestStream:
        assert self.trace is not None
        return build_request_stream(self.trace, self.mode)

    @property  # type: ignore[override]
    def obj(self) -> np.ndarray:
        return self._built.obj

    @property  # type: ignore[override]
    def cell(self) -> np.ndarray:
        return self._built.cell

    @property  # type: ignore[override]
    def accesses(self) -> np.ndarray:
        return self._built.accesses

    def chunks(self, max_requests: int | None = None) -> Iterator[RequestChunk]:
        """The requests in order, about `max_requests` at a time, built from the trace: event-mode
        chunks end at cell boundaries (a cell has at most n_experts requests, so one that alone
        passes `max_requests` is still bounded), sequential ones anywhere."""
        if "_built" in self.__dict__:
            yield from super().chunks(max_requests)
            return
        assert self.trace is not None
        step = _step(max_requests)
        if self.mode == "sequential":
            for lo in range(0, self._n_requests, step):
                yield _sequential_chunk(self.trace, lo, min(lo + step, self._n_requests))
            return
        offsets = np.asarray(self.cell_offsets, dtype=np.int64)
        c_lo, n_cells = 0, self.trace.n_cells
        while c_lo < n_cells:
            req_lo = int(offsets[c_lo])
            c_hi = max(int(np.searchsorted(offsets, req_lo + step, side="right")) - 1, c_lo + 1)
            c_hi = min(c_hi, n_cells)
            chunk = _cell_range_chunk(self.trace, c_lo, c_hi, req_lo)
            if chunk.hi != int(offsets[c_hi]):
                raise RuntimeError("the request stream's chunks disagree with its cell offsets")
            if chunk.hi > chunk.lo:
                yield chunk
            c_lo = c_hi

    def __repr__(self) -> str:
        return f"DeferredRequestStream(mode={self.mode!r}, n_requests={self._n_requests})"
