"""What a trace holds, as one JSON-ready dict (`moesim traces info`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from moesim.traces.format.trace_meta import PHASE_NAMES
from moesim.traces.format.trace import Trace


def trace_info(trace: Trace) -> dict[str, Any]:
    """Shape, phases, sizes and provenance of `trace`.

    total_routed_bytes is every routed object once (layers x experts x object bytes: the whole
    expert bank, the base of a capacity given in %); `touched` counts the distinct objects the trace
    routes to (and their bytes), in all and by phase.
    """
    m = trace.meta
    pass_tokens = np.diff(trace.pass_token_offsets)
    passes = {name: int(np.count_nonzero(trace.pass_phase == code)) for code, name in PHASE_NAMES.items()}
    tokens = {name: int(pass_tokens[trace.pass_phase == code].sum()) for code, name in PHASE_NAMES.items()}
    passes["total"] = trace.n_passes
    tokens["total"] = int(pass_tokens.sum())
    sizes = trace.object_bytes_array()
    object_ids = trace.object_ids()
    access_phase = trace.pass_phase[trace.cell_pass()][trace.access_cell()] if trace.n_accesses else \
        np.zeros(0, np.int8)

    def touched(mask: np.ndarray) -> dict[str, int]:
        objects = np.unique(object_ids[mask])
        return {"objects": int(objects.size), "bytes": int(sizes[objects].sum()) if objects.size else 0}

    touched_by_phase = {"total": touched(np.ones(trace.n_accesses, dtype=bool))}
    for code, name in PHASE_NAMES.items():
        touched_by_phase[name] = touched(access_phase == code)
    per_layer = [int(b) for b in m.object_bytes]
    return {
        "model": m.model,
        "kind": m.kind,
        "layers": m.n_layers,
        "layer_ids": m.layer_ids,
        "experts": m.n_experts,
        "top_k": m.top_k,
        "shared_experts": m.shared_experts,
        "passes": passes,
        "tokens": tokens,
        "requests": int(np.unique(trace.token_request).size),
        "cells": trace.n_cells,
        "routed_accesses": trace.n_accesses,
        "object_bytes": {
            "min": min(per_layer),
            "max": max(per_layer),
            "per_layer": per_layer,
            "unknown": bool(m.extra.get("object_bytes_unknown", False)),
        },
        "total_routed_bytes": trace.total_object_bytes(),
        "touched": touched_by_phase,
        "dense_bytes_total": None if m.dense_bytes is None else int(sum(m.dense_bytes)),
        "weights": trace.weight is not None,
        "annotations": sorted(trace.annotations),
        "predictions": {name: int(arr.shape[1]) for name, arr in sorted(trace.predictions.items())},
        "provenance": m.provenance,
        "extra": m.extra,
        "content_hash": trace.content_hash(),
    }
