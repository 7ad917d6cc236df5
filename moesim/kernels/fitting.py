"""Robust fits of microbenchmark timings: copies as latency + bytes/bandwidth, kernels as a linear cost model.

Timings span five orders of magnitude (a 4 KiB copy takes microseconds, a 1 GiB one tens of
milliseconds), so residuals are *relative*: an absolute least-squares fit would let the largest
sizes decide everything and leave the latency term to noise. Small sizes then pin the intercept
(alpha) and large sizes the slope (1/beta) by themselves. Outliers (a preempted trial, a clock
change) are down-weighted with Huber weights by iteratively reweighted least squares, and
coefficients are kept non-negative (a negative latency or bandwidth means the model does not fit,
not that time runs backwards). numpy only: tested on CPU with synthetic timings.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

HUBER_K = 1.345  # 95% efficiency under Gaussian noise
LARGE_COPY_BYTES = 16 * 2**20  # "slope over sizes >= 16 MiB" (gpu_method.md §9)


@dataclass(frozen=True)
class Spread:
    """Median and 10th/90th percentiles of repeated measurements."""

    n: int
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, values: np.ndarray | list[float]) -> "Spread":
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            raise ValueError("no values")
        p10, med, p90 = np.percentile(v, [10, 50, 90])
        return cls(int(v.size), float(med), float(p10), float(p90))


@dataclass(frozen=True)
class LinearFit:
    """y ~ X @ coef (coef >= 0), fitted on relative residuals with Huber weights."""

    coef: np.ndarray
    relative_residuals: np.ndarray  # (y - X @ coef) / y per point
    weights: np.ndarray  # final Huber weights (1 = fully trusted)
    iterations: int

    @property
    def max_abs_residual(self) -> float:
        return float(np.max(np.abs(self.relative_residuals))) if self.relative_residuals.size else 0.0

    @property
    def median_abs_residual(self) -> float:
        return float(np.median(np.abs(self.relative_residuals))) if self.relative_residuals.size else 0.0


def _nonneg_weighted_lstsq(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """min sum w (y - X c)^2 subject to c >= 0, by trying every column subset (a handful of columns)."""
    n_cols = X.shape[1]
    sw = np.sqrt(w)
    best, best_cost = np.zeros(n_cols), float(np.sum(w * y * y))
    for r in range(1, n_cols + 1):
        for cols in itertools.combinations(range(n_cols), r):
            sub = X[:, cols] * sw[:, None]
            c, *_ = np.linalg.lstsq(sub, y * sw, rcond=None)
            if np.any(c < 0):
                continue
            coef = np.zeros(n_cols)
            coef[list(cols)] = c
            cost = float(np.sum(w * (y - X @ coef) ** 2))
            if cost < best_cost - 1e-300:
                best, best_cost = coef, cost
    return best


def robust_relative_fit(X: np.ndarray, y: np.ndarray, max_iter: int = 50, tol: float = 1e-10) -> LinearFit:
    """Non-negative linear fit minimising Huber loss of relative residuals (y - Xc)/y. y must be > 0."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] < X.shape[1]:
        raise ValueError(f"need at least {X.shape[1]} points for {X.shape[1]} coefficients, got {y.shape[0]}")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("timings must be positive and finite")
    # Relative residuals: scale each row by 1/y, so the problem is min sum h * (1 - (X/y) c)^2.
    A = X / y[:, None]
    ones = np.ones_like(y)
    huber = np.ones_like(y)
    coef = _nonneg_weighted_lstsq(A, ones, huber)
    iterations = 1
    for iterations in range(2, max_iter + 1):
        r = ones - A @ coef
        mad = float(np.median(np.abs(r - np.median(r))))
        scale = max(1.4826 * mad, 1e-6)
        u = np.abs(r) / (HUBER_K * scale)
        new_huber = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-300))
        new_coef = _nonneg_weighted_lstsq(A, ones, new_huber)
        converged = np.allclose(new_coef, coef, rtol=tol, atol=0.0)
        coef, huber = new_coef, new_huber
        if converged:
            break
    residuals = (y - X @ coef) / y
    return LinearFit(coef=coef, relative_residuals=residuals, weights=huber, iterations=iterations)


@dataclass(frozen=True)
class CopyFit:
    """t(s) = latency + s / bandwidth over a size sweep, with per-size residuals."""

    latency_s: float
    bandwidth_Bps: float
    sizes: np.ndarray
    times_s: np.ndarray  # the per-size medians that were fitted
    relative_residuals: np.ndarray
    large_bandwidth_Bps: float | None  # slope over sizes >= 16 MiB alone, a cross-check
    max_abs_residual: float

    def predict(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth_Bps

    def to_dict(self) -> dict:
        return {
            "latency_s": self.latency_s,
            "bandwidth_Bps": self.bandwidth_Bps,
            "large_bandwidth_Bps": self.large_bandwidth_Bps,
            "max_abs_relative_residual": self.max_abs_residual,
            "points": [{"bytes": int(s), "median_s": float(t), "relative_residual": float(r)}
                       for s, t, r in zip(self.sizes, self.times_s, self.relative_residuals)],
        }


def fit_copy_sweep(sizes: np.ndarray | list[int], times_s: np.ndarray | list[float]) -> CopyFit:
    """Fit latency and bandwidth to a copy-size sweep; repeated sizes are reduced to their median."""
    sizes = np.asarray(sizes, dtype=np.float64)
    times = np.asarray(times_s, dtype=np.float64)
    if sizes.shape != times.shape:
        raise ValueError("sizes and times differ in length")
    uniq = np.unique(sizes)
    med = np.array([np.median(times[sizes == s]) for s in uniq])
    if uniq.size < 2:
        raise ValueError("a copy fit needs at least two distinct sizes")
    fit = robust_relative_fit(np.column_stack([np.ones_like(uniq), uniq]), med)
    alpha, gamma = float(fit.coef[0]), float(fit.coef[1])
    if gamma <= 0:
        raise ValueError("copy times do not grow with size: no bandwidth can be fitted")
    large = uniq >= LARGE_COPY_BYTES
    large_bw = None
    if int(large.sum()) >= 2:
        slope = np.polyfit(uniq[large], med[large], 1)[0]
        large_bw = float(1.0 / slope) if slope > 0 else None
    return CopyFit(latency_s=alpha, bandwidth_Bps=1.0 / gamma, sizes=uniq, times_s=med,
                   relative_residuals=fit.relative_residuals, large_bandwidth_Bps=large_bw,
                   max_abs_residual=fit.max_abs_residual)


@dataclass(frozen=True)
class KernelFit:
    """t = overhead + weight bytes / bandwidth + FLOPs / flop rate (a linear, additive roofline)."""

    overhead_s: float
    bandwidth_Bps: float | None  # None when the fit finds no byte term
    flop_rate: float | None
    relative_residuals: np.ndarray
    max_abs_residual: float

    def predict(self, weight_bytes: float, flops: float) -> float:
        t = self.overhead_s
        if self.bandwidth_Bps:
            t += weight_bytes / self.bandwidth_Bps
        if self.flop_rate:
            t += flops / self.flop_rate
        return t

    def to_dict(self) -> dict:
        return {"overhead_s": self.overhead_s, "bandwidth_Bps": self.bandwidth_Bps, "flop_rate": self.flop_rate,
                "max_abs_relative_residual": self.max_abs_residual}


def fit_kernel_times(weight_bytes: np.ndarray | list[float], flops: np.ndarray | list[float],
                     times_s: np.ndarray | list[float]) -> KernelFit:
    """Fit the expert kernel's time over a grid of token histograms (bytes = active experts x expert bytes)."""
    b = np.asarray(weight_bytes, dtype=np.float64)
    f = np.asarray(flops, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    fit = robust_relative_fit(np.column_stack([np.ones_like(b), b, f]), t)
    c0, c1, c2 = (float(c) for c in fit.coef)
    return KernelFit(overhead_s=c0, bandwidth_Bps=1.0 / c1 if c1 > 0 else None,
                     flop_rate=1.0 / c2 if c2 > 0 else None, relative_residuals=fit.relative_residuals,
                     max_abs_residual=fit.max_abs_residual)
