"""Small traces from Python lists: build_trace (tests, importers of modest size) and simple_trace (hand cases)."""

from __future__ import annotations

from typing import Any

import numpy as np

from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import DECODE, TraceMeta, expert_dtype


def build_trace(
    meta: TraceMeta,
    passes: list[dict[str, Any]],
) -> Trace:
    """Build a Trace from a list of passes (small traces, tests, importers of modest size).

    Each pass is {"phase": 0|1, "tokens": [(request, position), ...] (optional),
    "cells": [(layer, [[e, e, ...] per token], [[w, ...] per token] or None), ...]}.
    Large importers should fill the arrays directly.
    """
    pass_phase: list[int] = []
    pass_cell_offsets = [0]
    pass_token_offsets = [0]
    token_request: list[int] = []
    token_position: list[int] = []
    cell_layer: list[int] = []
    cell_offsets = [0]
    cell_tokens: list[int] = []
    experts: list[int] = []
    weights: list[float] = []
    access_token: list[int] = []
    uneven = False  # some cell's tokens route to different numbers of experts
    has_weights = None
    for p, spec in enumerate(passes):
        pass_phase.append(int(spec.get("phase", DECODE)))
        cells = spec["cells"]
        n_tok = max((len(c[1]) for c in cells), default=0)
        tokens = spec.get("tokens") or [(0, p if spec.get("phase", DECODE) == DECODE else i) for i in range(n_tok)]
        for req, pos in tokens:
            token_request.append(int(req))
            token_position.append(int(pos))
        pass_token_offsets.append(len(token_request))
        for cell in cells:
            layer, per_token = cell[0], cell[1]
            per_token_w = cell[2] if len(cell) > 2 else None
            if has_weights is None:
                has_weights = per_token_w is not None
            cell_layer.append(int(layer))
            cell_tokens.append(len(per_token))
            if len({len(row) for row in per_token}) > 1:
                uneven = True
            first_token = len(tokens) - len(per_token)  # a cell with fewer tokens holds the pass's last ones
            for t, row in enumerate(per_token):
                experts.extend(int(e) for e in row)
                access_token.extend([first_token + t] * len(row))
                if has_weights:
                    if per_token_w is None:
                        raise ValueError("either every cell has weights or none does")
                    weights.extend(float(w) for w in per_token_w[t])
            cell_offsets.append(len(experts))
        pass_cell_offsets.append(len(cell_layer))
    trace = Trace(
        meta=meta,
        pass_phase=np.asarray(pass_phase, dtype=np.int8),
        pass_cell_offsets=np.asarray(pass_cell_offsets, dtype=np.int64),
        pass_token_offsets=np.asarray(pass_token_offsets, dtype=np.int64),
        token_request=np.asarray(token_request, dtype=np.int32),
        token_position=np.asarray(token_position, dtype=np.int32),
        cell_layer=np.asarray(cell_layer, dtype=np.int16),
        cell_offsets=np.asarray(cell_offsets, dtype=np.int64),
        cell_tokens=np.asarray(cell_tokens, dtype=np.int32),
        expert=np.asarray(experts, dtype=expert_dtype(meta.n_experts)),
        weight=np.asarray(weights, dtype=np.float16) if has_weights else None,
        access_token=np.asarray(access_token, dtype=np.int32) if uneven else None,
    )
    trace.normalize_access_token()
    return trace


def simple_trace(
    cells_per_pass: list[list[list[int]]],
    n_layers: int,
    n_experts: int,
    object_bytes: int | list[int] = 1,
    top_k: int | None = None,
    phases: list[int] | None = None,
) -> Trace:
    """A single-request trace for hand-computed tests.

    `cells_per_pass[p][l]` lists the experts layer l routes to in pass p (one token per cell unless
    top_k is given, in which case the list is split into tokens of top_k experts each).
    """
    sizes = [object_bytes] * n_layers if isinstance(object_bytes, int) else list(object_bytes)
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=sizes, model="hand")
    passes = []
    for p, layers in enumerate(cells_per_pass):
        phase = phases[p] if phases else DECODE
        cells = []
        for layer, experts in enumerate(layers):
            if experts is None:
                continue
            k = top_k or max(len(experts), 1)
            per_token = [experts[i : i + k] for i in range(0, len(experts), k)] if experts else []
            cells.append((layer, per_token))
        n_tok = max((len(c[1]) for c in cells), default=0)
        tokens = [(0, p if phase == DECODE else i) for i in range(n_tok)]
        passes.append({"phase": phase, "cells": cells, "tokens": tokens})
    return build_trace(meta, passes)
