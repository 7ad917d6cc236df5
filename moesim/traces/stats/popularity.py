"""Per-layer popularity: which experts a layer routes to, how concentrated it is, and the phase masks.

Formulas in docs/metrics.md, section "Trace statistics".
"""

from __future__ import annotations

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.trace import Trace
from moesim.traces.stats.arrays import first_index

PHASES = ("all", "prefill", "decode")


# ---- access-level columns ----------------------------------------------------------------------
def cell_phase(trace: Trace) -> np.ndarray:
    """Phase (PREFILL/DECODE) of every cell."""
    return trace.pass_phase[trace.cell_pass()]


def check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise UserError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}", "stats")


def cell_mask(trace: Trace, phase: str) -> np.ndarray | None:
    """Cells of `phase` (None means all cells, to skip a pointless copy)."""
    check_phase(phase)
    if phase == "all":
        return None
    return cell_phase(trace) == (PREFILL if phase == "prefill" else DECODE)


def access_mask(trace: Trace, phase: str) -> np.ndarray | None:
    cells = cell_mask(trace, phase)
    return None if cells is None else np.repeat(cells, np.diff(trace.cell_offsets))


# ---- per-layer popularity ----------------------------------------------------------------------
def layer_expert_counts(trace: Trace, phase: str = "all") -> np.ndarray:
    """Accesses per (layer, expert) as an int64 [n_layers, n_experts] array. O(accesses)."""
    obj = trace.object_ids()
    mask = access_mask(trace, phase)
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
    mask = access_mask(trace, phase)
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
