"""A Trace as moesim Parquet rows (docs/trace-format.md), built a few passes at a time.

Why in pieces: laying out rows takes a dozen full-width index arrays (int64 mostly); built for
the whole trace at once they peaked at ~145 bytes per access, forty times the trace. Pieces of
whole passes bound that to a piece's rows. The pieces are regrouped into tables of exactly
ROW_GROUP_SIZE rows, one per row group, so the file's bytes are those of writing one table.

Row order: pass by pass; inside a pass, the pass row (a pass with nothing), the rows of tokens
no access names, then its cells in order (an empty cell is one row), each cell token by token.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from moesim.errors import UserError
from moesim.traces.format.parquet_layout import (ANNOTATION_PREFIX, FORMAT_VERSION, INT32_MAX, METADATA_KEY,
                                         PREDICTION_PREFIX)
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import expert_dtype

# About this many rows per piece (a longer pass makes a longer piece). Building a piece's rows
# takes ~150 bytes per row; 64 Ki rows keep that near 10 MB and were as fast as larger pieces.
PIECE_ROWS = 1 << 16


def file_metadata(trace: Trace) -> dict[bytes, bytes]:
    """The Parquet key-value metadata: format version, TraceMeta, prediction widths (sorted JSON)."""
    widths = {name: int(np.asarray(trace.predictions[name]).shape[1]) for name in sorted(trace.predictions)}
    data = {"format_version": FORMAT_VERSION, "meta": trace.meta.to_dict(), "prediction_widths": widths}
    return {METADATA_KEY: json.dumps(data, sort_keys=True).encode()}


def row_pieces(trace: Trace, where: str = "trace", piece_rows: int | None = None) -> Iterator[pa.Table]:
    """The trace's rows as consecutive tables of whole passes, about `piece_rows` (default
    PIECE_ROWS) rows each: at least one table, an empty one for an empty trace."""
    check_storable(trace, where)
    bounds = _piece_bounds(trace, piece_rows or PIECE_ROWS)
    for p0, p1 in zip(bounds[:-1], bounds[1:]):
        yield _rows(_passes(trace, int(p0), int(p1)), int(p0))


def fixed_size_tables(pieces: Iterable[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Regroup tables into contiguous tables of exactly `rows` rows, the last one shorter.

    Yields at least one table (an empty one for no rows), as writing one table would. Each table
    is made contiguous (one chunk per column, a copy of at most `rows` rows) because the Parquet
    writer may start pages where a column's chunks start; contiguous row groups give the bytes of
    slicing one big table, whatever the pieces were.
    """
    held: list[pa.Table] = []
    held_rows = 0
    emitted = False
    for piece in pieces:
        held.append(piece)
        held_rows += piece.num_rows
        while held_rows >= rows:
            merged = pa.concat_tables(held)
            yield merged.slice(0, rows).combine_chunks()
            emitted = True
            held, held_rows = [merged.slice(rows)], held_rows - rows
    if held_rows or not emitted:
        yield pa.concat_tables(held).combine_chunks()


def check_storable(trace: Trace, where: str) -> None:
    """What the row layout cannot store, checked on the whole trace before any row is built."""
    if trace.access_token is None and not _splits_evenly(trace):
        raise UserError("a cell's accesses do not split evenly over its tokens; set Trace.access_token "
                        "to say which token each access belongs to", where)
    cell_pass = trace.cell_pass().astype(np.int64)
    same = np.flatnonzero((cell_pass[1:] == cell_pass[:-1]) & (trace.cell_layer[1:] == trace.cell_layer[:-1]))
    if same.size:
        c = int(same[0]) + 1
        raise UserError(f"cells {c - 1} and {c} of pass {int(cell_pass[c])} are both layer "
                        f"{int(trace.cell_layer[c])}; one pass's consecutive cells must differ in layer", where)


def _splits_evenly(trace: Trace) -> bool:
    """Every cell's accesses split evenly over its tokens: Trace.canonical_access_tokens' condition,
    on the cells alone (that method builds the per-access tokens, which the pieces do later)."""
    sizes = np.diff(trace.cell_offsets).astype(np.int64)
    tokens = trace.cell_tokens.astype(np.int64)
    ok = np.where(tokens > 0, (sizes > 0) & (sizes % np.maximum(tokens, 1) == 0), sizes == 0)
    return bool(ok.all())


def _piece_bounds(trace: Trace, piece_rows: int) -> np.ndarray:
    """Pass indices that cut the trace into pieces of about `piece_rows` rows, never inside a pass."""
    n_p = trace.n_passes
    if n_p == 0:
        return np.zeros(2, dtype=np.int64)  # one empty piece: the table of an empty trace
    # rows before each pass, bounded above: accesses + cells + tokens + one pass row each
    before = (np.asarray(trace.cell_offsets, np.int64)[trace.pass_cell_offsets] + trace.pass_cell_offsets
              + trace.pass_token_offsets + np.arange(n_p + 1))
    cuts = np.searchsorted(before, np.arange(piece_rows, int(before[-1]), piece_rows), side="right") - 1
    return np.unique(np.concatenate([[0], cuts, [n_p]]))


def _passes(trace: Trace, p0: int, p1: int) -> Trace:
    """Passes p0..p1-1 of `trace` as a trace of their own (views where possible, offsets rebased)."""
    c0, c1 = int(trace.pass_cell_offsets[p0]), int(trace.pass_cell_offsets[p1])
    t0, t1 = int(trace.pass_token_offsets[p0]), int(trace.pass_token_offsets[p1])
    a0, a1 = int(trace.cell_offsets[c0]), int(trace.cell_offsets[c1])
    return Trace(
        meta=trace.meta,
        pass_phase=trace.pass_phase[p0:p1],
        pass_cell_offsets=trace.pass_cell_offsets[p0:p1 + 1] - c0,
        pass_token_offsets=trace.pass_token_offsets[p0:p1 + 1] - t0,
        token_request=trace.token_request[t0:t1],
        token_position=trace.token_position[t0:t1],
        cell_layer=trace.cell_layer[c0:c1],
        cell_offsets=trace.cell_offsets[c0:c1 + 1] - a0,
        cell_tokens=trace.cell_tokens[c0:c1],
        expert=trace.expert[a0:a1],
        weight=None if trace.weight is None else trace.weight[a0:a1],
        annotations={name: np.asarray(values)[a0:a1] for name, values in trace.annotations.items()},
        predictions={name: np.asarray(values)[c0:c1] for name, values in trace.predictions.items()},
        access_token=None if trace.access_token is None else trace.access_token[a0:a1],
    )


def _rows(trace: Trace, first_pass: int) -> pa.Table:
    """The rows of `trace` (a piece of whole passes, the first of them numbered `first_pass`)."""
    tokens = trace.canonical_access_tokens() if trace.access_token is None else trace.access_token
    if tokens is None:  # check_storable rules this out for the whole trace
        raise UserError("a cell's accesses do not split evenly over its tokens")
    n_a, n_c, n_p = trace.n_accesses, trace.n_cells, trace.n_passes
    cell_pass = trace.cell_pass().astype(np.int64)
    access_cell = trace.access_cell().astype(np.int64)
    access_pass = cell_pass[access_cell]
    access_global_token = trace.pass_token_offsets[:-1][access_pass] + tokens.astype(np.int64)

    # structural rows: tokens no access names, cells without accesses, passes with nothing at all
    token_pass = np.repeat(np.arange(n_p, dtype=np.int64), np.diff(trace.pass_token_offsets))
    named = np.zeros(trace.n_tokens, dtype=bool)
    named[access_global_token] = True
    lone_tokens = np.flatnonzero(~named)
    empty_cells = np.flatnonzero(np.diff(trace.cell_offsets) == 0)
    bare_passes = np.flatnonzero((np.diff(trace.pass_cell_offsets) == 0) & (np.diff(trace.pass_token_offsets) == 0))

    # row order: by pass; then the pass row, the lone token rows, the cells' rows in order
    n_rows = n_a + lone_tokens.size + empty_cells.size + bare_passes.size
    row_pass = np.concatenate([bare_passes, token_pass[lone_tokens], cell_pass[empty_cells], access_pass])
    section = np.concatenate([np.zeros(bare_passes.size), np.ones(lone_tokens.size),
                              np.full(empty_cells.size + n_a, 2)]).astype(np.int64)
    within = np.concatenate([np.zeros(bare_passes.size, np.int64), lone_tokens.astype(np.int64),
                             np.asarray(trace.cell_offsets[empty_cells], np.int64) * 2,
                             np.arange(n_a, dtype=np.int64) * 2 + 1])
    # an empty cell sorts before the accesses of the next cell (same offset, *2 vs *2+1)
    order = np.lexsort((within, section, row_pass))
    kind = np.concatenate([np.zeros(bare_passes.size, np.int8), np.ones(lone_tokens.size, np.int8),
                           np.full(empty_cells.size, 2, np.int8), np.full(n_a, 3, np.int8)])[order]
    row_pass = row_pass[order]
    source = np.concatenate([np.zeros(bare_passes.size, np.int64), lone_tokens.astype(np.int64),
                             empty_cells.astype(np.int64), np.arange(n_a, dtype=np.int64)])[order]

    is_access, is_token, is_cell = kind == 3, kind == 1, kind == 2
    acc_idx = source[is_access]
    global_token = np.zeros(n_rows, dtype=np.int64)
    global_token[is_access] = access_global_token[acc_idx]
    global_token[is_token] = source[is_token]
    has_token = is_access | is_token
    cell_of_row = np.zeros(n_rows, dtype=np.int64)
    cell_of_row[is_access] = access_cell[acc_idx]
    cell_of_row[is_cell] = source[is_cell]
    has_layer = is_access | is_cell

    def masked(values: np.ndarray, valid: np.ndarray, dtype: pa.DataType) -> pa.Array:
        return pa.array(values, type=dtype, mask=~valid)

    def gather(table: np.ndarray, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.zeros(n_rows, dtype=table.dtype)
        out[valid] = table[index[valid]]
        return out

    token_index = global_token - trace.pass_token_offsets[:-1][row_pass]
    expert_values = np.zeros(n_rows, dtype=expert_dtype(trace.meta.n_experts))
    expert_values[is_access] = trace.expert[acc_idx]
    columns: dict[str, pa.Array] = {
        "pass": pa.array((row_pass + first_pass).astype(np.int32), type=pa.int32()),
        "phase": pa.array(trace.pass_phase[row_pass].astype(np.int8), type=pa.int8()),
        "request": masked(gather(trace.token_request, global_token, has_token), has_token, pa.int32()),
        "position": masked(gather(trace.token_position, global_token, has_token), has_token, pa.int32()),
        "token": masked(np.where(has_token, token_index, 0).astype(np.int32), has_token, pa.int32()),
        "layer": masked(gather(trace.cell_layer, cell_of_row, has_layer).astype(np.int16), has_layer, pa.int16()),
        "expert": masked(expert_values, is_access, pa.from_numpy_dtype(expert_dtype(trace.meta.n_experts))),
    }
    weights = np.zeros(n_rows, dtype=np.float32)
    if trace.weight is not None:
        weights[is_access] = trace.weight[acc_idx].astype(np.float32)
    columns["weight"] = masked(weights, is_access if trace.weight is not None else np.zeros(n_rows, bool),
                               pa.float32())
    for name in sorted(trace.annotations):
        values = np.asarray(trace.annotations[name])
        full = np.zeros(n_rows, dtype=values.dtype)
        full[is_access] = values[acc_idx]
        columns[ANNOTATION_PREFIX + name] = masked(full, is_access, pa.from_numpy_dtype(values.dtype))
    first_row_of_cell = np.zeros(n_c, dtype=np.int64)
    if n_rows:
        rows_with_cell = np.flatnonzero(has_layer)
        cells_here = cell_of_row[rows_with_cell]
        starts = np.ones(rows_with_cell.size, dtype=bool)
        starts[1:] = cells_here[1:] != cells_here[:-1]
        first_row_of_cell[cells_here[starts]] = rows_with_cell[starts]
    for name in sorted(trace.predictions):
        columns[PREDICTION_PREFIX + name] = _prediction_column(np.asarray(trace.predictions[name]),
                                                               first_row_of_cell, n_rows)
    return pa.table(columns)


def _prediction_column(pred: np.ndarray, first_row_of_cell: np.ndarray, n_rows: int) -> pa.Array:
    """A list column holding cell c's prediction on its first row and null elsewhere.

    Cells' first rows ascend with the cell index, so the list values are `pred` in row-major order.
    """
    width = pred.shape[1]
    lengths = np.zeros(n_rows, dtype=np.int64)
    lengths[first_row_of_cell] = width
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    present = np.zeros(n_rows, dtype=bool)
    present[first_row_of_cell] = True
    offset_type = pa.int32() if offsets[-1] <= INT32_MAX else pa.int64()
    list_type = pa.ListArray if offset_type == pa.int32() else pa.LargeListArray
    values = pa.array(np.ascontiguousarray(pred).reshape(-1))
    column = list_type.from_arrays(pa.array(offsets, type=offset_type), values, mask=pa.array(~present))
    return column.cast(pa.list_(column.type.value_type)) if list_type is pa.LargeListArray else column
