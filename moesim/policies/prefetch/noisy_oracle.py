"""Noisy oracle: the oracle's set with a chosen precision and recall, to map accuracy to speed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.prefetch.future_cells import FutureCells, require_trace
from moesim.policies.prefetch.ranking import RequestList
from moesim.policies.registry import register


@register("noisy-oracle", kind="prefetch")
class NoisyOraclePrefetch(PrefetchPolicy):
    """The oracle's objects for the next d cells, each kept with probability `recall`, plus false ones.

    Offline (reads the trace). For each target cell, with T its true objects: every true object is
    kept independently with probability `recall` (K kept), then F false objects are drawn uniformly,
    without replacement, from the same layer's other objects, with E[F] = K (1 - precision) /
    precision (stochastic rounding), so precision = K / (K + F) holds in expectation and, summed over
    a stream, sum K / sum (K + F) converges to it. When the layer has fewer other objects than F, all
    of them are taken and precision comes out higher than asked. True and false objects are
    proposed in a random order at one priority per cell distance, so a budget-limited engine cannot
    tell them apart.
    The draws depend only on (seed, target cell): the prediction for a cell is the same whatever the
    cache holds, whichever cell proposes it and however often; objects already present are left out
    after drawing. Not from a paper: a knob for "how good must a predictor be".
    """

    offline = True

    @dataclass(frozen=True)
    class Params:
        precision: float = field(default=1.0, metadata={"help": "expected share of proposals that are needed, (0, 1]"})
        recall: float = field(default=1.0, metadata={"help": "probability each needed object is proposed, [0, 1]"})
        seed: int = field(default=0, metadata={"help": "seed of the noise (with the cell index)"})
        lookahead: int = field(default=1, metadata={"help": "cells (layers) ahead to prefetch, >= 1"})

        def check(self) -> None:
            where = "prefetch policy noisy-oracle"
            if not 0.0 < self.precision <= 1.0:
                raise UserError(f"precision must be in (0, 1], got {self.precision}", where)
            if not 0.0 <= self.recall <= 1.0:
                raise UserError(f"recall must be in [0, 1], got {self.recall}", where)
            if self.seed < 0:
                raise UserError(f"seed must be >= 0, got {self.seed}", where)
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", where)

    def __init__(self, params: "NoisyOraclePrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        self._cells = FutureCells(require_trace(ctx, "noisy-oracle"))

    def prediction(self, target: int) -> np.ndarray:
        """The noisy object set for trace cell `target`, in proposal order (independent of residency)."""
        p = self.params
        rng = np.random.default_rng([p.seed, target])
        true = self._cells.objects(target)
        kept = true[rng.random(true.size) < p.recall]
        expected_false = kept.size * (1.0 - p.precision) / p.precision
        n_false = math.floor(expected_false)
        if rng.random() < expected_false - n_false:
            n_false += 1
        n_experts = self.ctx.n_experts
        base = self._cells.layer(target) * n_experts
        is_other = np.ones(n_experts, dtype=bool)
        is_other[true - base] = False
        others = base + np.flatnonzero(is_other)
        false = rng.choice(others, size=min(n_false, others.size), replace=False)
        return rng.permutation(np.concatenate([kept, false.astype(np.int64)]))

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        out = RequestList(view.resident)
        for target in self._cells.following(view.cell, self.params.lookahead):
            priority = -float(target - view.cell)
            for obj in self.prediction(target):
                out.add(obj, priority)
        return out.requests
