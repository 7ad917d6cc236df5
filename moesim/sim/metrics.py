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

from typing import Any, Callable

import numpy as np
import pandas as pd

from moesim.sim.cache_core import HIT, LATE, MISS_CAPACITY, MISS_COLLISION, MISS_COMPULSORY
from moesim.sim.requests import RequestChunk
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
    return {
        "requests": requests,
        "hits": hits,
        "late_prefetch": late,
        "misses": comp + cap + coll,
        "compulsory": comp,
        "capacity": cap,
        "collision": coll,
        "bytes_fetched": fetched.astype(np.int64),
    }


def _with_rate(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    requests, hits = counts["requests"], counts["hits"]
    with np.errstate(invalid="ignore", divide="ignore"):
        counts["hit_rate"] = np.where(requests > 0, hits / np.maximum(requests, 1), np.nan)
    return counts


def _grouped(result: Any, group_of: Callable[[RequestChunk], np.ndarray], n_groups: int,
             chunk_requests: int | None = None) -> dict[str, np.ndarray]:
    """COUNT_COLUMNS per group, plus "accesses" and "access_hits" (routed accesses, and those whose
    request was an on-time hit), summed over the stream's chunks (no array as long as the stream:
    moesim/sim/requests.py); `group_of(chunk)` gives each request's group. Byte sums are exact
    integers in float64 per chunk, so the totals equal a one-shot count."""
    object_bytes = result.trace.object_bytes_array()
    total: dict[str, np.ndarray] | None = None
    chunks = result.stream.chunks(chunk_requests)
    for chunk in chunks:
        outcomes, groups = result.outcomes[chunk.lo:chunk.hi], group_of(chunk).astype(np.int64)
        got = _counts(outcomes, object_bytes[chunk.obj], groups, n_groups)
        accesses = chunk.accesses.astype(np.int64)
        got["accesses"] = np.bincount(groups, weights=accesses, minlength=n_groups).astype(np.int64)
        hit = outcomes == HIT
        got["access_hits"] = np.bincount(groups[hit], weights=accesses[hit], minlength=n_groups).astype(np.int64)
        total = got if total is None else {k: total[k] + v for k, v in got.items()}
    if total is None:
        zeros = np.zeros(n_groups, dtype=np.int64)
        total = {k: zeros.copy() for k in [*COUNT_COLUMNS[:-1], "accesses", "access_hits"]}
    return _with_rate(total)


def _count_frame(counts: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({k: counts[k] for k in COUNT_COLUMNS})


def summary(result: Any, chunk_requests: int | None = None) -> dict[str, Any]:
    """Totals and the decode/prefill split, as plain Python numbers (JSON-ready); one walk over the
    request stream a chunk at a time (`chunk_requests`: its size, for tests)."""
    trace = result.trace
    # per cell in the trace's narrow types (a decode trace has a cell per 8 accesses): int8 here
    cell_phase = np.repeat(trace.pass_phase, np.diff(trace.pass_cell_offsets))
    by_phase = _grouped(result, lambda chunk: cell_phase[chunk.cell], 2, chunk_requests)
    accesses, access_hits = int(by_phase.pop("accesses").sum()), int(by_phase.pop("access_hits").sum())
    total = {k: _scalar(v.sum()) for k, v in by_phase.items() if k != "hit_rate"}
    total["hit_rate"] = _scalar(_with_rate({k: np.asarray([v]) for k, v in total.items()})["hit_rate"][0])
    phases = {PHASE_NAMES[p]: {k: _scalar(v[p]) for k, v in by_phase.items()} for p in (0, 1)}
    c = result.counters
    return {
        "routed_accesses": trace.n_accesses,
        **total,
        "hit_rate_per_access": access_hits / accesses if accesses else None,  # each token counts once
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


def by_layer(result: Any, chunk_requests: int | None = None) -> pd.DataFrame:
    trace = result.trace
    cell_layer = trace.cell_layer
    df = _count_frame(_grouped(result, lambda chunk: cell_layer[chunk.cell], trace.meta.n_layers, chunk_requests))
    df.insert(0, "layer", np.arange(trace.meta.n_layers))
    return df


def by_pass(result: Any, chunk_requests: int | None = None) -> pd.DataFrame:
    trace = result.trace
    cell_pass = trace.cell_pass()
    df = _count_frame(_grouped(result, lambda chunk: cell_pass[chunk.cell], trace.n_passes, chunk_requests))
    df.insert(0, "phase", [PHASE_NAMES[int(x)] for x in trace.pass_phase])
    df.insert(0, "pass", np.arange(trace.n_passes))
    return df


def by_request(result: Any) -> pd.DataFrame:
    """Per user request (sequence): outcomes of the routed accesses its tokens made.

    A cell-level outcome is attributed to every access it served, so in a batched pass an expert
    shared by two sequences counts once for each. Per access by nature: it builds the stream's
    access-to-request map (8 bytes per access), which the replay itself never does.
    """
    trace = result.trace
    access_token = _access_token(trace)
    req = trace.token_request[access_token].astype(np.int64)
    outcomes = result.outcomes[result.stream.access_request]
    sizes = trace.object_bytes_array()[result.stream.obj][result.stream.access_request]
    ids, inverse = np.unique(req, return_inverse=True)
    counts = _with_rate(_counts(outcomes, sizes, inverse, ids.size))
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
