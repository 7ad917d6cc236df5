"""Score-budget prefetch (SpecMD's dynamic prefetch): most probable first, as far as the link can go."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchPolicy, PrefetchRequest, PrefetchView, ServedCells
from moesim.policies.prefetch.estimators import LayerFrequency, MarkovChain
from moesim.policies.prefetch.recorded import has_scores, load_recorded
from moesim.policies.prefetch.ranking import RequestList, distinct_in_order, target_layers
from moesim.policies.registry import register

SOURCES = ("auto", "recorded", "markov", "frequency")
PENDING_LIMIT = 4096
"""Cells queued for the online estimate before they are counted anyway (bounds the queue's memory)."""


@register("score-budget", kind="prefetch")
class ScoreBudgetPrefetch(PrefetchPolicy):
    """Proposes objects in decreasing predicted probability until the current window's bytes are spent.

    Budget: view.link_bytes_per_s x view.compute_window_s, the bytes the link can move while the
    current cell computes. Candidates for layers l+1 .. l+d are taken in decreasing probability
    (ties: nearer layer, then the source's order); objects already present cost nothing and are
    skipped; the list stops at the first candidate that no longer fits, so the proposed bytes never
    exceed the budget and adding the next candidate would. Priority = the probability.
    Probabilities (`source`): "recorded" reads the trace's "lookahead_<d>_score" gate probabilities
    for the current cell (deployable; several tokens combine as 1 - prod(1 - p)); "markov" and
    "frequency" are the online estimates of estimators.py, learned from served cells only; "auto"
    is "recorded" when the trace has scores, else "markov".
    Departures from SpecMD, whose exact rule was not published (its paper's dynamic prefetch):
    the budget is the link's bytes during the current compute window, not a probability-mass
    threshold (use `min_score` for one); bytes already queued on the link are not subtracted (the
    engine's own issue budget covers them). With a window too short for one object, nothing is
    proposed, which is SpecMD's "experts too large for the bandwidth" regime.
    """

    @dataclass(frozen=True)
    class Params:
        source: str = field(default="auto", metadata={"help": "probabilities from: auto, recorded, markov, frequency"})
        lookahead: int = field(default=1, metadata={"help": "layers ahead to consider, >= 1"})
        min_score: float = field(default=0.0, metadata={"help": "propose only probabilities above this"})
        alpha: float = field(default=1.0, metadata={"help": "markov smoothing weight, > 0"})

        def check(self) -> None:
            where = "prefetch policy score-budget"
            if self.source not in SOURCES:
                raise UserError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}", where)
            if self.lookahead < 1:
                raise UserError(f"lookahead must be >= 1, got {self.lookahead}", where)
            if not 0.0 <= self.min_score < 1.0:
                raise UserError(f"min_score must be in [0, 1), got {self.min_score}", where)
            if not self.alpha > 0:
                raise UserError(f"alpha must be > 0, got {self.alpha}", where)

    def __init__(self, params: "ScoreBudgetPrefetch.Params", ctx: PolicyContext) -> None:
        params.check()
        super().__init__(params, ctx)
        source = params.source
        if source == "auto":
            source = "recorded" if ctx.trace is not None and has_scores(ctx, params.lookahead) else "markov"
        self.source = source
        self._recorded = load_recorded(ctx, "score-budget", params.lookahead, need_scores=True) \
            if source == "recorded" else []
        self._chain = MarkovChain(ctx.n_layers, ctx.n_experts, params.alpha) if source == "markov" else None
        # "frequency" keeps only the per-layer counts (no transition table, which can be large)
        self._freq: LayerFrequency | None = (
            self._chain.frequency if self._chain is not None
            else LayerFrequency(ctx.n_layers, ctx.n_experts) if source == "frequency" else None
        )
        self._pending: list[tuple[np.ndarray, ...]] = []  # blocks of cells: passes, layers, sizes, routed ids
        self._pending_cells = 0
        self._bytes = np.asarray(ctx.object_bytes, dtype=np.float64)
        # no candidate can cost less than this: a smaller budget proposes nothing (checked before scoring)
        self._min_bytes = float(self._bytes.min()) if self._bytes.size else 0.0

    def observe(self, pass_index: int, cell: int, layer: int, routed: np.ndarray) -> None:
        # the estimate is read only by windows that fit an object (few of them in decode), so cells
        # are queued and counted in one batch when it is read; the counts are the same
        if self._chain is not None or self._freq is not None:
            routed = np.array(routed, dtype=np.int64).reshape(-1)
            self._queue(np.array([pass_index], dtype=np.int64), np.array([layer], dtype=np.int64),
                        np.array([routed.size], dtype=np.int64), routed)

    def observe_cells(self, cells: ServedCells) -> None:
        if self._chain is not None or self._freq is not None:
            offsets = np.asarray(cells.offsets, dtype=np.int64)
            self._queue(np.asarray(cells.pass_index, dtype=np.int64), np.asarray(cells.layer, dtype=np.int64),
                        np.diff(offsets), np.asarray(cells.routed[offsets[0]:offsets[-1]], dtype=np.int64))

    def _queue(self, passes: np.ndarray, layers: np.ndarray, sizes: np.ndarray, routed: np.ndarray) -> None:
        self._pending.append((passes, layers, sizes, routed))
        self._pending_cells += passes.shape[0]
        if self._pending_cells >= PENDING_LIMIT:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._pending_cells = self._pending, [], 0
        if not pending:
            return
        passes, layers, sizes, routed = (np.concatenate([block[i] for block in pending]) for i in range(4))
        if self._chain is not None:
            self._chain.observe_arrays(passes, layers, sizes, routed)
        elif self._freq is not None:
            self._freq.observe_arrays(layers, sizes, routed)

    def quiet_cells(self, link_bytes_per_s: float, compute_window_s: np.ndarray) -> np.ndarray:
        # propose()'s first test, cell by cell: a budget below the smallest object proposes nothing
        return float(link_bytes_per_s) * np.asarray(compute_window_s, dtype=np.float64) < self._min_bytes

    def candidates(self, view: PrefetchView) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate object for the window with its probability, best first."""
        objs: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        n_experts = self.ctx.n_experts
        if self.source == "recorded":
            for rec in self._recorded:
                if view.layer + rec.distance >= self.ctx.n_layers:
                    break
                o, p = rec.cell(view.cell, view.layer, n_experts)
                objs.append(o)
                probs.append(p)
        else:
            self._flush()
            layers = target_layers(view.layer, self.params.lookahead, self.ctx.n_layers)
            if self._chain is not None:
                current = distinct_in_order(view.routed) - view.layer * n_experts
                per_layer = self._chain.predict(view.layer, current, len(layers))
            else:
                per_layer = [self._freq.probability(t) for t in layers]
            for target, p in zip(layers, per_layer):
                seen = np.flatnonzero(self._freq.seen(target))
                objs.append(target * n_experts + seen)
                probs.append(p[seen])
        if not objs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        all_objs = np.concatenate(objs).astype(np.int64)
        all_probs = np.concatenate(probs).astype(np.float64)
        order = np.argsort(-all_probs, kind="stable")
        return all_objs[order], all_probs[order]

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        budget = float(view.link_bytes_per_s) * float(view.compute_window_s)
        if budget < self._min_bytes:
            return []  # the first candidate that is not present would already exceed the budget
        out = RequestList(view.resident)
        spent = 0.0
        objs, probs = self.candidates(view)
        for obj, prob in zip(objs.tolist(), probs.tolist()):
            if prob <= self.params.min_score:
                break
            if view.resident(obj):
                continue
            size = self._bytes[obj]
            if spent + size > budget:
                break
            if out.add(obj, prob):
                spent += size
        return out.requests
