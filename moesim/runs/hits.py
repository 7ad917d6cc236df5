"""Per-step cache hits from the engine's cumulative hit percentage.

The BigMoeOnEdge engine prints `cache_hit_pct` = 100 x hits / lookups since the start, prefill
included, rounded to 2 decimals. A decode step of one token makes k x L lookups (one per routed
expert); the prefill makes one lookup per distinct expert of each layer in the prompt batch
(checked on both route traces: gemma 1,538 and qwen 2,662 prefill lookups reproduce the traces'
per-step residency, tests/runs/test_hits.py). So with P prefill lookups and D lookups per step,
cumulative hits after step t are pct_t / 100 x (P + t D), and a step's hits are the difference.

Rounding: each cumulative figure is known to +-0.005 % of its lookups, so a step's hits are known
to +-0.00005 x (lookups before + lookups after); `hit_tolerance` gives that bound.
"""

from __future__ import annotations

import numpy as np

from moesim.errors import UserError


def cumulative_lookups(n_steps: int, per_step: int, prefill: int) -> np.ndarray:
    return prefill + per_step * np.arange(1, n_steps + 1, dtype=np.float64)


def per_step_hits(hit_pct: np.ndarray, per_step: int, prefill: int, prefill_hits: float = 0.0) -> np.ndarray:
    """Hits in each decode step, differenced from the cumulative percentage (floats: rounding stays visible)."""
    pct = np.asarray(hit_pct, dtype=np.float64)
    if (pct < 0).any():
        raise UserError("the run has no cache (hit % is -1): there are no hits to difference", "cache_hit_pct")
    cum = pct / 100.0 * cumulative_lookups(len(pct), per_step, prefill)
    return np.diff(np.concatenate(([float(prefill_hits)], cum)))


def hit_tolerance(n_steps: int, per_step: int, prefill: int) -> np.ndarray:
    """Bound on |differenced - true| hits per step from the 2-decimal rounding of the percentage."""
    total = cumulative_lookups(n_steps, per_step, prefill)
    before = np.concatenate(([float(prefill)], total[:-1]))
    return 0.00005 * (total + np.where(np.arange(n_steps) == 0, 0.0, before))


def estimate_prefill_lookups(hit_pct: np.ndarray, per_step: int, upper: int, prefill_hits: float = 0.0) -> int:
    """The prefill lookups P (0..upper) under which the cumulative hits come out whole numbers.

    For the right P every pct_t x (P + t D) / 100 lies within rounding of an integer and every
    step's hits lie in [0, D]; a wrong P drifts off both. Ties go to the smaller P.
    """
    pct = np.asarray(hit_pct, dtype=np.float64)
    if pct.size == 0 or upper < 0:
        raise UserError("no steps to estimate prefill lookups from", "cache_hit_pct")
    candidates = np.arange(0, upper + 1, dtype=np.float64)[:, None]
    t = np.arange(1, pct.size + 1, dtype=np.float64)[None, :]
    total = candidates + per_step * t
    cum = pct[None, :] / 100.0 * total
    tol = 0.00005 * total
    off_integer = np.maximum(np.abs(cum - np.round(cum)) - tol, 0.0)
    steps = np.diff(np.concatenate((np.full((candidates.size, 1), prefill_hits), cum), axis=1), axis=1)
    out_of_range = np.maximum(-steps, 0.0) + np.maximum(steps - per_step, 0.0)
    score = (off_integer ** 2).sum(axis=1) + (out_of_range ** 2).sum(axis=1)
    return int(np.argmin(score))
