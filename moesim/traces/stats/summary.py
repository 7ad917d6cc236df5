"""Trace statistics: how concentrated, how repetitive and how large a routing trace is.

Everything here is vectorised numpy over the Trace's columns (a 10 M-access trace takes a few
seconds; nothing loops over accesses in Python). Formulas are in docs/metrics.md, section
"Trace statistics"; the predictor statistics reproduce BigMoeOnEdge's findings.md §1 to the
printed digit on its qwen and gemma traces (tests/traces/test_stats.py).

Vocabulary: a *token row* is one token's routing at one layer (its k experts); the *decode
sequence* of (request, layer) is that request's decode token rows at that layer, in position order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.format.trace import DECODE, PHASE_NAMES, PREFILL, Trace

PHASES = ("all", "prefill", "decode")
DEFAULT_LAGS = tuple(range(1, 9))
CROSS_LAYER_MAX_EXPERTS = 256  # every MoE in the catalog; dense counts per request beyond that


# ---- helpers -----------------------------------------------------------------------------------
def unique_sorted(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values by sort + neighbour compare.

    np.unique without return_index takes a hash-table path in numpy >= 2.3 that is 50x slower
    than sorting on 10^6-10^7 integer keys, which dominated these statistics.
    """
    s = np.sort(values)
    if s.size:
        keep = np.empty(s.size, dtype=bool)
        keep[0] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
        s = s[keep]
    return s


def first_index(values: np.ndarray, size: int) -> np.ndarray:
    """Index of the first occurrence of every value in 0..size-1 (len(values) where absent). O(n)."""
    first = np.full(size, values.size, dtype=np.int64)
    np.minimum.at(first, values, np.arange(values.size, dtype=np.int64))
    return first


def _sort_order(*keys: np.ndarray) -> np.ndarray:
    """Stable order by the keys, first key most significant (non-negative integers).

    Packs the keys into one int64 when their ranges allow (one argsort, ~6x faster than
    np.lexsort on 10^7 rows), else falls back to lexsort.
    """
    if keys[0].size == 0:
        return np.zeros(0, dtype=np.int64)
    spans = [int(k.max()) + 1 for k in keys]
    if math.prod(spans) < 2**62 and all(int(k.min()) >= 0 for k in keys):
        packed = np.zeros(keys[0].size, dtype=np.int64)
        for key, span in zip(keys, spans):
            packed *= span
            packed += key
        return np.argsort(packed, kind="stable")
    return np.lexsort(tuple(reversed(keys)))


# ---- access-level columns ----------------------------------------------------------------------
def cell_phase(trace: Trace) -> np.ndarray:
    """Phase (PREFILL/DECODE) of every cell."""
    return trace.pass_phase[trace.cell_pass()]


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise UserError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}", "stats")


def _cell_mask(trace: Trace, phase: str) -> np.ndarray | None:
    """Cells of `phase` (None means all cells, to skip a pointless copy)."""
    _check_phase(phase)
    if phase == "all":
        return None
    return cell_phase(trace) == (PREFILL if phase == "prefill" else DECODE)


def _access_mask(trace: Trace, phase: str) -> np.ndarray | None:
    cells = _cell_mask(trace, phase)
    return None if cells is None else np.repeat(cells, np.diff(trace.cell_offsets))


# ---- per-layer popularity ----------------------------------------------------------------------
def layer_expert_counts(trace: Trace, phase: str = "all") -> np.ndarray:
    """Accesses per (layer, expert) as an int64 [n_layers, n_experts] array. O(accesses)."""
    obj = trace.object_ids()
    mask = _access_mask(trace, phase)
    if mask is not None:
        obj = obj[mask]
    counts = np.bincount(obj, minlength=trace.n_objects)
    return counts.reshape(trace.meta.n_layers, trace.meta.n_experts).astype(np.int64)


def distinct_per_layer(counts: np.ndarray) -> np.ndarray:
    """Distinct experts a layer routed to: |{e : n_le > 0}|."""
    return (counts > 0).sum(axis=-1)


def entropy_bits(counts: np.ndarray) -> np.ndarray:
    """Entropy of each layer's expert distribution, H_l = -sum_e p_le log2 p_le with p = n / sum n.

    A layer with no accesses has entropy 0. Works on [..., n_experts] arrays.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(total > 0, counts / np.where(total > 0, total, 1), 0.0)
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1)), 0.0)
    return terms.sum(axis=-1)


def topk_coverage(counts: np.ndarray, k: int) -> np.ndarray:
    """Share of a layer's accesses served by its k hottest experts: sum of the k largest n_le / sum n_le.

    Ties do not matter here (only the counts are summed). A layer with no accesses covers 0.
    """
    counts = np.asarray(counts)
    if k <= 0:
        raise UserError(f"k must be positive, got {k}", "stats")
    k = min(k, counts.shape[-1])
    top = -np.partition(-counts, k - 1, axis=-1)[..., :k]
    total = counts.sum(axis=-1)
    return np.where(total > 0, top.sum(axis=-1) / np.where(total > 0, total, 1), 0.0)


def hottest_experts(trace: Trace, k: int, phase: str) -> np.ndarray:
    """The k hottest experts of every layer as a bool [n_layers, n_experts] mask.

    Counted over the accesses of `phase`; ties are broken by first appearance in trace order
    (the earlier-seen expert wins), which is how a counter that keeps insertion order ranks them.
    An expert never seen in `phase` is never hot, so a layer may have fewer than k.
    """
    n_layers, n_experts = trace.meta.n_layers, trace.meta.n_experts
    obj = trace.object_ids()
    mask = _access_mask(trace, phase)
    if mask is not None:
        obj = obj[mask]
    counts = np.bincount(obj, minlength=trace.n_objects)
    first = first_index(obj, trace.n_objects)
    counts = counts.reshape(n_layers, n_experts)
    first = first.reshape(n_layers, n_experts)
    order = np.lexsort((first, -counts), axis=-1)  # per layer: by count desc, then first seen
    hot = np.zeros((n_layers, n_experts), dtype=bool)
    take = order[:, : min(k, n_experts)]
    rows = np.arange(n_layers)[:, None]
    hot[rows, take] = counts[rows, take] > 0
    return hot


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
    order = _sort_order(rows.layer[dec].astype(np.int64), rows.request[dec].astype(np.int64),
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


def _per_layer_mean(values: np.ndarray, layer: np.ndarray, n_layers: int) -> np.ndarray:
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
    return pooled, _per_layer_mean(share, seqs.layer[lag:][valid], n_layers)


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
    return float(share.mean()), _per_layer_mean(share, layer, trace.meta.n_layers)


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
    order = _sort_order(req, pos, lay)
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


# ---- reuse and working sets --------------------------------------------------------------------
@dataclass(frozen=True)
class PassObjectUses:
    """Distinct (object, pass) uses as sorted keys obj * n_passes + pass: object-major, then pass
    order, which is what reuse distances need; working sets and footprints read the same keys."""

    keys: np.ndarray
    n_passes: int
    phase: str = "all"

    @property
    def obj(self) -> np.ndarray:
        return self.keys // self.n_passes

    @property
    def passes(self) -> np.ndarray:
        return self.keys % self.n_passes


def pass_object_uses(trace: Trace, phase: str = "all") -> PassObjectUses:
    """The distinct objects each pass of `phase` uses. O(A log A) (one sort of the accesses)."""
    n_passes = max(trace.n_passes, 1)
    key = trace.object_ids().astype(np.int64) * n_passes
    key += np.repeat(trace.cell_pass().astype(np.int64), np.diff(trace.cell_offsets))
    mask = _access_mask(trace, phase)
    if mask is not None:
        key = key[mask]
    return PassObjectUses(unique_sorted(key), n_passes, phase)


def reuse_bucket_labels(n_buckets: int) -> list[str]:
    """Labels of the log2 reuse-distance buckets: '1', '2-3', '4-7', ..."""
    return ["1"] + [f"{2 ** b}-{2 ** (b + 1) - 1}" for b in range(1, n_buckets)]


def reuse_distance_histogram(
    trace: Trace, phase: str = "all", uses: PassObjectUses | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reuse distance in passes between consecutive uses of an object, per layer, in log2 buckets.

    For each distinct (object, pass) use except the object's first, d = pass - the previous pass
    that used it (d >= 1); bucket b holds 2^b <= d < 2^(b+1). Passes are the trace's own pass
    indices, so with phase="decode" a prefill pass in between still counts as one pass.
    Returns (hist [n_layers, n_buckets] int64, first_uses [n_layers] int64). O(A log A).
    """
    uses = uses or pass_object_uses(trace, phase)
    obj, passes = uses.obj, uses.passes
    n_layers = trace.meta.n_layers
    layer = obj // trace.meta.n_experts
    same = np.zeros(obj.size, dtype=bool)
    same[1:] = obj[1:] == obj[:-1]
    first_uses = np.bincount(layer[~same], minlength=n_layers).astype(np.int64)
    d = (passes[1:] - passes[:-1])[same[1:]]
    bucket = np.zeros(d.size, dtype=np.int64)
    if d.size:
        # floor(log2 d) exactly for integers: the float's exponent
        bucket = np.frexp(d.astype(np.float64))[1].astype(np.int64) - 1
    n_buckets = int(bucket.max()) + 1 if bucket.size else 1
    hist = np.bincount(layer[same] * n_buckets + bucket, minlength=n_layers * n_buckets)
    return hist.reshape(n_layers, n_buckets).astype(np.int64), first_uses


def pass_working_set(trace: Trace, uses: PassObjectUses | None = None) -> np.ndarray:
    """Distinct objects each pass touches (int64 [n_passes])."""
    uses = uses or pass_object_uses(trace)
    return np.bincount(uses.passes, minlength=trace.n_passes).astype(np.int64)


def pass_working_set_bytes(trace: Trace, uses: PassObjectUses | None = None) -> np.ndarray:
    """Bytes of the distinct objects each pass touches (int64 [n_passes])."""
    uses = uses or pass_object_uses(trace)
    sizes = trace.object_bytes_array()[uses.obj]
    return np.bincount(uses.passes, weights=sizes, minlength=trace.n_passes).astype(np.int64)


def cell_distinct_experts(trace: Trace, uses: PassObjectUses | None = None) -> np.ndarray:
    """Distinct experts in every cell (int64 [n_cells]): a layer's working set in that pass.

    When every pass has at most one cell per layer (all known traces), a cell's distinct
    experts are its pass's uses at that layer, read off `uses` (all phases) without a new sort.
    """
    n_layers, n_experts = trace.meta.n_layers, trace.meta.n_experts
    cell_key = trace.cell_pass().astype(np.int64) * n_layers + trace.cell_layer
    one_per_layer = cell_key.size < 2 or bool(np.all(cell_key[1:] > cell_key[:-1]))  # passes' layers ascend
    if uses is not None and uses.phase == "all" and one_per_layer:
        per_pass_layer = np.bincount(uses.passes * n_layers + uses.obj // n_experts,
                                     minlength=trace.n_passes * n_layers)
        return per_pass_layer[cell_key].astype(np.int64)
    cell = trace.access_cell().astype(np.int64)
    key = unique_sorted(cell * n_experts + trace.expert.astype(np.int64))
    return np.bincount(key // n_experts, minlength=trace.n_cells).astype(np.int64)


# ---- tables ------------------------------------------------------------------------------------
def per_layer_table(
    trace: Trace,
    phase: str = "all",
    k: int | None = None,
    uses: PassObjectUses | None = None,
    prev_overlap: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per layer: accesses, distinct, entropy, top-k coverage, working set per pass,
    previous-token overlap (decode; NaN without a fixed top_k) and reuse-distance buckets."""
    k = k or trace.meta.top_k or 1
    counts = layer_expert_counts(trace, phase)
    n_layers = trace.meta.n_layers
    cells = _cell_mask(trace, phase)
    uses = uses or pass_object_uses(trace, phase)
    ws = cell_distinct_experts(trace, uses)
    layers = trace.cell_layer.astype(np.int64)
    if cells is not None:
        ws, layers = ws[cells], layers[cells]
    table = pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "accesses": counts.sum(axis=1),
            "distinct_experts": distinct_per_layer(counts),
            "entropy_bits": entropy_bits(counts),
            f"top{k}_coverage": topk_coverage(counts, k),
            "working_set_per_pass": _per_layer_mean(ws.astype(np.float64), layers, n_layers),
        }
    )
    if trace.meta.top_k and phase != "prefill":
        table["prev_token_overlap"] = prev_overlap if prev_overlap is not None else lag_overlap(trace, 1)[1]
    hist, first = reuse_distance_histogram(trace, phase, uses)
    table["first_uses"] = first
    for b, label in enumerate(reuse_bucket_labels(hist.shape[1])):
        table[f"reuse_{label}"] = hist[:, b]
    return table


def trace_summary(trace: Trace, phase: str = "all", uses: PassObjectUses | None = None) -> dict[str, Any]:
    """Whole-trace counts: accesses, passes and tokens by phase, requests, routed bytes (sum over
    passes of the bytes of the distinct objects each pass needs: what a cache-less system moves),
    distinct objects and bytes touched (the footprint), and objects per pass (the working set)."""
    _check_phase(phase)
    uses = uses or pass_object_uses(trace, phase)
    sizes = trace.object_bytes_array()
    obj = uses.obj
    touched = obj[np.r_[True, obj[1:] != obj[:-1]]] if obj.size else obj
    n_tokens_by_phase = np.bincount(
        np.repeat(trace.pass_phase, np.diff(trace.pass_token_offsets)).astype(np.int64), minlength=2
    )
    passes_by_phase = np.bincount(trace.pass_phase.astype(np.int64), minlength=2)
    mask = _access_mask(trace, phase)
    accesses = trace.n_accesses if mask is None else int(mask.sum())
    ws = pass_working_set(trace, uses)
    if phase != "all":
        ws = ws[trace.pass_phase == (PREFILL if phase == "prefill" else DECODE)]
    bank = trace.total_object_bytes()
    touched_bytes = int(sizes[touched].sum())
    return {
        "phase": phase,
        "accesses": int(accesses),
        "passes": {PHASE_NAMES[p]: int(passes_by_phase[p]) for p in (PREFILL, DECODE)},
        "tokens": {PHASE_NAMES[p]: int(n_tokens_by_phase[p]) for p in (PREFILL, DECODE)},
        "requests": int(unique_sorted(trace.token_request).size),
        "n_layers": trace.meta.n_layers,
        "n_experts": trace.meta.n_experts,
        "top_k": trace.meta.top_k,
        "routed_bytes": int(sizes[obj].sum()),
        "distinct_objects": int(touched.size),
        "bytes_touched": touched_bytes,
        "bank_bytes": int(bank),
        "touched_share": touched_bytes / bank if bank else 0.0,
        "working_set_per_pass_mean": float(ws.mean()) if ws.size else 0.0,
        "working_set_per_pass_max": int(ws.max()) if ws.size else 0,
    }


@dataclass
class TraceStats:
    """Everything `moesim traces stats` prints."""

    summary: dict[str, Any]
    per_layer: pd.DataFrame
    predictors: PredictorStats | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, per_layer: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "summary": self.summary,
            "layers": _layer_digest(self.per_layer),
            "predictors": None if self.predictors is None else self.predictors.to_dict(),
        }
        if per_layer:
            out["per_layer"] = self.per_layer.to_dict(orient="records")
        return out


def _layer_digest(table: pd.DataFrame) -> dict[str, Any]:
    """Mean, min and max over layers of the main per-layer columns."""
    out: dict[str, Any] = {}
    for col in table.columns:
        if col in ("layer", "accesses", "first_uses") or col.startswith("reuse_"):
            continue
        values = table[col].to_numpy(dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size:
            out[col] = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}
    return out


def compute_stats(trace: Trace, phase: str = "all", k: int | None = None) -> TraceStats:
    """Summary, per-layer table and (with a fixed top_k) the predictor statistics."""
    predictors = predictor_stats(trace) if trace.meta.top_k else None
    uses = pass_object_uses(trace, phase)
    return TraceStats(
        summary=trace_summary(trace, phase, uses),
        per_layer=per_layer_table(trace, phase, k, uses, None if predictors is None else predictors.temporal_per_layer),
        predictors=predictors,
    )
