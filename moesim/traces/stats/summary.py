"""Trace statistics: the summary, the per-layer table and everything `moesim traces stats` prints.

Everything in moesim/traces/stats/ is vectorised numpy over the Trace's columns (a 10 M-access trace
takes a few seconds; nothing loops over accesses in Python). Formulas are in docs/metrics.md, section
"Trace statistics".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from moesim.traces.format.trace_meta import DECODE, PHASE_NAMES, PREFILL
from moesim.traces.format.trace import Trace
from moesim.traces.stats.arrays import unique_sorted
from moesim.traces.stats.popularity import (
    access_mask,
    cell_mask,
    check_phase,
    distinct_per_layer,
    entropy_bits,
    layer_expert_counts,
    topk_coverage,
)
from moesim.traces.stats.predictors import PredictorStats, lag_overlap, per_layer_mean, predictor_stats
from moesim.traces.stats.working_set import (
    PassObjectUses,
    cell_distinct_experts,
    pass_object_uses,
    pass_working_set,
    reuse_bucket_labels,
    reuse_distance_histogram,
)


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
    cells = cell_mask(trace, phase)
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
            "working_set_per_pass": per_layer_mean(ws.astype(np.float64), layers, n_layers),
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
    check_phase(phase)
    uses = uses or pass_object_uses(trace, phase)
    sizes = trace.object_bytes_array()
    obj = uses.obj
    touched = obj[np.r_[True, obj[1:] != obj[:-1]]] if obj.size else obj
    n_tokens_by_phase = np.bincount(
        np.repeat(trace.pass_phase, np.diff(trace.pass_token_offsets)).astype(np.int64), minlength=2
    )
    passes_by_phase = np.bincount(trace.pass_phase.astype(np.int64), minlength=2)
    mask = access_mask(trace, phase)
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
