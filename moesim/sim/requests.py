"""The request stream a replay serves: what the cache is asked for, cell by cell.

Event-atomic mode (default): a cell requests each of its distinct objects once, in order of first
appearance; repeated routings to the same expert inside a cell are the same request.
Sequential mode: every routed access is a request of its own, in trace order, as naive
replayers and libCacheSim see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace import Trace

MODES = ("event", "sequential")


@dataclass
class RequestStream:
    """obj[i], cell[i] for every request i; requests of cell c are cell_offsets[c]:cell_offsets[c+1].

    In sequential mode every request is its own protection unit (a "cell" of one) but `cell` still
    names the trace cell it came from, so per-layer and per-phase splits work the same.
    `access_request` maps every routed access to the request that served it.
    """

    mode: str
    obj: np.ndarray
    cell: np.ndarray
    cell_offsets: np.ndarray
    access_request: np.ndarray

    @property
    def n_requests(self) -> int:
        return int(self.obj.shape[0])


def build_request_stream(trace: Trace, mode: str = "event") -> RequestStream:
    if mode not in MODES:
        raise UserError(f"replay mode must be one of {', '.join(MODES)}, got {mode!r}", "replay")
    if mode == "sequential":
        return RequestStream(
            mode=mode,
            obj=trace.object_ids(),
            cell=trace.access_cell(),
            cell_offsets=trace.cell_offsets.astype(np.int64),
            access_request=np.arange(trace.n_accesses, dtype=np.int64),
        )
    if trace.n_accesses and trace.n_objects < np.iinfo(np.int32).max:  # object_ids() is int32 then
        from moesim.sim.fast import build

        if build.library() is not None:  # the same arrays in one compiled pass
            from moesim.sim.fast.kernel import event_stream

            obj, cell, access_request, cell_offsets = event_stream(trace)
            return RequestStream(mode, obj, cell, cell_offsets, access_request)
    return event_stream_numpy(trace)


def event_stream_numpy(trace: Trace) -> RequestStream:
    """Event mode with numpy: first occurrence of each (cell, obj), kept in access order (a lexsort).

    The path without a C compiler, and the reference the compiled pass is tested against.
    """
    objs = trace.object_ids()
    access_cell = trace.access_cell()
    mode = "event"
    n = objs.shape[0]
    if n == 0:
        return RequestStream(mode, objs, access_cell, np.zeros(trace.n_cells + 1, np.int64), np.zeros(0, np.int64))
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
    counts = np.bincount(req_cell, minlength=trace.n_cells)
    cell_offsets = np.zeros(trace.n_cells + 1, dtype=np.int64)
    np.cumsum(counts, out=cell_offsets[1:])
    return RequestStream(mode=mode, obj=objs[first_idx], cell=req_cell, cell_offsets=cell_offsets,
                         access_request=access_request)


class DeferredRequestStream(RequestStream):
    """The request stream of `trace` in `mode`, its per-request arrays built on first use.

    The compiled count replay needs only the number of requests and their cell offsets; building
    `obj`, `cell` and `access_request` for 50 M accesses would take more memory than the replay
    itself (bench/RESULTS.md), so they are made when something (metrics, a planner) reads them.
    """

    def __init__(self, trace: Trace, mode: str, n_requests: int, cell_offsets: np.ndarray) -> None:
        if mode not in MODES:
            raise UserError(f"replay mode must be one of {', '.join(MODES)}, got {mode!r}", "replay")
        self.mode = mode
        self.cell_offsets = cell_offsets
        self._trace = trace
        self._n_requests = int(n_requests)

    @property
    def n_requests(self) -> int:
        return self._n_requests

    @cached_property
    def _built(self) -> RequestStream:
        return build_request_stream(self._trace, self.mode)

    @property  # type: ignore[override]
    def obj(self) -> np.ndarray:
        return self._built.obj

    @property  # type: ignore[override]
    def cell(self) -> np.ndarray:
        return self._built.cell

    @property  # type: ignore[override]
    def access_request(self) -> np.ndarray:
        return self._built.access_request

    def __repr__(self) -> str:
        return f"DeferredRequestStream(mode={self.mode!r}, n_requests={self._n_requests})"
