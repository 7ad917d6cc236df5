"""What the trace says later cells of the current pass will request (for the offline oracles)."""

from __future__ import annotations

from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext
from moesim.policies.prefetch.ranking import distinct_in_order


def trace_label(ctx: PolicyContext) -> str:
    """The trace's name for messages: the file it came from if known, else its model, else 'trace'."""
    if ctx.trace_name:
        return str(ctx.trace_name)
    meta = getattr(ctx.trace, "meta", None)
    provenance = getattr(meta, "provenance", None) or {}
    for key in ("path", "file", "source"):
        if provenance.get(key):
            return f"trace {provenance[key]}"
    model = getattr(meta, "model", None)
    return f"trace of {model}" if model else "trace"


def require_trace(ctx: PolicyContext, policy: str) -> Any:
    """ctx.trace, or a UserError saying this policy cannot run where no trace is given."""
    if ctx.trace is None:
        raise UserError("needs the trace (it reads recorded routing or predictions) but this run gives none",
                        f"prefetch policy {policy}")
    return ctx.trace


class FutureCells:
    """Cell look-ups over a Trace: which cells follow a cell in its pass, and their objects.

    Building is O(cells); `objects(c)` is O(accesses of c).
    """

    def __init__(self, trace: Any) -> None:
        self._cell_layer = np.asarray(trace.cell_layer, dtype=np.int64)
        self._cell_offsets = np.asarray(trace.cell_offsets, dtype=np.int64)
        self._expert = np.asarray(trace.expert, dtype=np.int64)
        self._n_experts = int(trace.meta.n_experts)
        pass_offsets = np.asarray(trace.pass_cell_offsets, dtype=np.int64)
        # end (exclusive) of the pass holding each cell
        self._pass_end = np.repeat(pass_offsets[1:], np.diff(pass_offsets))

    @property
    def n_cells(self) -> int:
        return int(self._cell_layer.shape[0])

    def layer(self, cell: int) -> int:
        return int(self._cell_layer[cell])

    def following(self, cell: int, count: int, cross_pass: bool = False) -> range:
        """The next `count` cells after `cell` that belong to the same pass (any pass if cross_pass)."""
        end = self.n_cells if cross_pass else int(self._pass_end[cell])
        return range(cell + 1, min(cell + 1 + count, end))

    def objects(self, cell: int) -> np.ndarray:
        """Distinct object ids the cell requests, in order of first appearance."""
        lo, hi = self._cell_offsets[cell], self._cell_offsets[cell + 1]
        return distinct_in_order(self._cell_layer[cell] * self._n_experts + self._expert[lo:hi])
