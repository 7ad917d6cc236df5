"""MoE-Infinity expert activation matrices (EAM): `[sequences, layers, experts]` counts (.npy).

MoE-Infinity's tracer (moe_infinity/memory/expert_tracer.py) adds, for every sequence, how many of
its tokens each expert served at each layer, and stores the collection as one array (`load_trace`
reads it back). All-zero sequences are unused slots of that collection and are skipped.

This is lossy, and the trace says so (meta.extra["lossy"]): the matrix keeps counts only, so
- each sequence becomes one prefill-like pass whose cell at layer l carries exactly the counts of
  row l (tokens = count sum / top_k, which is why top_k must be given);
- which token routed to which experts is not recorded: experts are dealt to tokens round-robin,
  which gives every token top_k distinct experts and every expert its count, and nothing more;
- the order of tokens and decode steps is gone, so reuse across steps cannot be replayed from it.
Counts suit frequency statistics and prefill-like bulk replays, not per-step cache behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.common import object_bytes, provenance, sha256_of
from moesim.traces.importers.npy import load_npy, npy_header
from moesim.traces.importers.options import Options
from moesim.traces.format.trace_meta import PREFILL, TraceMeta, expert_dtype
from moesim.traces.format.trace import Trace

NAME = "moe-infinity"
SUMMARY = "MoE-Infinity expert activation matrices .npy: [sequences, layers, experts] counts (float .npy files)"
OPTIONS = {
    "top_k": "experts per token (required: the counts do not say)",
    "expert_bytes": "bytes per expert: one size or one per layer (e.g. '3 MiB'); default from the catalog entry of "
                    "--option model, else unknown",
    "model": "model name to record (a catalog name such as qwen3-30b-a3b also gives the expert size)",
}
MAX_ACCESSES = 1 << 28
LOSSY_NOTE = ("MoE-Infinity counts: one prefill-like pass per sequence, experts dealt to tokens round-robin; "
              "per-token expert sets and token/step order are not in the source")


def sniff(path: Path) -> bool:
    header = npy_header(path)
    return header is not None and len(header[0]) == 3 and np.issubdtype(header[1], np.floating)


def load(path: Path, options: Options) -> Trace:
    where = str(path)
    counts = load_npy(path, 3)
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise UserError(f"counts must be numbers, got dtype {counts.dtype}", where)
    top_k = options.int("top_k", minimum=1)
    if top_k is None:
        raise UserError("MoE-Infinity matrices do not say how many experts each token used; "
                        "pass --option top_k=N", where)
    n_seq, n_layers, n_experts = counts.shape
    if n_layers == 0 or n_experts == 0 or n_layers > np.iinfo(np.int16).max or top_k > n_experts:
        raise UserError(f"shape {counts.shape} at top-{top_k} is out of range", where)
    values = counts.astype(np.float64)
    bad = np.argwhere(~np.isfinite(values) | (values < 0) | (values != np.round(values)) | (values > 2**31 - 1))
    if bad.size:
        s, layer, e = (int(v) for v in bad[0])
        raise UserError(f"count {float(counts[s, layer, e])!r} is not a non-negative integer",
                        f"{where}: sequence {s}, layer {layer}, expert {e}")
    c = values.astype(np.int64)
    sums = c.sum(axis=2)
    uneven = np.argwhere(sums % top_k != 0)
    if uneven.size:
        s, layer = (int(v) for v in uneven[0])
        raise UserError(f"{int(sums[s, layer])} routed experts is not a multiple of top-{top_k}",
                        f"{where}: sequence {s}, layer {layer}")
    tokens = sums // top_k
    over = np.argwhere(c > tokens[:, :, None])
    if over.size:
        s, layer, e = (int(v) for v in over[0])
        raise UserError(f"expert {e} served {int(c[s, layer, e])} tokens of only {int(tokens[s, layer])}",
                        f"{where}: sequence {s}, layer {layer}")
    if int(sums.sum()) > MAX_ACCESSES:
        raise UserError(f"{int(sums.sum())} routed experts in all is more than moesim imports "
                        f"({MAX_ACCESSES}); split the file", where)
    kept = np.flatnonzero(sums.sum(axis=1) > 0)
    if kept.size == 0:
        raise UserError("every sequence is all zeros", where)
    extra: dict[str, Any] = {"lossy": LOSSY_NOTE, "skipped_empty_sequences": int(n_seq - kept.size)}
    sizes, size_note = object_bytes(options, options.text("model"), n_layers, n_experts, extra)
    meta = TraceMeta(
        n_layers=n_layers,
        n_experts=n_experts,
        top_k=top_k,
        object_bytes=sizes,
        model=options.text("model"),
        provenance=provenance("MoE-Infinity expert activation matrix", path, sha256_of([path]),
                              object_bytes_from=size_note),
        extra=extra,
    )
    trace = _build(c, tokens, kept, meta)
    trace.validate(where)
    return trace


def _build(c: np.ndarray, tokens: np.ndarray, kept: np.ndarray, meta: TraceMeta) -> Trace:
    """One pass per kept sequence; one cell per layer with any count; round-robin token assignment."""
    experts: list[np.ndarray] = []
    cell_layer: list[int] = []
    cell_tokens: list[int] = []
    cell_sizes: list[int] = []
    pass_cells: list[int] = []
    pass_tokens: list[int] = []
    for s in kept:
        n_cells = 0
        for layer in np.flatnonzero(tokens[s] > 0):
            t = int(tokens[s, layer])
            items = np.repeat(np.arange(c.shape[2]), c[s, layer])  # sorted by expert id
            dealt = items[np.argsort(np.arange(items.size) % t, kind="stable")]  # token j gets items j, j+t, ...
            experts.append(dealt)
            cell_layer.append(int(layer))
            cell_tokens.append(t)
            cell_sizes.append(items.size)
            n_cells += 1
        pass_cells.append(n_cells)
        pass_tokens.append(int(tokens[s].max()))
    n_passes = kept.size
    return Trace(
        meta=meta,
        pass_phase=np.full(n_passes, PREFILL, dtype=np.int8),
        pass_cell_offsets=np.concatenate([[0], np.cumsum(pass_cells)]).astype(np.int64),
        pass_token_offsets=np.concatenate([[0], np.cumsum(pass_tokens)]).astype(np.int64),
        token_request=np.repeat(kept, pass_tokens).astype(np.int32),
        token_position=np.concatenate([np.arange(n) for n in pass_tokens]).astype(np.int32),
        cell_layer=np.asarray(cell_layer, dtype=np.int16),
        cell_offsets=np.concatenate([[0], np.cumsum(cell_sizes)]).astype(np.int64),
        cell_tokens=np.asarray(cell_tokens, dtype=np.int32),
        expert=np.concatenate(experts).astype(expert_dtype(meta.n_experts)),
    )


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    from moesim.traces.importers.npy import npy_bytes

    counts = np.zeros((2, 2, 4), dtype=np.float32)
    counts[0, 0] = [1, 1, 0, 0]
    counts[1, 1] = [0, 2, 1, 1]
    return [Example.file("npy", "t.npy", npy_bytes(counts), top_k=2)]
