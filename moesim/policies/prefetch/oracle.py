"""Oracle prefetch: the objects the next cells of the pass will request, read from the trace."""

from __future__ import annotations

from dataclasses import dataclass, field

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.prefetch.future_cells import FutureCells, require_trace
from moesim.policies.prefetch.ranking import RequestList
from moesim.policies.registry import register


@register("oracle", kind="prefetch")
class OraclePrefetch(PrefetchPolicy):
    """Perfect prediction d cells ahead (offline: reads the trace's future; an upper bound).

    After cell c starts, proposes every object of cells c+1 .. c+d of the same pass, nearer cell
    first; within a cell, in order of first request. It never crosses into the next pass, like
    every prefetcher here. Not from a paper: it bounds what any predictor with lookahead d can do
    on the given link (the engine still decides what fits).
    """

    offline = True

    @dataclass(frozen=True)
    class Params:
        lookahead: int = field(default=1, metadata={"help": "cells (layers) ahead to prefetch, >= 1"})

        def check(self) -> None:
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", "prefetch policy oracle")

    def __init__(self, params: "OraclePrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        self._cells = FutureCells(require_trace(ctx, "oracle"))

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        out = RequestList(view.resident)
        for target in self._cells.following(view.cell, self.params.lookahead):
            priority = -float(target - view.cell)
            for obj in self._cells.objects(target):
                out.add(obj, priority)
        return out.requests
