"""How predictable routing is: temporal, static and cross-layer guesses at a decode step's experts.

The predictor statistics reproduce BigMoeOnEdge's findings.md §1 to the printed digit on its qwen and
gemma traces (tests/traces/test_stats.py); docs/metrics.md lists the candidate definitions that do not.

Vocabulary: a *token row* is one token's routing at one layer (its k experts); the *decode
sequence* of (request, layer) is that request's decode token rows at that layer, in position order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace_meta import DECODE
from moesim.traces.format.trace import Trace
from moesim.traces.stats.arrays import sort_order, unique_sorted
from moesim.traces.stats.popularity import hottest_experts

DEFAULT_LAGS = tuple(range(1, 9))
CROSS_LAYER_MAX_EXPERTS = 256  # every MoE in the catalog; dense counts per request beyond that


# ---- token rows --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRows:
    """One row per (token, layer) routing, in trace order. Needs a fixed top_k.

    `experts` is a view [n_rows, k] on the trace's expert column (no copy).
    """

    experts: np.ndarray
    layer: np.ndarray
    request: np.ndarray
    position: np.ndarray
    phase: np.ndarray
    pass_index: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.experts.shape[0])


def token_rows(trace: Trace) -> TokenRows:
    """Token rows of a fixed-top_k trace. O(rows).

    A cell with fewer tokens than its pass holds the pass's *last* tokens (llama.cpp routes only
    the output token through the last layer of a prefill); a cell with more is malformed.
    """
    k = trace.meta.top_k
    if not k:
        raise UserError("token-level statistics need a fixed top_k (the trace has none)", "stats")
    if trace.n_accesses % k:
        raise UserError(f"{trace.n_accesses} accesses are not a multiple of top_k={k}", "stats")
    cell_pass = trace.cell_pass()
    pass_tokens = np.diff(trace.pass_token_offsets)
    cell_tokens = trace.cell_tokens.astype(np.int64)
    too_many = np.flatnonzero(cell_tokens > pass_tokens[cell_pass])
    if too_many.size:
        c = int(too_many[0])
        raise UserError(
            f"cell {c} routes {int(cell_tokens[c])} tokens but its pass lists "
            f"{int(pass_tokens[cell_pass[c]])} (per-token request/position tables incomplete)",
            "stats",
        )
    row_cell = np.repeat(np.arange(trace.n_cells, dtype=np.int64), cell_tokens)
    row_start = np.cumsum(cell_tokens) - cell_tokens
    within = np.arange(row_cell.size, dtype=np.int64) - row_start[row_cell]
    row_pass = cell_pass[row_cell]
    shift = (pass_tokens[cell_pass] - cell_tokens)[row_cell]  # align to the pass's last tokens
    token = trace.pass_token_offsets[row_pass] + shift + within
    return TokenRows(
        experts=trace.expert.reshape(-1, k),
        layer=trace.cell_layer[row_cell],
        request=trace.token_request[token],
        position=trace.token_position[token],
        phase=trace.pass_phase[row_pass],
        pass_index=row_pass.astype(np.int32),
    )


def row_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|A_i ∩ B_i| for every pair of rows of two [n, k] arrays whose rows hold distinct ids.

    k^2 vectorised column compares (O(n k^2), no [n, k, k] temporary); Fortran-ordered inputs
    make the columns contiguous.
    """
    n, k = a.shape
    out = np.zeros(n, dtype=np.int16)
    for i in range(k):
        ai = a[:, i]
        for j in range(b.shape[1]):
            out += ai == b[:, j]
    return out


@dataclass(frozen=True)
class DecodeSequences:
    """Decode token rows sorted by (layer, request, position): each (request, layer) a run.

    `index` maps sorted position -> token row; `experts` holds those rows' experts in sorted
    order (Fortran order: contiguous columns); `rank` is the row's index within its run, so
    sorted row i has a predecessor at lag g exactly when rank[i] >= g (it is row i - g).
    """

    index: np.ndarray
    layer: np.ndarray
    request: np.ndarray
    rank: np.ndarray
    experts: np.ndarray


def decode_sequences(rows: TokenRows) -> DecodeSequences:
    """Every request's decode rows per layer, in position order. O(rows log rows)."""
    dec = np.flatnonzero(rows.phase == DECODE)
    order = sort_order(rows.layer[dec].astype(np.int64), rows.request[dec].astype(np.int64),
                        rows.position[dec].astype(np.int64))
    index = dec[order]
    layer = rows.layer[index]
    request = rows.request[index]
    n = index.size
    new_run = np.ones(n, dtype=bool)
    if n:
        new_run[1:] = (layer[1:] != layer[:-1]) | (request[1:] != request[:-1])
    run_start = np.flatnonzero(new_run)
    rank = np.arange(n, dtype=np.int64) - np.repeat(run_start, np.diff(np.append(run_start, n)))
    return DecodeSequences(index=index, layer=layer, request=request, rank=rank,
                           experts=np.asfortranarray(rows.experts[index]))


def per_layer_mean(values: np.ndarray, layer: np.ndarray, n_layers: int) -> np.ndarray:
    sums = np.bincount(layer, weights=values, minlength=n_layers)
    counts = np.bincount(layer, minlength=n_layers)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def lag_overlap(
    trace: Trace,
    lag: int = 1,
    rows: TokenRows | None = None,
    seqs: DecodeSequences | None = None,
    per_layer: bool = True,
) -> tuple[float, np.ndarray | None]:
    """Temporal predictor at lag g: mean over scored rows of |S_t ∩ S_{t-g}| / k.

    Scored rows are decode token rows that have a decode token g steps earlier in the same
    request's decode sequence at the same layer; the mean is pooled over all (layer, step) rows.
    Returns (pooled share, per-layer share [n_layers] with NaN where a layer has no scored row,
    or None when per_layer is False). O(rows k^2).
    """
    if lag < 1:
        raise UserError(f"lag must be >= 1, got {lag}", "stats")
    rows = rows or token_rows(trace)
    seqs = seqs or decode_sequences(rows)
    k = rows.experts.shape[1]
    n_layers = trace.meta.n_layers
    valid = seqs.rank[lag:] >= lag
    if not valid.any():
        return float("nan"), (np.full(n_layers, np.nan) if per_layer else None)
    overlap = row_overlap(seqs.experts[lag:], seqs.experts[:-lag])
    pooled = float(np.count_nonzero(valid) and overlap[valid].sum(dtype=np.int64) / (valid.sum() * k))
    if not per_layer:
        return pooled, None
    share = overlap[valid] / k
    return pooled, per_layer_mean(share, seqs.layer[lag:][valid], n_layers)


def static_coverage(
    trace: Trace,
    learn: str,
    paired: bool = True,
    rows: TokenRows | None = None,
    seqs: DecodeSequences | None = None,
    budget: int | None = None,
) -> tuple[float, np.ndarray]:
    """Static predictor: each layer's k hottest experts (counted over `learn` accesses, ties by
    first appearance), scored as mean |H_l ∩ S_t| / k over decode token rows.

    `paired=True` scores the same rows as the lag-1 temporal predictor (decode rows with a
    previous decode token), so the two are compared row for row; `paired=False` scores every
    decode row (a cold-start list needs no previous token). `budget` hot experts per layer
    (default k) widen the list; the score stays |H_l ∩ S_t| / k, the share of the step's k found.
    """
    rows = rows or token_rows(trace)
    seqs = seqs or decode_sequences(rows)
    k = rows.experts.shape[1]
    hot = hottest_experts(trace, budget or k, learn)
    scored = seqs.rank >= 1 if paired else np.ones(seqs.rank.size, dtype=bool)
    if not scored.any():
        return float("nan"), np.full(trace.meta.n_layers, np.nan)
    layer = seqs.layer[scored].astype(np.int64)
    experts = seqs.experts[scored]
    hits = np.zeros(layer.size, dtype=np.int16)
    for j in range(k):
        hits += hot[layer, experts[:, j]]
    share = hits / k
    return float(share.mean()), per_layer_mean(share, layer, trace.meta.n_layers)


# ---- cross-layer predictability ----------------------------------------------------------------
@dataclass(frozen=True)
class CrossLayer:
    """Leave-one-out accuracy of two k-expert guesses for a decode token's layer l+1 experts,
    learned within its own request: the transition guess (experts that followed the token's
    layer-l experts most often in the request's other tokens) and the frequency guess (layer
    l+1's most frequent experts in the request's other tokens)."""

    transition: float
    frequency: float
    rows: int
    requests: int

    @property
    def gain(self) -> float:
        return self.transition - self.frequency


def cross_layer_predictability(trace: Trace, max_requests: int = 64, rows: TokenRows | None = None,
                               max_layer_pairs: int | None = None) -> CrossLayer:
    """Cross-layer predictability of the first `max_requests` requests' decode tokens, over all
    consecutive layer pairs or `max_layer_pairs` of them spread evenly (the fit's budget).

    For token t, layer l -> l+1 (A = its layer-l experts, B = its layer-(l+1) experts), with C_l
    the request's transition counts and M_l its layer-(l+1) counts, both minus t's own:
      transition score(e') = sum_{e in A} C_l[e, e'];  frequency score(e') = M_l[e'];
    each guess is the k best scores (ties: higher frequency, then lower expert id), scored as
    |guess ∩ B| / k and pooled over all (token, layer) rows. O(rows * (k^2 + n_experts)) time and
    dense [n_layers, E, E] counts per request, so traces with more than CROSS_LAYER_MAX_EXPERTS
    experts per layer (token-indexed memories, whose "experts" are vocabulary rows) get NaN.
    """
    n_layers, n_experts = trace.meta.n_layers, trace.meta.n_experts
    if n_experts > CROSS_LAYER_MAX_EXPERTS:
        return CrossLayer(float("nan"), float("nan"), 0, 0)
    rows = rows or token_rows(trace)
    k = rows.experts.shape[1]
    dec = np.flatnonzero(rows.phase == DECODE)
    ids = unique_sorted(rows.request[dec])[:max_requests]
    dec = dec[np.isin(rows.request[dec], ids)]
    if n_layers < 2 or dec.size == 0:
        return CrossLayer(float("nan"), float("nan"), 0, 0)
    req = np.searchsorted(ids, rows.request[dec]).astype(np.int64)
    pos = rows.position[dec].astype(np.int64)
    lay = rows.layer[dec].astype(np.int64)
    order = sort_order(req, pos, lay)
    req, pos, lay, src = req[order], pos[order], lay[order], dec[order]
    nxt = np.flatnonzero((req[1:] == req[:-1]) & (pos[1:] == pos[:-1]) & (lay[1:] == lay[:-1] + 1))
    if max_layer_pairs is not None and max_layer_pairs < n_layers - 1:
        chosen = np.zeros(n_layers, dtype=bool)
        chosen[np.rint(np.linspace(0, n_layers - 2, max(max_layer_pairs, 1))).astype(np.int64)] = True
        nxt = nxt[chosen[lay[nxt]]]
    a_all = rows.experts[src[nxt]].astype(np.int64)
    b_all = rows.experts[src[nxt + 1]].astype(np.int64)
    r_all, l_all = req[nxt], lay[nxt]
    bounds = np.searchsorted(r_all, np.arange(ids.size + 1))
    hit_t = hit_f = 0
    expert_ids = np.arange(n_experts, dtype=np.int64)
    for r in range(ids.size):
        lo, hi = bounds[r], bounds[r + 1]
        if hi == lo:
            continue
        a, b, lg = a_all[lo:hi], b_all[lo:hi], l_all[lo:hi]
        n = hi - lo
        trans = np.bincount(((lg[:, None, None] * n_experts + a[:, :, None]) * n_experts + b[:, None, :]).ravel(),
                            minlength=n_layers * n_experts * n_experts).reshape(n_layers, n_experts, n_experts)
        freq = np.bincount((lg[:, None] * n_experts + b).ravel(), minlength=n_layers * n_experts)
        freq = freq.reshape(n_layers, n_experts)
        own = np.zeros((n, n_experts), dtype=np.int64)
        np.put_along_axis(own, b, 1, axis=1)
        f_score = freq[lg] - own
        t_score = trans[lg[:, None], a].sum(axis=1) - k * own
        scale = int(f_score.max()) + 1
        t_key = (t_score * scale + f_score) * n_experts + (n_experts - 1 - expert_ids)
        f_key = f_score * n_experts + (n_experts - 1 - expert_ids)
        guess_t = np.argpartition(-t_key, k - 1, axis=1)[:, :k]
        guess_f = np.argpartition(-f_key, k - 1, axis=1)[:, :k]
        hit_t += int(row_overlap(guess_t, b).sum())
        hit_f += int(row_overlap(guess_f, b).sum())
    n_rows = int(nxt.size)
    if n_rows == 0:
        return CrossLayer(float("nan"), float("nan"), 0, int(ids.size))
    return CrossLayer(hit_t / (n_rows * k), hit_f / (n_rows * k), n_rows, int(ids.size))


@dataclass(frozen=True)
class PredictorStats:
    """How much of a decode step's top-k a k-expert-per-layer guess gets right (BigMoeOnEdge §1)."""

    temporal: float
    static: float
    static_prompt: float
    random: float
    lag_profile: dict[int, float]
    scored_rows: int
    temporal_per_layer: np.ndarray
    static_per_layer: np.ndarray
    cross_layer: CrossLayer | None = None

    def to_dict(self) -> dict[str, Any]:
        cross = self.cross_layer
        return {
            "cross_layer_transition": None if cross is None else cross.transition,
            "cross_layer_frequency": None if cross is None else cross.frequency,
            "temporal_prev_token": self.temporal,
            "static_run_hottest": self.static,
            "static_prompt_hottest": self.static_prompt,
            "random": self.random,
            "lag_profile": {str(g): v for g, v in self.lag_profile.items()},
            "scored_rows": self.scored_rows,
        }


def predictor_stats(trace: Trace, lags: Iterable[int] = DEFAULT_LAGS) -> PredictorStats:
    """Temporal (previous token's k), static (the run's k hottest over decode, scored on the
    temporal predictor's rows), static learned from the prompt only (k hottest over prefill,
    scored on every decode row), random (k / n_experts), and the lag profile.

    These definitions reproduce all six BigMoeOnEdge findings.md §1 numbers for qwen and gemma
    to the printed digit (docs/metrics.md lists the candidates that do not).

    Needs a fixed top_k. O(rows log rows) for the sort, O(rows k^2) for the overlaps.
    """
    rows = token_rows(trace)
    seqs = decode_sequences(rows)
    k = rows.experts.shape[1]
    temporal, temporal_l = lag_overlap(trace, 1, rows, seqs)
    static, static_l = static_coverage(trace, "decode", True, rows, seqs)
    prompt, _ = static_coverage(trace, "prefill", False, rows, seqs)
    profile = {g: (temporal if g == 1 else lag_overlap(trace, g, rows, seqs, per_layer=False)[0]) for g in lags}
    return PredictorStats(
        temporal=temporal,
        static=static,
        static_prompt=prompt,
        random=k / trace.meta.n_experts,
        lag_profile=profile,
        scored_rows=int(np.count_nonzero(seqs.rank >= 1)),
        temporal_per_layer=temporal_l,
        static_per_layer=static_l,
        cross_layer=cross_layer_predictability(trace, rows=rows),
    )
