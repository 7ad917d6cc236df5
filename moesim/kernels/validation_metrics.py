"""Sim-to-real error metrics (gpu_method.md §8-9): step times, MAPE, signed bias, percentiles, ranking.

Conventions (docs in README "Validating on a real GPU"):
- a *step* is one pass; its time is the end of its last cell minus the end of the previous
  pass's last cell (the first pass counts from 0), so steps add up to the run's total time and
  host gaps between passes belong to the step after them;
- percentage errors are (sim - real) / real: positive = the simulator is slower than the GPU;
- MAPE is the mean absolute percentage error over steps, MPE the mean signed one (bias);
- the ranking compares configurations by a time metric (lower = better) with Kendall's tau-b
  and with exact order equality.
Pure numpy: no torch.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from moesim.traces.format.trace import Trace


def step_times(trace: Trace, cell_end: np.ndarray) -> np.ndarray:
    """Seconds per pass (NaN for a pass with no cells) from per-cell end times."""
    n_p = trace.n_passes
    out = np.full(n_p, np.nan)
    offsets = trace.pass_cell_offsets
    previous = 0.0
    for p in range(n_p):
        lo, hi = int(offsets[p]), int(offsets[p + 1])
        if hi > lo:
            end = float(cell_end[hi - 1])
            out[p] = end - previous
            previous = end
    return out


def percentage_errors(real: Sequence[float], sim: Sequence[float]) -> np.ndarray:
    """(sim - real) / real per entry, over entries where both are finite and real > 0."""
    r = np.asarray(real, dtype=np.float64)
    s = np.asarray(sim, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(s) & (r > 0)
    return (s[ok] - r[ok]) / r[ok]


def error_summary(real: Sequence[float], sim: Sequence[float]) -> dict[str, float | None]:
    """MAPE, MPE (bias), p50/p99 of the absolute error, and the p50/p99 values' own errors."""
    errors = percentage_errors(real, sim)
    r = np.asarray(real, dtype=np.float64)
    s = np.asarray(sim, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(s) & (r > 0)
    if errors.size == 0:
        return {"n": 0, "mape": None, "mpe": None, "ape_p50": None, "ape_p99": None, "real_p50": None,
                "sim_p50": None, "p50_error": None, "real_p99": None, "sim_p99": None, "p99_error": None}
    a = np.abs(errors)
    out: dict[str, float | None] = {"n": int(errors.size), "mape": float(a.mean()), "mpe": float(errors.mean()),
                                    "ape_p50": float(np.percentile(a, 50)), "ape_p99": float(np.percentile(a, 99))}
    for q in (50, 99):
        rq, sq = float(np.percentile(r[ok], q)), float(np.percentile(s[ok], q))
        out[f"real_p{q}"] = rq
        out[f"sim_p{q}"] = sq
        out[f"p{q}_error"] = (sq - rq) / rq if rq > 0 else None
    return out


def relative_error(real: float | None, sim: float | None) -> float | None:
    """(sim - real) / real, or None when either is missing or real is 0."""
    if real is None or sim is None or not math.isfinite(real) or not math.isfinite(sim) or real == 0:
        return None
    return (sim - real) / real


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's tau-b between two scorings of the same items (ties allowed); None for < 2 items.

    O(n^2), meant for a handful of policies. 1 = same order, -1 = reversed.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    n = x.size
    if n < 2 or y.size != n:
        return None
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = np.sign(x[i] - x[j])
            dy = np.sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom > 0 else None


def ranking(labels: Sequence[str], values: Sequence[float]) -> list[str]:
    """Labels from best (lowest value) to worst; ties keep the given order."""
    order = sorted(range(len(labels)), key=lambda i: (values[i], i))
    return [labels[i] for i in order]
