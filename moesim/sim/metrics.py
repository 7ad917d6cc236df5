"""Counts from a replay: totals, and splits by phase, layer and request (docs/metrics.md).

Definitions:
- request: what the cache is asked for (a cell-distinct object in event mode, an access in
  sequential mode); requests = hits + late_prefetch + misses.
- hit_rate = hits / requests: on-time hits only; late prefetches (in flight when asked for) are
  counted beside it, never inside it. hit_rate_per_access weighs requests by their routed accesses.
- misses split into compulsory (first request of the object in the trace), collision (the object
  was evicted earlier in the same pass) and capacity (any other).
- bytes_fetched: bytes copied on demand (misses, bypassed ones included).
- miss_rate = misses / requests; collisions are reported per request (collision_rate) and per
  miss (collision_share), since sources quote both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from moesim.sim.cache_core import HIT, LATE, MISS_CAPACITY, MISS_COLLISION, MISS_COMPULSORY
from moesim.traces.format.trace_meta import PHASE_NAMES

COUNT_COLUMNS = ["requests", "hits", "late_prefetch", "misses", "compulsory", "capacity", "collision",
                 "bytes_fetched", "hit_rate"]


def _counts(outcomes: np.ndarray, sizes: np.ndarray, groups: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    def per(code: int) -> np.ndarray:
        return np.bincount(groups[outcomes == code], minlength=n_groups)

    hits, late = per(HIT), per(LATE)
    comp, cap, coll = per(MISS_COMPULSORY), per(MISS_CAPACITY), per(MISS_COLLISION)
    miss_mask = outcomes >= MISS_COMPULSORY
    fetched = np.bincount(groups[miss_mask], weights=sizes[miss_mask], minlength=n_groups)
    requests = np.bincount(groups, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(requests > 0, hits / np.maximum(requests, 1), np.nan)
    return {
        "requests": requests,
        "hits": hits,
        "late_prefetch": late,
        "misses": comp + cap + coll,
        "compulsory": comp,
        "capacity": cap,
        "collision": coll,
        "bytes_fetched": fetched.astype(np.int64),
        "hit_rate": rate,
    }


def _request_sizes(result: Any) -> np.ndarray:
    return result.trace.object_bytes_array()[result.stream.obj]


def summary(result: Any) -> dict[str, Any]:
    """Totals and the decode/prefill split, as plain Python numbers (JSON-ready)."""
    trace = result.trace
    sizes = _request_sizes(result)
    zeros = np.zeros(result.stream.n_requests, dtype=np.int64)
    total = {k: _scalar(v[0]) for k, v in _counts(result.outcomes, sizes, zeros, 1).items()}
    phase = trace.pass_phase[trace.cell_pass()[result.stream.cell]].astype(np.int64)
    by_phase = _counts(result.outcomes, sizes, phase, 2)
    phases = {PHASE_NAMES[p]: {k: _scalar(v[p]) for k, v in by_phase.items()} for p in (0, 1)}
    c = result.counters
    return {
        "routed_accesses": trace.n_accesses,
        **total,
        "hit_rate_per_access": _per_access_hit_rate(result),
        "miss_rate": _ratio(total["misses"], total["requests"]),
        "collision_rate": _ratio(total["collision"], total["requests"]),
        "collision_share": _ratio(total["collision"], total["misses"]),
        "by_phase": phases,
        "evictions": c.evictions,
        "bypasses": c.bypasses,
        "prefetch": {
            "issued": c.prefetch_issued,
            "useful": c.prefetch_useful,
            "late": c.prefetch_late,
            "wasted": c.prefetch_wasted,
            "bytes": c.prefetch_bytes,
        },
    }


def _per_access_hit_rate(result: Any) -> float | None:
    """Share of routed accesses whose request was an on-time hit (each token counts once)."""
    served = result.outcomes[result.stream.access_request]
    return float(np.mean(served == HIT)) if served.size else None


def by_layer(result: Any) -> pd.DataFrame:
    trace = result.trace
    layer = trace.cell_layer[result.stream.cell].astype(np.int64)
    counts = _counts(result.outcomes, _request_sizes(result), layer, trace.meta.n_layers)
    df = pd.DataFrame(counts)
    df.insert(0, "layer", np.arange(trace.meta.n_layers))
    return df


def by_pass(result: Any) -> pd.DataFrame:
    trace = result.trace
    p = trace.cell_pass()[result.stream.cell].astype(np.int64)
    counts = _counts(result.outcomes, _request_sizes(result), p, trace.n_passes)
    df = pd.DataFrame(counts)
    df.insert(0, "phase", [PHASE_NAMES[int(x)] for x in trace.pass_phase])
    df.insert(0, "pass", np.arange(trace.n_passes))
    return df


def by_request(result: Any) -> pd.DataFrame:
    """Per user request (sequence): outcomes of the routed accesses its tokens made.

    A cell-level outcome is attributed to every access it served, so in a batched pass an expert
    shared by two sequences counts once for each.
    """
    trace = result.trace
    access_token = _access_token(trace)
    req = trace.token_request[access_token].astype(np.int64)
    outcomes = result.outcomes[result.stream.access_request]
    sizes = trace.object_bytes_array()[result.stream.obj][result.stream.access_request]
    ids, inverse = np.unique(req, return_inverse=True)
    counts = _counts(outcomes, sizes, inverse, ids.size)
    df = pd.DataFrame(counts).drop(columns=["bytes_fetched"])
    df.insert(0, "request", ids)
    return df


def _access_token(trace: Any) -> np.ndarray:
    """Global pass-token index of every access: the trace's own access-to-token map, offset by its pass."""
    pass_start = trace.pass_token_offsets[:-1].astype(np.int64)[trace.cell_pass()]
    return pass_start[trace.access_cell()] + trace.access_tokens().astype(np.int64)


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _scalar(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    return int(v)
