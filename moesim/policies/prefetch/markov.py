"""Cross-layer Markov prefetch: the next layer's likely experts given this layer's, learned online."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.prefetch.estimators import MarkovChain
from moesim.policies.prefetch.ranking import RequestList, distinct_in_order, rank_by_score
from moesim.policies.registry import register


@register("markov", kind="prefetch")
class MarkovPrefetch(PrefetchPolicy):
    """Proposes the top-n successors of the current cell's experts for layers l+1 .. l+d.

    Online: learns P(y at l+1 | x at l) from consecutive served cells of the same pass, smoothed
    towards layer l+1's frequency with weight `alpha` (estimators.py gives the formula). The score of
    y is the mean of P(y | x) over the current cell's distinct experts x; layers further ahead
    chain the estimate (the previous layer's scores, normalised, weigh the sources). Only objects
    seen at least once at the target layer are proposed; ties go to the lower expert id.
    n = 0 means "as many as the current cell uses". In the spirit of the expert-transition
    predictors of ProMoE and MoE-Infinity, but a first-order chain over experts, not a learned
    model over hidden states; prefill cells learn cell-level co-occurrence.
    """

    @dataclass(frozen=True)
    class Params:
        n: int = field(default=0, metadata={"help": "objects per layer; 0 = as many as the current cell uses"})
        lookahead: int = field(default=1, metadata={"help": "layers ahead to prefetch, >= 1"})
        alpha: float = field(default=1.0, metadata={"help": "smoothing weight (pseudo-observations) of the "
                                                             "next layer's frequency prior, > 0"})

        def check(self) -> None:
            where = "prefetch policy markov"
            if self.n < 0:
                raise UserError(f"n must be >= 0, got {self.n}", where)
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", where)
            if not self.alpha > 0:
                raise UserError(f"alpha must be > 0, got {self.alpha}", where)

    def __init__(self, params: "MarkovPrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        self.chain = MarkovChain(ctx.n_layers, ctx.n_experts, params.alpha)

    def observe(self, pass_index: int, cell: int, layer: int, routed: np.ndarray) -> None:
        self.chain.observe(pass_index, layer, distinct_in_order(routed) - layer * self.ctx.n_experts)

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        out = RequestList(view.resident)
        current = distinct_in_order(view.routed)
        n = self.params.n or int(current.size)
        n_experts = self.ctx.n_experts
        predicted = self.chain.predict(view.layer, current - view.layer * n_experts, self.params.lookahead)
        for step, probs in enumerate(predicted, start=1):
            target = view.layer + step
            candidates = np.flatnonzero(self.chain.frequency.seen(target))
            experts, scores = rank_by_score(candidates, probs[candidates])
            out.add_layer(step, target * n_experts + experts[:n], scores[:n])
        return out.requests
