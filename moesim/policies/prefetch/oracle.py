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

    After cell c starts, proposes every object of cells c+1 .. c+d, nearer cell first; within a
    cell, in order of first request. By default it stays within the pass, like every predictor
    here (a gate applied to this token's hidden state cannot see the next token); `cross_pass`
    lets it look into the next passes' first layers too, the bound for a predictor that could.
    Not from a paper: it bounds what any predictor with lookahead d can do on the given link
    (the engine still decides what fits). Objects already present are proposed too, so
    the planner protects them from this batch's evictions.
    """

    offline = True

    @dataclass(frozen=True)
    class Params:
        lookahead: int = field(default=1, metadata={"help": "cells (layers) ahead to prefetch, >= 1"})
        cross_pass: bool = field(default=False, metadata={"help": "also look into the next passes' cells"})

        def check(self) -> None:
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", "prefetch policy oracle")

    def __init__(self, params: "OraclePrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        self._cells = FutureCells(require_trace(ctx, "oracle"))

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        # Present objects are proposed too: the planner skips their copy but keeps them from being
        # evicted by this batch's prefetches (an oracle knows they are needed next).
        out = RequestList(_never_present)
        for target in self._cells.following(view.cell, self.params.lookahead, self.params.cross_pass):
            priority = -float(target - view.cell)
            for obj in self._cells.objects(target):
                out.add(obj, priority)
        return out.requests


def _never_present(obj: int) -> bool:
    return False
