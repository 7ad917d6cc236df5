"""Gate-lookahead predictions a recorder stored in the trace, read and checked once.

Layout (moesim.traces.format.trace.Trace.predictions): "lookahead_<d>" is an int array [cells, n]; row c
lists the experts layer(c)+d's gate picks when applied to layer(c)'s hidden state, for every token of
the cell (negative entries pad rows of cells with fewer tokens). The optional "lookahead_<d>_score"
float array of the same shape holds the gate probabilities of those picks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext
from moesim.policies.prefetch.future_cells import require_trace, trace_label
from moesim.policies.prefetch.ranking import rank_by_score


def prediction_name(distance: int) -> str:
    return f"lookahead_{distance}"


def score_name(distance: int) -> str:
    return f"lookahead_{distance}_score"


@dataclass(frozen=True)
class RecordedLookahead:
    """One recorded prediction array (and its scores, if recorded) for layers `distance` ahead."""

    distance: int
    experts: np.ndarray
    scores: np.ndarray | None

    def cell(self, cell: int, layer: int, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
        """Object ids predicted for layer+distance by `cell`, best first, with a confidence in [0, 1].

        With scores, an object picked for several tokens is needed with probability
        1 - prod(1 - p_t) (tokens taken as independent); without, its confidence is the share of
        the cell's picks that name it. Ties keep the recorded order.
        """
        row = self.experts[cell]
        keep = row >= 0
        experts = row[keep].astype(np.int64)
        if experts.size == 0:
            return experts, np.zeros(0, dtype=np.float64)
        values, first, inverse, counts = np.unique(experts, return_index=True, return_inverse=True,
                                                   return_counts=True)
        if self.scores is not None:
            probs = self.scores[cell][keep].astype(np.float64)
            miss = np.ones(values.size, dtype=np.float64)
            np.multiply.at(miss, inverse, 1.0 - probs)
            # a single pick keeps its recorded probability bit for bit (1 - (1 - p) may not be p)
            confidence = np.where(counts == 1, probs[first], 1.0 - miss)
        else:
            confidence = np.bincount(inverse, minlength=values.size) / float(experts.size)
        order = np.argsort(first, kind="stable")
        objs = (layer + self.distance) * n_experts + values[order]
        return rank_by_score(objs, confidence[order])


def has_scores(ctx: PolicyContext, lookahead: int) -> bool:
    """True if the trace carries recorded scores for every distance 1..lookahead."""
    predictions = getattr(ctx.trace, "predictions", None) or {}
    return all(score_name(d) in predictions and prediction_name(d) in predictions for d in range(1, lookahead + 1))


def load_recorded(ctx: PolicyContext, policy: str, lookahead: int, need_scores: bool) -> list[RecordedLookahead]:
    """The checked predictions for distances 1..lookahead; UserError naming the trace if any is missing."""
    trace = require_trace(ctx, policy)
    predictions = getattr(trace, "predictions", None) or {}
    names = [prediction_name(d) for d in range(1, lookahead + 1)]
    if need_scores:
        names += [score_name(d) for d in range(1, lookahead + 1)]
    missing = [name for name in names if name not in predictions]
    where = trace_label(ctx)
    if missing:
        have = ", ".join(sorted(predictions)) or "none"
        raise UserError(
            f"prefetch policy {policy} needs recorded predictions {', '.join(missing)}, which this trace lacks "
            f"(it has: {have}); record them (gate lookahead) or choose another prefetch policy",
            where,
        )
    n_cells = int(trace.cell_layer.shape[0])
    n_experts = int(trace.meta.n_experts)
    out = []
    for d in range(1, lookahead + 1):
        experts = np.asarray(predictions[prediction_name(d)])
        _check_ids(experts, prediction_name(d), n_cells, n_experts, where)
        scores = predictions.get(score_name(d)) if need_scores or score_name(d) in predictions else None
        if scores is not None:
            scores = np.asarray(scores)
            _check_scores(scores, experts, score_name(d), where)
        out.append(RecordedLookahead(distance=d, experts=experts, scores=scores))
    return out


def _check_ids(experts: np.ndarray, name: str, n_cells: int, n_experts: int, where: str) -> None:
    if experts.ndim != 2 or experts.shape[0] != n_cells:
        raise UserError(f"prediction {name!r} must be a [{n_cells} cells, n] array, has shape {experts.shape}", where)
    if not np.issubdtype(experts.dtype, np.integer):
        raise UserError(f"prediction {name!r} must hold integer expert ids, has {experts.dtype}", where)
    bad = np.argwhere(experts >= n_experts)
    if bad.size:
        c, i = (int(v) for v in bad[0])
        raise UserError(f"prediction {name!r}, cell {c}: expert id {int(experts[c, i])} outside 0..{n_experts - 1}",
                        where)


def _check_scores(scores: np.ndarray, experts: np.ndarray, name: str, where: str) -> None:
    """Scores of real picks must be probabilities; padding entries (negative ids) may hold anything."""
    if scores.shape != experts.shape:
        raise UserError(f"prediction {name!r} must have the shape of its ids {experts.shape}, has {scores.shape}",
                        where)
    values = scores.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.argwhere((experts >= 0) & ~((values >= 0.0) & (values <= 1.0)))
    if bad.size:
        c, i = (int(v) for v in bad[0])
        raise UserError(f"prediction {name!r}, cell {c}: score {float(values[c, i])} is not a probability in [0, 1]",
                        where)
