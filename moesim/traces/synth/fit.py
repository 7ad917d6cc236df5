"""Fit a SynthConfig to a real trace, and report how well a synthetic trace matches it.

Why simulated moments: real traces are short (the bundled ones have 128 decode tokens), so their
statistics carry finite-sample bias (128 tokens of top-6 out of 128 experts look concentrated even
under uniform routing). Instead of inverting formulas that ignore that bias, the fit generates
synthetic requests with exactly the real requests' lengths and adjusts the knobs until the
synthetic statistics equal the real ones; the bias is then the same on both sides.

Targets (decode tokens only, where caches matter), each computed within a request and averaged:
  per layer l  top-k coverage                                 -> zipf_l
  per layer l  distinct experts                               -> request_active_l
  pooled       previous-token overlap (predictors.lag_overlap)     -> reuse
  pooled       cross-layer gain: transition minus frequency
               accuracy (predictors.cross_layer_predictability)    -> cross_layer
The solver alternates two moves, twice: cross_layer by interpolating the gain over a few
evaluated values (the gain is monotone in it but steep near 1), then chord Newton steps on
(zipf_l, active_l, reuse) with cross_layer held (one finite-difference Jacobian: per layer a 2x2
block, blended with the mean layer's block against simulation noise). The best point by RMS
miss is kept. Every simulation uses the same seed (common random numbers): the fit is
deterministic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.stats import arrays, popularity, predictors
from moesim.traces.synth.synthetic import LengthDist, SynthConfig, generate_with_lengths
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.trace import Trace

ZIPF_GRID = np.round(np.arange(0.0, 3.01, 0.1), 2)
ZIPF_MAX = 4.0
REUSE_MAX = 0.95
MIN_SIM_DECODE_TOKENS = 1024  # per fit simulation: the real requests repeated up to this many decode tokens
DEFAULT_MAX_REQUESTS = 64
FIT_LAYER_PAIRS = 16  # consecutive-layer pairs the fit's cross-layer target is measured on
_STEP = {"zipf": 0.15, "active": 0.08, "reuse": 0.08}  # finite-difference steps of the Jacobian
CROSS_GRID = (0.0, 0.3, 0.6)
CROSS_MAX = 0.6  # above this the chain from earlier layers swamps each layer's own law: per-layer
# coverage could no longer be fitted (15-point layer gaps on qwen at 0.95); see docs/metrics.md


# ---- per-request statistics --------------------------------------------------------------------
@dataclass(frozen=True)
class RequestStats:
    """Decode statistics computed within each request and averaged over requests.

    Per-layer arrays have n_layers entries; `requests` is how many requests were used.
    """

    coverage: np.ndarray
    distinct: np.ndarray
    entropy: np.ndarray
    overlap: float
    cross_gain: float
    cross_transition: float
    decode_tokens: float
    requests: int


def request_stats(trace: Trace, max_requests: int = DEFAULT_MAX_REQUESTS, cross: bool = True,
                  max_layer_pairs: int | None = None) -> RequestStats:
    """Per-request decode statistics of the first `max_requests` requests (by id).

    Coverage, distinct experts and entropy are per (request, layer), averaged over requests;
    overlap pools the whole trace's decode rows (it does not depend on length). The cross-layer
    statistics (the costly part) are NaN unless `cross`, over at most `max_layer_pairs` pairs.
    """
    n_layers, n_experts = trace.meta.n_layers, trace.meta.n_experts
    rows = predictors.token_rows(trace)
    dec = rows.phase == DECODE
    ids = arrays.unique_sorted(rows.request[dec])
    if ids.size == 0:
        raise UserError("the trace has no decode tokens to fit or compare", "fit")
    ids = ids[:max_requests]
    keep = np.flatnonzero(dec & np.isin(rows.request, ids))
    dense = np.searchsorted(ids, rows.request[keep]).astype(np.int64)
    n_req = int(ids.size)
    k = rows.experts.shape[1]
    cell_key = dense * n_layers + rows.layer[keep].astype(np.int64)
    obj = (np.repeat(cell_key, k) * n_experts + rows.experts[keep].astype(np.int64).ravel())
    counts = np.bincount(obj, minlength=n_req * n_layers * n_experts).reshape(n_req, n_layers, n_experts)
    tokens = np.bincount(cell_key, minlength=n_req * n_layers).reshape(n_req, n_layers)
    present = tokens > 0
    n_present = np.maximum(present.sum(axis=0), 1)

    def mean_over_requests(values: np.ndarray) -> np.ndarray:
        return (values * present).sum(axis=0) / n_present

    overlap, _ = predictors.lag_overlap(trace, 1, rows, per_layer=False)
    xl = (predictors.cross_layer_predictability(trace, max_requests, rows, max_layer_pairs) if cross
          else predictors.CrossLayer(float("nan"), float("nan"), 0, 0))
    return RequestStats(
        coverage=mean_over_requests(popularity.topk_coverage(counts, k)),
        distinct=mean_over_requests(popularity.distinct_per_layer(counts)),
        entropy=mean_over_requests(popularity.entropy_bits(counts)),
        overlap=overlap,
        cross_gain=xl.gain,
        cross_transition=xl.transition,
        decode_tokens=float(tokens.max(axis=1).mean()),
        requests=n_req,
    )


# ---- request shapes ----------------------------------------------------------------------------
def request_lengths(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and decode token counts of every request (in request-id order)."""
    phase = np.repeat(trace.pass_phase, np.diff(trace.pass_token_offsets))
    ids, dense = np.unique(trace.token_request, return_inverse=True)
    n = ids.size
    pre = np.bincount(dense[phase == PREFILL], minlength=n)
    dec = np.bincount(dense[phase == DECODE], minlength=n)
    return pre.astype(np.int64), dec.astype(np.int64)


def length_distribution(lengths: np.ndarray, minimum: int) -> LengthDist:
    """fixed when every request has the same length, else lognormal (or uniform when a length is 0)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo == hi:
        return LengthDist("fixed", float(max(lo, minimum)), 0.0, minimum)
    if lo <= 0:
        return LengthDist("uniform", float(max(lo, minimum)), float(hi), minimum)
    logs = np.log(lengths.astype(np.float64))
    return LengthDist("lognormal", float(round(logs.mean(), 6)), float(round(logs.std(), 6)), minimum)


# ---- the fit -----------------------------------------------------------------------------------
@dataclass
class FitResult:
    """The fitted config, the targets it was fitted to and what its simulation reached."""

    config: SynthConfig
    target: RequestStats
    achieved: RequestStats
    simulations: int
    error: float

    def table(self) -> pd.DataFrame:
        return _stats_table(self.target, self.achieved, "real", "fit")


@dataclass(frozen=True)
class _Knobs:
    zipf: np.ndarray
    active: np.ndarray
    reuse: float
    cross: float

    def clipped(self, min_active: float) -> "_Knobs":
        return _Knobs(np.clip(self.zipf, 0.0, ZIPF_MAX), np.clip(self.active, min_active, 1.0),
                      _clip(self.reuse, 0.0, REUSE_MAX), _clip(self.cross, 0.0, 1.0))


class _Simulator:
    """Generates the real requests' shape (repeated) with given knobs; same seed every time."""

    def __init__(self, base: SynthConfig, pre: np.ndarray, dec: np.ndarray) -> None:
        self.base, self.pre, self.dec = base, pre, dec
        self.runs = 0

    def __call__(self, knobs: _Knobs, cross: bool = True) -> RequestStats:
        cfg = dataclasses.replace(
            self.base,
            zipf=tuple(float(z) for z in knobs.zipf),
            request_active=tuple(float(a) for a in knobs.active),
            reuse=float(knobs.reuse),
            cross_layer=float(knobs.cross),
        )
        self.runs += 1
        trace = generate_with_lengths(cfg, self.pre, self.dec)
        return request_stats(trace, self.pre.size, cross, FIT_LAYER_PAIRS)


def _residual(target: RequestStats, sim: RequestStats, n_experts: int) -> np.ndarray:
    """target - sim for (coverage_l..., distinct_l / n_experts..., overlap), in shares."""
    return np.r_[target.coverage - sim.coverage, (target.distinct - sim.distinct) / n_experts,
                 target.overlap - sim.overlap]


def _score(target: RequestStats, sim: RequestStats, n_experts: int) -> float:
    """RMS miss over the targets, the per-layer ones weighted as one target each."""
    n = target.coverage.size
    res = _residual(target, sim, n_experts)
    parts = [np.mean(res[:n] ** 2), np.mean(res[n : 2 * n] ** 2), res[-1] ** 2]
    if n_finite(target.cross_gain, sim.cross_gain):
        parts.append((target.cross_gain - sim.cross_gain) ** 2)
    return float(np.sqrt(np.mean(parts)))


def fit_with_report(trace: Trace, seed: int = 0, max_requests: int = DEFAULT_MAX_REQUESTS,
                    rounds: int = 2, newton_steps: int = 4) -> FitResult:
    """Fit every SynthConfig knob to `trace` and report the match. Deterministic in `seed`.

    Shapes and sizes are copied; lengths are fitted per request (`length_distribution`);
    batch_size is the largest decode pass; the routing knobs by simulated moments (module doc).
    About 15 simulations of max(real decode tokens, MIN_SIM_DECODE_TOKENS) tokens each.
    """
    meta = trace.meta
    if not meta.top_k:
        raise UserError("fit needs a trace with a fixed top_k", "fit")
    n_layers, n_experts, k = meta.n_layers, meta.n_experts, int(meta.top_k)
    target = request_stats(trace, max_requests, max_layer_pairs=FIT_LAYER_PAIRS)
    pre_all, dec_all = request_lengths(trace)
    decode_tokens = np.diff(trace.pass_token_offsets)[trace.pass_phase == DECODE]
    shape = SynthConfig(
        n_layers=n_layers,
        n_experts=n_experts,
        top_k=k,
        object_bytes=tuple(int(b) for b in meta.object_bytes),
        n_requests=int(pre_all.size),
        prefill=length_distribution(pre_all, 1),
        decode=length_distribution(dec_all, 0),
        batch_size=max(int(decode_tokens.max()) if decode_tokens.size else 1, 1),
        seed=seed,
    )
    # simulations replay the target requests' own lengths, repeated to MIN_SIM_DECODE_TOKENS
    pre, dec = np.maximum(pre_all[:max_requests], 1), dec_all[:max_requests]
    reps = max(1, -(-MIN_SIM_DECODE_TOKENS // max(int(dec.sum()), 1)))
    pre, dec = np.tile(pre, reps), np.tile(dec, reps)
    sim = _Simulator(dataclasses.replace(shape, batch_size=1), pre, dec)
    min_active = k / n_experts
    has_cross = n_layers > 1 and n_finite(target.cross_gain)

    # starting point: coverage(zipf) from one simulation whose layers are the grid points
    grid = dataclasses.replace(sim.base, n_layers=ZIPF_GRID.size, object_bytes=(1,), zipf=tuple(ZIPF_GRID))
    grid_cov = np.maximum.accumulate(request_stats(generate_with_lengths(grid, pre, dec), pre.size, cross=False).coverage)
    x = _Knobs(
        zipf=np.interp(target.coverage, grid_cov, ZIPF_GRID),
        active=np.clip(target.distinct / n_experts * 1.15, min_active, 1.0),
        reuse=0.0,
        cross=0.0,
    ).clipped(min_active)
    best: tuple[float, _Knobs, RequestStats] | None = None

    def consider(knobs: _Knobs, result: RequestStats) -> RequestStats:
        nonlocal best
        score = _score(target, result, n_experts)
        if best is None or score < best[0]:
            best = (score, knobs, result)
        return result

    jac: _Jacobian | None = None
    result: RequestStats | None = None
    for round_ in range(rounds):
        # 1. cross_layer: the gain is monotone in it; interpolate evaluations made at the current
        #    other knobs (a coarse grid first, then the current point and one probe)
        if has_cross:
            if round_ == 0:
                tried = [(c, consider(k_, sim(k_)).cross_gain)
                         for c in CROSS_GRID for k_ in [dataclasses.replace(x, cross=c)]]
            else:
                assert result is not None
                probe_c = x.cross + (0.15 if x.cross + 0.15 <= CROSS_MAX else -0.15)
                probe = dataclasses.replace(x, cross=probe_c)
                tried = [(x.cross, result.cross_gain), (probe_c, consider(probe, sim(probe)).cross_gain)]
            x = dataclasses.replace(x, cross=_interpolate_cross(tried, target.cross_gain))
        # 2. zipf, active (per layer) and reuse at that cross_layer: chord Newton steps
        result = consider(x, sim(x))
        if jac is None:
            jac = _jacobian(sim, x, result, n_experts, min_active)
        for _ in range(newton_steps if round_ == 0 else max(1, newton_steps // 2)):
            x = _newton_step(x, _residual(target, result, n_experts), jac, n_layers).clipped(min_active)
            result = consider(x, sim(x))
    assert best is not None
    err, x, achieved = best
    config = dataclasses.replace(
        shape,
        zipf=tuple(round(float(z), 4) for z in x.zipf),
        request_active=tuple(round(float(a), 4) for a in x.active),
        reuse=round(float(x.reuse), 4),
        cross_layer=round(float(x.cross), 4),
    )
    return FitResult(config=config, target=target, achieved=achieved, simulations=sim.runs, error=err)


def _interpolate_cross(tried: list[tuple[float, float]], target: float) -> float:
    """cross_layer where the gain through the evaluations reaches `target`: piecewise linear,
    extended linearly past the last two points (a local probe may not bracket the target)."""
    pts = sorted((c, g) for c, g in tried if n_finite(g))
    if not pts:
        return 0.0
    c = np.array([p[0] for p in pts])
    g = np.maximum.accumulate(np.array([p[1] for p in pts]))
    if len(pts) >= 2 and target > g[-1] and g[-1] > g[-2]:
        return _clip(c[-1] + (target - g[-1]) * (c[-1] - c[-2]) / (g[-1] - g[-2]), 0.0, CROSS_MAX)
    if len(pts) >= 2 and target < g[0] and g[1] > g[0]:
        return _clip(c[0] - (g[0] - target) * (c[1] - c[0]) / (g[1] - g[0]), 0.0, CROSS_MAX)
    return _clip(float(np.interp(target, g, c)), 0.0, CROSS_MAX)


@dataclass(frozen=True)
class _Jacobian:
    """d(statistic)/d(knob): per layer a [2, 2] block (coverage, distinct) x (zipf, active), blended
    with the mean layer's block to damp simulation noise; per-layer columns for reuse; and
    d(overlap)/d(reuse)."""

    layer: np.ndarray  # [n_layers, 2, 2]
    layer_reuse: np.ndarray  # [n_layers, 2]
    overlap_reuse: float


def _jacobian(sim: _Simulator, x: _Knobs, base: RequestStats, n_experts: int, min_active: float) -> _Jacobian:
    dz = _STEP["zipf"]
    da = -_STEP["active"] if float(np.mean(x.active)) + _STEP["active"] > 1.0 else _STEP["active"]
    dr = _STEP["reuse"]
    moved_z = sim(dataclasses.replace(x, zipf=np.clip(x.zipf + dz, 0.0, ZIPF_MAX)), cross=False)
    moved_a = sim(dataclasses.replace(x, active=np.clip(x.active + da, min_active, 1.0)), cross=False)
    moved_r = sim(dataclasses.replace(x, reuse=_clip(x.reuse + dr, 0.0, REUSE_MAX)), cross=False)

    def column(d: RequestStats, step: float) -> np.ndarray:
        return np.stack([(d.coverage - base.coverage) / step, (d.distinct - base.distinct) / n_experts / step], 1)

    layer = np.stack([column(moved_z, dz), column(moved_a, da)], 2)
    layer = 0.5 * layer + 0.5 * layer.mean(axis=0, keepdims=True)
    layer_reuse = column(moved_r, dr)
    overlap_reuse = max((moved_r.overlap - base.overlap) / dr, 0.05)
    return _Jacobian(layer, layer_reuse, overlap_reuse)


def _solve2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve 2x2 systems a @ x = b (batched); a near-singular block falls back to its diagonal."""
    det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    diag = np.stack([a[..., 0, 0], a[..., 1, 1]], -1)
    safe_diag = np.where(np.abs(diag) > 1e-3, diag, 1e-3)
    ok = np.abs(det) > 1e-4
    num = np.stack([b[..., 0] * a[..., 1, 1] - b[..., 1] * a[..., 0, 1],
                    a[..., 0, 0] * b[..., 1] - a[..., 1, 0] * b[..., 0]], -1)
    return np.where(ok[..., None], num / np.where(ok, det, 1.0)[..., None], b / safe_diag)


def _newton_step(x: _Knobs, res: np.ndarray, jac: _Jacobian, n_layers: int, damping: float = 0.8) -> _Knobs:
    dr = _clip(float(res[-1]) / jac.overlap_reuse * damping, -0.2, 0.2)
    rhs = np.stack([res[:n_layers], res[n_layers : 2 * n_layers]], 1) - jac.layer_reuse * dr
    steps = np.clip(_solve2(jac.layer, rhs) * damping, [-0.4, -0.15], [0.4, 0.15])
    return _Knobs(x.zipf + steps[:, 0], x.active + steps[:, 1], x.reuse + dr, x.cross)


def fit(trace: Trace, seed: int = 0) -> SynthConfig:
    """A SynthConfig whose traces have `trace`'s shape, lengths and decode statistics."""
    return fit_with_report(trace, seed).config


def n_finite(*values: float) -> bool:
    return all(np.isfinite(v) for v in values)


def _clip(value: float, lo: float, hi: float) -> float:
    return float(min(max(value, lo), hi))


# ---- comparison --------------------------------------------------------------------------------
def _stats_table(a: RequestStats, b: RequestStats, name_a: str, name_b: str) -> pd.DataFrame:
    rows: list[tuple[str, float, float]] = [
        ("top-k coverage (per request, mean over layers)", float(a.coverage.mean()), float(b.coverage.mean())),
        ("top-k coverage, largest layer gap", 0.0, float(np.max(np.abs(a.coverage - b.coverage)))),
        ("distinct experts per layer (per request)", float(a.distinct.mean()), float(b.distinct.mean())),
        ("distinct experts, largest layer gap", 0.0, float(np.max(np.abs(a.distinct - b.distinct)))),
        ("entropy bits (per request, mean over layers)", float(a.entropy.mean()), float(b.entropy.mean())),
        ("previous-token overlap", a.overlap, b.overlap),
        ("cross-layer transition accuracy", a.cross_transition, b.cross_transition),
        ("cross-layer gain over frequency", a.cross_gain, b.cross_gain),
        ("decode tokens per request", a.decode_tokens, b.decode_tokens),
    ]
    df = pd.DataFrame(rows, columns=["stat", name_a, name_b])
    df["diff"] = df[name_b] - df[name_a]
    return df


def compare_stats(real: Trace, synthetic: Trace, max_requests: int = DEFAULT_MAX_REQUESTS) -> pd.DataFrame:
    """stat | real | synthetic | diff for the fitted decode statistics and two it was not fitted to.

    Length-dependent statistics (coverage, distinct experts, entropy, cross-layer accuracy) are
    computed within each request and averaged over requests, so a synthetic trace of 10 requests
    compares with a real trace of one request of the same length (the "scaled" comparison).
    Not fitted, shown to judge the model: entropy and the lag-8 overlap.
    """
    a, b = request_stats(real, max_requests), request_stats(synthetic, max_requests)
    df = _stats_table(a, b, "real", "synthetic")
    lag8 = [predictors.lag_overlap(t, 8, per_layer=False)[0] for t in (real, synthetic)]
    extra = pd.DataFrame([{"stat": "lag-8 overlap", "real": lag8[0], "synthetic": lag8[1], "diff": lag8[1] - lag8[0]}])
    return pd.concat([df, extra], ignore_index=True)


def config_yaml(config: SynthConfig, header: dict[str, Any] | None = None) -> str:
    """The config as YAML (sorted keys), with optional comment lines naming where it came from."""
    import yaml

    lines = [f"# {key}: {value}" for key, value in (header or {}).items()]
    body = yaml.safe_dump(config.to_dict(), sort_keys=True, default_flow_style=None)
    return "\n".join(lines + [body])
