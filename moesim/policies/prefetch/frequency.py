"""Frequency prefetch: each layer's most often used experts so far."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.prefetch.estimators import LayerFrequency
from moesim.policies.prefetch.ranking import RequestList, distinct_in_order, target_layers
from moesim.policies.registry import register


@register("frequency", kind="prefetch")
class FrequencyPrefetch(PrefetchPolicy):
    """Proposes, for layers l+1 .. l+d, the top-k objects by number of cells that used them so far.

    Online: counts come from `observe` only (cells, not tokens; see estimators.py). An object never
    used at a layer is never proposed. Ties go to the lower expert id. k = 0 means "as many as the
    current cell uses" (top-k in decode, the union size in prefill), so one setting fits any model.
    Close to MoE-Infinity's activation-frequency prefetch without its per-request matrix matching.
    """

    @dataclass(frozen=True)
    class Params:
        k: int = field(default=0, metadata={"help": "objects per layer; 0 = as many as the current cell uses"})
        lookahead: int = field(default=1, metadata={"help": "layers ahead to prefetch, >= 1"})

        def check(self) -> None:
            if self.k < 0:
                raise UserError(f"k must be >= 0, got {self.k}", "prefetch policy frequency")
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", "prefetch policy frequency")

    def __init__(self, params: "FrequencyPrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        self._freq = LayerFrequency(ctx.n_layers, ctx.n_experts)

    def observe(self, pass_index: int, cell: int, layer: int, routed: np.ndarray) -> None:
        self._freq.observe(layer, distinct_in_order(routed) - layer * self.ctx.n_experts)

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        out = RequestList(view.resident)
        k = self.params.k or int(distinct_in_order(view.routed).size)
        n_experts = self.ctx.n_experts
        for target in target_layers(view.layer, self.params.lookahead, self.ctx.n_layers):
            used = self._freq.used[target]
            order = np.argsort(-used, kind="stable")[:k]
            order = order[used[order] > 0]
            if order.size == 0:
                continue
            confidence = used[order] / float(used[order[0]])
            out.add_layer(target - view.layer, target * n_experts + order, confidence)
        return out.requests
