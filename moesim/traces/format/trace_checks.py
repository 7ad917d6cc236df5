"""A Trace's structural invariants: every check `Trace.validate` runs, each naming the first violation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from moesim.errors import UserError
from moesim.limits import BYTES_PER_OBJECT, check_memory
from moesim.traces.format.trace_meta import DECODE, KIND_MOE, KIND_TOL, PREFILL
from moesim.units import MAX_BYTES, show

if TYPE_CHECKING:  # annotations only: trace.py imports this module
    from moesim.traces.format.trace import Trace


def validate_trace(trace: Trace, where: str = "trace") -> None:
    """Check every structural invariant; raise UserError naming the first violation."""
    m = trace.meta
    if m.kind not in (KIND_MOE, KIND_TOL):
        raise UserError(f"metadata: kind {show(m.kind)} is not {KIND_MOE!r} or {KIND_TOL!r}", where)
    if m.n_layers <= 0 or m.n_experts <= 0:
        raise UserError(f"n_layers and n_experts must be positive (got {m.n_layers}, {m.n_experts})", where)
    if len(m.object_bytes) != m.n_layers:
        raise UserError(f"object_bytes has {len(m.object_bytes)} entries for {m.n_layers} layers", where)
    if any(int(b) <= 0 for b in m.object_bytes):
        raise UserError("object_bytes must be positive for every layer", where)
    if any(int(b) > MAX_BYTES for b in m.object_bytes):
        raise UserError("object_bytes: an expert of more than 1 EiB is not a real size", where)
    if m.dense_bytes is not None and any(not 0 <= int(b) <= MAX_BYTES for b in m.dense_bytes):
        raise UserError("dense_bytes must be between 0 and 1 EiB for every layer", where)
    check_memory(m.n_layers * m.n_experts * BYTES_PER_OBJECT,
                 f"n_layers x n_experts = {m.n_layers:,} x {m.n_experts:,} objects", where)
    if m.top_k is not None and m.top_k <= 0:
        raise UserError(f"top_k must be positive (got {m.top_k})", where)
    n_p, n_c, n_a = trace.n_passes, trace.n_cells, trace.n_accesses
    _check_offsets(trace.pass_cell_offsets, n_p, n_c, "pass_cell_offsets", where)
    _check_offsets(trace.pass_token_offsets, n_p, trace.n_tokens, "pass_token_offsets", where)
    _check_offsets(trace.cell_offsets, n_c, n_a, "cell_offsets", where)
    if trace.token_position.shape[0] != trace.n_tokens:
        raise UserError("token_position and token_request differ in length", where)
    if trace.cell_tokens.shape[0] != n_c:
        raise UserError("cell_tokens must have one entry per cell", where)
    _check_cell_tokens(trace, where)
    if n_p and not np.isin(trace.pass_phase, (PREFILL, DECODE)).all():
        bad = int(np.flatnonzero(~np.isin(trace.pass_phase, (PREFILL, DECODE)))[0])
        raise UserError(f"pass {bad}: phase must be 0 (prefill) or 1 (decode)", where)
    if n_c:
        bad_layer = np.flatnonzero((trace.cell_layer < 0) | (trace.cell_layer >= m.n_layers))
        if bad_layer.size:
            c = int(bad_layer[0])
            raise UserError(f"cell {c}: layer {int(trace.cell_layer[c])} outside 0..{m.n_layers - 1}", where)
    if n_a:
        i = _first_where(trace.expert, lambda e: (e < 0) | (e >= m.n_experts))
        if i is not None:
            raise UserError(f"access {i}: expert id {int(trace.expert[i])} outside 0..{m.n_experts - 1}", where)
    if trace.weight is not None and trace.weight.shape[0] != n_a:
        raise UserError("weight must have one entry per access", where)
    if trace.weight is not None and n_a:
        i = _first_where(trace.weight, lambda w: ~(w >= 0))  # negative or NaN: a gate weight is a probability
        if i is not None:
            raise UserError(f"access {i}: gate weight {float(trace.weight[i])} is negative or not a number", where)
    for name, arr in trace.annotations.items():
        if arr.shape[0] != n_a:
            raise UserError(f"annotation {name!r} must have one entry per access", where)
    for name, arr in trace.predictions.items():
        if arr.ndim != 2 or arr.shape[0] != n_c:
            raise UserError(f"prediction {name!r} must be a [cells, n] array", where)
    if m.top_k is not None and n_c:
        expected = trace.cell_tokens.astype(np.int64) * m.top_k
        sizes = np.diff(trace.cell_offsets)
        bad = np.flatnonzero(sizes != expected)
        if bad.size:
            c = int(bad[0])
            raise UserError(
                f"cell {c} (pass {int(trace.cell_pass()[c])}, layer {int(trace.cell_layer[c])}): "
                f"{int(sizes[c])} accesses for {int(trace.cell_tokens[c])} tokens at top-{m.top_k}",
                where,
            )
        _check_no_duplicate_experts(trace, where)
    if trace.access_token is not None:
        _check_access_token(trace, where)


def _check_cell_tokens(trace: Trace, where: str) -> None:
    """A cell counts between 0 and its pass's tokens; a cell with accesses has at least one token."""
    if not trace.n_cells:
        return
    pass_tokens = np.diff(trace.pass_token_offsets)[trace.cell_pass()]
    sizes = np.diff(trace.cell_offsets)
    bad = np.flatnonzero((trace.cell_tokens < 0) | (trace.cell_tokens > pass_tokens)
                         | ((sizes > 0) & (trace.cell_tokens == 0)))
    if bad.size:
        c = int(bad[0])
        raise UserError(
            f"cell {c} (layer {int(trace.cell_layer[c])}): {int(trace.cell_tokens[c])} tokens with "
            f"{int(sizes[c])} accesses in a pass of {int(pass_tokens[c])} tokens",
            where,
        )


def _check_access_token(trace: Trace, where: str) -> None:
    """Each token of a cell is one contiguous run of accesses; runs count cell_tokens; ids fit the pass."""
    tok = np.asarray(trace.access_token)
    n_a = trace.n_accesses
    if tok.shape != (n_a,):
        raise UserError("access_token must have one entry per access", where)
    if not n_a:
        return
    if not np.issubdtype(tok.dtype, np.integer):
        raise UserError("access_token must be integers", where)
    cell = trace.access_cell()
    limit = np.diff(trace.pass_token_offsets)[trace.cell_pass()][cell]
    bad = np.flatnonzero((tok < 0) | (tok >= limit))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"access {i}: token {int(tok[i])} outside its pass's 0..{int(limit[i]) - 1}", where)
    starts = np.ones(n_a, dtype=bool)
    starts[1:] = (cell[1:] != cell[:-1]) | (tok[1:] != tok[:-1])
    runs = np.bincount(cell[starts], minlength=trace.n_cells)
    keys = cell[starts].astype(np.int64) * (int(limit.max()) + 1) + tok[starts]
    if np.unique(keys).size != keys.size:
        order = np.argsort(keys, kind="stable")
        dup = order[1:][keys[order][1:] == keys[order][:-1]][0]
        c = int(cell[starts][dup])
        raise UserError(f"cell {c}: the accesses of token {int(tok[starts][dup])} are not contiguous", where)
    bad_cell = np.flatnonzero(runs != trace.cell_tokens)
    if bad_cell.size:
        c = int(bad_cell[0])
        raise UserError(f"cell {c}: access_token names {int(runs[c])} tokens, cell_tokens says "
                        f"{int(trace.cell_tokens[c])}", where)
    k = trace.meta.top_k
    if k:
        lengths = np.diff(np.append(np.flatnonzero(starts), n_a))
        bad = np.flatnonzero(lengths != k)
        if bad.size:
            c = int(cell[np.flatnonzero(starts)[bad[0]]])
            raise UserError(f"cell {c}: a token has {int(lengths[bad[0]])} accesses at top-{k}", where)


def _check_offsets(offsets: np.ndarray, n: int, total: int, name: str, where: str) -> None:
    if offsets.shape[0] != n + 1:
        raise UserError(f"{name} must have {n + 1} entries, has {offsets.shape[0]}", where)
    if offsets[0] != 0 or offsets[-1] != total:
        raise UserError(f"{name} must run from 0 to {total}", where)
    if n and np.any(np.diff(offsets) < 0):
        raise UserError(f"{name} must be non-decreasing", where)


# Per-access checks run this many entries at a time: their temporaries (a sorted copy, masks) stay a
# few MB instead of several bytes per access (3 B/access at 60 M accesses was 180 MB at peak).
_CHECK_BLOCK = 1 << 22


def _first_where(values: np.ndarray, test: Callable[[np.ndarray], np.ndarray], block: int | None = None) -> int | None:
    """The first index along axis 0 where `test` (vectorised over a block of rows) is true, or None."""
    block = max(int(_CHECK_BLOCK if block is None else block), 1)
    for start in range(0, values.shape[0], block):
        hit = np.flatnonzero(test(values[start:start + block]))
        if hit.size:
            return start + int(hit[0])
    return None


def _check_no_duplicate_experts(trace: Trace, where: str) -> None:
    """With a fixed top-k, a token routes to k distinct experts."""
    k = trace.meta.top_k
    if not k or k == 1 or trace.n_accesses == 0:
        return
    groups = trace.expert.reshape(-1, k)

    def repeats(block: np.ndarray) -> np.ndarray:
        ordered = np.sort(block, axis=1)
        return (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    first = _first_where(groups, repeats, block=_CHECK_BLOCK // k)
    if first is not None:
        g = first
        ordered = np.sort(groups[g:g + 1], axis=1)
        access = g * k
        cell = int(np.searchsorted(trace.cell_offsets, access, side="right") - 1)
        raise UserError(
            f"cell {cell} (layer {int(trace.cell_layer[cell])}): a token routes to expert "
            f"{int(groups[g][np.argmax(ordered[0, 1:] == ordered[0, :-1])])} twice",
            where,
        )
