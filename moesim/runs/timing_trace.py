"""A timing-only trace from a run's own per-step measurements, for runs recorded without routing.

What it keeps: the model's layer sizes (from a trace of the same model, `like`), k, the prompt
length, and per decode step the number of misses (k x L minus the step's hits, differenced from the
cumulative hit %; every routed expert when the run had no cache) split over the layers so that the
bytes they read, with the O_DIRECT padding rule, come closest to the step's measured read_bytes.
What it invents: which experts. Hits re-use experts the same layer ran one step earlier (resident
in any LRU cache that holds one step's experts, k x L objects); misses are experts never seen
before (ids past the model's own), so they miss in any cache. The prefill routes its tokens over P/L
experts per layer, P = the prefill lookups (moesim/runs/hits.py). Replayed with LRU at the run's
budget it reproduces the intended misses step by step (tests/runs/test_timing_trace.py); routing
statistics of such a trace mean nothing, and check-run says so.
"""

from __future__ import annotations

import copy

import numpy as np

from moesim.errors import UserError
from moesim.runs.padding import expected_read_bytes
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.trace import Trace
from moesim.traces.format.build import build_trace


def misses_by_layer(n_miss: int, read_bytes: float | None, layer_bytes: np.ndarray, k: int, slices: int) -> np.ndarray:
    """Split a step's misses over layers (at most k each) so their padded bytes come closest to read_bytes."""
    n_layers = layer_bytes.size
    n_miss = int(min(max(n_miss, 0), k * n_layers))
    padded = expected_read_bytes(layer_bytes, slices).astype(np.float64)
    order = np.argsort(-padded, kind="stable")  # largest layers first
    sizes = np.unique(padded)
    out = np.zeros(n_layers, dtype=np.int64)
    if sizes.size >= 2 and read_bytes is not None and np.isfinite(read_bytes):
        big, small = sizes[-1], sizes[0]
        n_big_layers = int((padded == big).sum())
        n_big = int(round((read_bytes - n_miss * small) / (big - small)))
        n_big = min(max(n_big, n_miss - k * (n_layers - n_big_layers)), k * n_big_layers, n_miss)
        n_big = max(n_big, 0)
        for cls_size, count in ((big, n_big), (small, n_miss - n_big)):
            layers = np.flatnonzero(padded == cls_size) if cls_size == big else np.flatnonzero(padded != big)
            _spread(out, layers, count, k)
        return out
    _spread(out, order, n_miss, k)
    return out


def _spread(out: np.ndarray, layers: np.ndarray, count: int, k: int) -> None:
    """Round-robin `count` misses over `layers`, at most k per layer."""
    if layers.size == 0:
        return
    per = count // layers.size
    rest = count - per * layers.size
    out[layers] += min(per, k)
    out[layers[:rest]] += 1
    np.minimum(out, k, out=out)


def timing_trace(like: Trace, k: int, n_prompt: int, prefill_lookups: int, misses: np.ndarray,
                 read_bytes: np.ndarray | None, slices: int, name: str) -> Trace:
    n_layers = like.meta.n_layers
    layer_bytes = np.asarray(like.meta.object_bytes, dtype=np.int64)
    n_steps = int(misses.size)
    per_layer_prefill = np.full(n_layers, max(prefill_lookups // max(n_layers, 1), 0))
    per_layer_prefill[: prefill_lookups - int(per_layer_prefill.sum())] += 1
    per_layer_prefill = np.maximum(per_layer_prefill, k)
    next_id = per_layer_prefill.copy()
    passes = []
    cells = []
    last: list[list[int]] = []
    for layer in range(n_layers):
        ids = list(range(int(per_layer_prefill[layer])))
        rows = [[ids[(t * k + j) % len(ids)] for j in range(k)] for t in range(n_prompt)]
        rows = [list(dict.fromkeys(r)) if len(set(r)) == k else ids[:k] for r in rows]
        cells.append((layer, rows))
        last.append(ids[-k:])
    passes.append({"phase": PREFILL, "cells": cells, "tokens": [(0, i) for i in range(n_prompt)]})
    for t in range(n_steps):
        if t == 0:  # the prefill ran layer by layer: its last layers' experts are the ones still resident
            split = np.minimum(np.maximum(int(misses[t]) - k * np.arange(n_layers), 0), k)
        else:
            split = misses_by_layer(int(misses[t]), None if read_bytes is None else float(read_bytes[t]), layer_bytes,
                                    k, slices)
        cells = []
        for layer in range(n_layers):
            m = int(split[layer])
            fresh = list(range(int(next_id[layer]), int(next_id[layer]) + m))
            next_id[layer] += m
            row = last[layer][: k - m] + fresh
            cells.append((layer, [row]))
            last[layer] = row
        passes.append({"phase": DECODE, "cells": cells, "tokens": [(0, n_prompt + t)]})
    meta = copy.deepcopy(like.meta)
    meta.n_experts = int(max(next_id.max(), like.meta.n_experts))
    if meta.n_experts > np.iinfo(np.int16).max:
        raise UserError("too many misses for a timing-only trace", name)
    meta.top_k = k
    meta.provenance = {"kind": "timing-only trace from measured per-step misses and bytes", "run": name,
                       "layer sizes from": like.meta.model or "reference trace"}
    meta.extra = {}
    return build_trace(meta, passes)
