"""Gate-lookahead prefetch: the experts the next layers' gates pick from the current hidden state."""

from __future__ import annotations

from dataclasses import dataclass, field

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.prefetch.recorded import load_recorded
from moesim.policies.prefetch.ranking import RequestList
from moesim.policies.registry import register


@register("gate-lookahead", kind="prefetch")
class GateLookaheadPrefetch(PrefetchPolicy):
    """Proposes every expert the recorder's lookahead gates picked, for layers l+1 .. l+d.

    Reads the trace's recorded predictions "lookahead_1" .. "lookahead_<d>" for the current cell
    only (what a real system knows once layer l's hidden state exists: deployable, not offline).
    This is the fixed top-k speculative prefetch of Mixtral-offloading and SpecMD (next layer's gate
    on the current hidden state); SpecMD uses d = 1. Within a layer, picks with a higher recorded
    probability come first ("lookahead_<d>_score" when recorded, else how many tokens picked it).
    A trace without the predictions is refused at construction with a message naming it.
    """

    @dataclass(frozen=True)
    class Params:
        lookahead: int = field(default=1, metadata={"help": "layers ahead; needs predictions lookahead_1..d"})

        def check(self) -> None:
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", "prefetch policy gate-lookahead")

    def __init__(self, params: "GateLookaheadPrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        self._recorded = load_recorded(ctx, "gate-lookahead", params.lookahead, need_scores=False)

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        out = RequestList(view.resident)
        for rec in self._recorded:
            if view.layer + rec.distance >= self.ctx.n_layers:
                break
            objs, confidence = rec.cell(view.cell, view.layer, self.ctx.n_experts)
            out.add_layer(rec.distance, objs, confidence)
        return out.requests
