"""What attention reads in every cell: query tokens, (query, context position) pairs and cached positions.

A cell's tokens are its pass's last `cell_tokens` tokens (the trace's canonical layout,
moesim/traces/format/trace.py: all of them, or the final prompt token where llama.cpp prunes the last
layer). A query at position `pos` attends to min(pos + 1, window) positions (causal; `window` = 0
means the whole context). Each sequence's KV cache is read once per cell (flash-attention tiles
keep it on chip across that sequence's queries): min(max position + 1, window) positions per
sequence in the cell. New K/V are written once per query token.
"""

from __future__ import annotations

import numpy as np

from moesim.traces.format.trace import Trace


def cell_attention_counts(trace: Trace, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: (query tokens, query-position pairs, cached positions read) for one window size."""
    n_cells = trace.n_cells
    tokens = trace.cell_tokens.astype(np.int64)
    pairs = np.zeros(n_cells)
    reads = np.zeros(n_cells)
    pos = trace.token_position.astype(np.int64)
    req = trace.token_request.astype(np.int64)
    span = pos + 1 if window <= 0 else np.minimum(pos + 1, window)
    cum = np.concatenate(([0], np.cumsum(span, dtype=np.int64)))
    tok_off = trace.pass_token_offsets.astype(np.int64)
    cell_pass = trace.cell_pass().astype(np.int64)
    end = tok_off[cell_pass + 1]
    start = np.maximum(end - tokens, tok_off[cell_pass])
    pairs[:] = cum[end] - cum[start]
    # positions read: per pass (all tokens) once, then fix the cells that hold only a suffix
    pass_reads, _ = _per_pass_sequences(trace, span)
    full = start == tok_off[cell_pass]
    reads[full] = pass_reads[cell_pass[full]]
    part = np.flatnonzero(~full)
    if part.size:
        reads[part] = _reads_of_slices(req, span, start[part], end[part])
    return tokens.astype(np.float64), pairs, reads


def _reads_of_slices(req: np.ndarray, span: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each slice [lo, hi) of tokens: sum over its sequences of their largest span."""
    out = np.zeros(lo.shape[0])
    if req.size == 0:
        return out
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
        if b <= a:
            continue
        r, s = req[a:b], span[a:b]
        if b - a == 1:
            out[i] = s[0]
            continue
        order = np.lexsort((s, r))  # by request, then span: the last of each request holds its max
        r_sorted = r[order]
        last = np.append(r_sorted[1:] != r_sorted[:-1], True)
        out[i] = float(s[order][last].sum())
    return out


def pass_sequences(trace: Trace) -> np.ndarray:
    """Distinct sequences in each pass (the rows that produce logits: one per sequence per pass)."""
    return _per_pass_sequences(trace, np.ones(trace.n_tokens, dtype=np.int64))[1]


def _per_pass_sequences(trace: Trace, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pass: sum over its sequences of their largest span, and the number of sequences."""
    n_p = trace.n_passes
    if trace.n_tokens == 0:
        return np.zeros(n_p), np.zeros(n_p)
    tok_pass = np.repeat(np.arange(n_p, dtype=np.int64), np.diff(trace.pass_token_offsets.astype(np.int64)))
    req = trace.token_request.astype(np.int64)
    key = tok_pass * (int(req.max()) + 1) + req
    order = np.lexsort((span, key))
    k_sorted = key[order]
    last = np.append(k_sorted[1:] != k_sorted[:-1], True)
    passes = tok_pass[order][last]
    reads = np.bincount(passes, weights=span[order][last].astype(np.float64), minlength=n_p)
    return reads, np.bincount(passes, minlength=n_p).astype(np.float64)
