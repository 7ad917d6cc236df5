"""Previous-pass reuse: a layer will need what it needed in the last pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.prefetch.ranking import RequestList, distinct_with_counts, target_layers
from moesim.policies.registry import register

Record = tuple[int, np.ndarray, np.ndarray]


@register("previous-pass", kind="prefetch")
class PreviousPassPrefetch(PrefetchPolicy):
    """Proposes, for layers l+1 .. l+d, the objects each used in its most recent earlier pass.

    Online: reads only cells already served (`observe`). In single-sequence decode this is "the
    last token's experts", the temporal-locality guess behind LRU-style caches used as a predictor.
    Within a layer, objects routed by more tokens come first (all equal in decode). A layer absent
    from the previous pass falls back to the last pass that had it.
    """

    @dataclass(frozen=True)
    class Params:
        lookahead: int = field(default=1, metadata={"help": "layers ahead to prefetch, >= 1"})

        def check(self) -> None:
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", "prefetch policy previous-pass")

    def __init__(self, params: "PreviousPassPrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        # per layer, the records (pass, objects best first, confidence) of its last two passes: the
        # older one serves when a pass whose cells are out of layer order already served the layer
        self._records: list[list[Record]] = [[] for _ in range(ctx.n_layers)]

    def observe(self, pass_index: int, cell: int, layer: int, routed: np.ndarray) -> None:
        objs, counts = distinct_with_counts(routed)
        order = np.argsort(-counts, kind="stable")
        confidence = counts[order] / float(counts.max()) if counts.size else counts.astype(np.float64)
        records = self._records[layer]
        if records and records[-1][0] == pass_index:
            records.pop()  # a second cell of the layer in one pass replaces the first
        records.append((pass_index, objs[order], confidence))
        del records[:-2]

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        out = RequestList(view.resident)
        for target in target_layers(view.layer, self.params.lookahead, self.ctx.n_layers):
            earlier = [r for r in self._records[target] if r[0] < view.pass_index]
            if earlier:
                out.add_layer(target - view.layer, earlier[-1][1], earlier[-1][2])
        return out.requests
