"""The moesim trace file: one Parquet row per routed access (docs/trace-format.md, format_version 1).

Columns, in this order:
    pass int32, phase int8, request int32, position int32, token int32, layer int16,
    expert int16 (int32 past 32767 experts), weight float32 (null when the trace has no weights),
    ann_<name> (one per annotation, its own type), pred_<name> list<...> (one per prediction).
The trace's TraceMeta and the format version live in the file's key-value metadata under "moesim".

Rows come in execution order: pass by pass; inside a pass, its cells in order; inside a cell, its
accesses token by token. Structure that has no access to carry it gets one row whose `expert` is
null: a pass with neither tokens nor cells (layer and token null), a pass token no access names
(layer null, token set: it carries the token's request and position), a cell with no tokens
(token null, layer set). A prediction is stored on the first row of its cell.

Writing is deterministic (fixed column order, sorted JSON, no timestamps), so saving what was
loaded gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moesim.atomic_io import atomic_path
from moesim.errors import UserError
from moesim.traces.grouping import first_repeat_in_groups
from moesim.traces.trace import Trace, TraceMeta, expert_dtype

FORMAT_VERSION = 1
METADATA_KEY = b"moesim"
BASE_COLUMNS = ("pass", "phase", "request", "position", "token", "layer", "expert", "weight")
ANNOTATION_PREFIX = "ann_"
PREDICTION_PREFIX = "pred_"
ROW_GROUP_SIZE = 1 << 20
INT32_MAX = int(np.iinfo(np.int32).max)


# ---- writing ---------------------------------------------------------------------------------


def write_trace(trace: Trace, path: str | Path) -> None:
    """Validate `trace` and write it to `path` atomically (a failure leaves no file behind)."""
    where = str(path)
    trace.validate(where)
    table = trace_to_table(trace, where)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)


def trace_to_table(trace: Trace, where: str = "trace") -> pa.Table:
    """The Arrow table of `trace` in the documented row layout."""
    tokens = trace.canonical_access_tokens() if trace.access_token is None else trace.access_token
    if tokens is None:
        raise UserError("a cell's accesses do not split evenly over its tokens; set Trace.access_token "
                        "to say which token each access belongs to", where)
    n_a, n_c, n_p = trace.n_accesses, trace.n_cells, trace.n_passes
    cell_pass = trace.cell_pass().astype(np.int64)
    same = np.flatnonzero((cell_pass[1:] == cell_pass[:-1]) & (trace.cell_layer[1:] == trace.cell_layer[:-1]))
    if same.size:
        c = int(same[0]) + 1
        raise UserError(f"cells {c - 1} and {c} of pass {int(cell_pass[c])} are both layer "
                        f"{int(trace.cell_layer[c])}; one pass's consecutive cells must differ in layer", where)
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
        "pass": pa.array(row_pass.astype(np.int32), type=pa.int32()),
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
    widths: dict[str, int] = {}
    for name in sorted(trace.predictions):
        pred = np.asarray(trace.predictions[name])
        widths[name] = int(pred.shape[1])
        columns[PREDICTION_PREFIX + name] = _prediction_column(pred, first_row_of_cell, n_rows)
    metadata = {
        "format_version": FORMAT_VERSION,
        "meta": trace.meta.to_dict(),
        "prediction_widths": widths,
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})


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


# ---- reading ---------------------------------------------------------------------------------

_ARROW_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError, EOFError)


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The decoded "moesim" metadata of a Parquet file, or None if the file has none."""
    where = str(path)
    try:
        schema = pq.read_schema(path)
    except _ARROW_ERRORS as exc:
        raise UserError(f"not a readable Parquet file ({_first_line(exc)})", where) from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UserError("the 'moesim' metadata is not valid JSON", where) from None
    if not isinstance(data, dict):
        raise UserError("the 'moesim' metadata must be a JSON object", where)
    return data


def read_trace(path: str | Path) -> Trace:
    """Load a moesim Parquet trace; every problem is a UserError naming the file and row."""
    path = Path(path)
    where = str(path)
    data = read_metadata(path)
    if data is None:
        raise UserError("not a moesim trace: the Parquet metadata has no 'moesim' key "
                        "(to import another tool's Parquet use --format generic)", where)
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"metadata field 'format_version' must be a positive integer, got {version!r}", where)
    if version > FORMAT_VERSION:
        raise UserError(f"written by a newer moesim (format_version {version}); this one reads up to "
                        f"{FORMAT_VERSION}", where)
    meta = _meta_from(data.get("meta"), where)
    widths = data.get("prediction_widths") or {}
    if not isinstance(widths, dict):
        raise UserError("metadata field 'prediction_widths' must be an object", where)
    try:
        table = pq.read_table(path)
    except _ARROW_ERRORS as exc:
        raise UserError(f"cannot read the Parquet data ({_first_line(exc)})", where) from None
    return _table_to_trace(table, meta, widths, where)


def _meta_from(raw: Any, where: str) -> TraceMeta:
    if not isinstance(raw, dict):
        raise UserError("metadata field 'meta' must be an object", where)
    try:
        meta = TraceMeta.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"metadata field 'meta' is incomplete or malformed ({_first_line(exc)})", where) from None
    if meta.layer_ids is not None and (not isinstance(meta.layer_ids, list)
                                       or not all(isinstance(i, int) for i in meta.layer_ids)):
        raise UserError("metadata field 'meta.layer_ids' must be a list of integers", where)
    if meta.dense_bytes is not None and len(meta.dense_bytes) != meta.n_layers:
        raise UserError("metadata field 'meta.dense_bytes' needs one entry per layer", where)
    if not isinstance(meta.kind, str) or (meta.model is not None and not isinstance(meta.model, str)):
        raise UserError("metadata fields 'meta.kind' and 'meta.model' must be text", where)
    if meta.n_layers > np.iinfo(np.int16).max or meta.n_experts > INT32_MAX:
        raise UserError("metadata: n_layers must fit int16 and n_experts int32", where)
    return meta


class _Columns:
    """Numpy views of the table's columns with their null masks; type errors name the column."""

    def __init__(self, table: pa.Table, where: str) -> None:
        self.table = table
        self.where = where
        self.n = table.num_rows

    def integer(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values with nulls as 0, null mask); signed types up to 32 bits keep their width."""
        col = self._column(name)
        if not (pa.types.is_integer(col.type)):
            raise UserError(f"column '{name}' has type {col.type}; expected integers", self.where)
        null = self._nulls(col)
        values = col.fill_null(0).to_numpy(zero_copy_only=False)
        if values.dtype not in (np.int8, np.int16, np.int32):  # int64 and unsigned: compute in int64
            values = values.astype(np.int64)
        return values, null

    def floating(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        col = self._column(name)
        if not (pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
            raise UserError(f"column '{name}' has type {col.type}; expected floating point", self.where)
        null = self._nulls(col)
        if pa.types.is_null(col.type):
            return np.zeros(self.n, dtype=np.float32), null
        return col.fill_null(0).to_numpy(zero_copy_only=False), null

    def _column(self, name: str) -> pa.Array:
        if name not in self.table.column_names:
            raise UserError(f"missing column '{name}'", self.where)
        return self.table.column(name).combine_chunks()

    def _nulls(self, col: pa.Array) -> np.ndarray:
        return pc.is_null(col).to_numpy(zero_copy_only=False).astype(bool)


def _table_to_trace(table: pa.Table, meta: TraceMeta, widths: dict[str, Any], where: str) -> Trace:
    n = table.num_rows
    cols = _Columns(table, where)
    for name in table.column_names:
        if name not in BASE_COLUMNS and not name.startswith((ANNOTATION_PREFIX, PREDICTION_PREFIX)):
            raise UserError(f"unknown column '{name}' (extra per-access columns must be named "
                            f"'{ANNOTATION_PREFIX}<name>')", where)

    def at(row: int) -> str:
        return f"{where}: row {row}"

    def fail_first(mask: np.ndarray, message) -> None:
        idx = np.flatnonzero(mask)
        if idx.size:
            r = int(idx[0])
            raise UserError(message(r), at(r))

    pass_, pass_null = cols.integer("pass")
    phase, phase_null = cols.integer("phase")
    request, request_null = cols.integer("request")
    position, position_null = cols.integer("position")
    token, token_null = cols.integer("token")
    layer, layer_null = cols.integer("layer")
    expert, expert_null = cols.integer("expert")
    weight, weight_null = cols.floating("weight")

    fail_first(pass_null, lambda r: "field 'pass' is null")
    fail_first(phase_null, lambda r: "field 'phase' is null")
    if n:
        if pass_[0] != 0:
            raise UserError(f"field 'pass': the first row is pass {pass_[0]}; passes are numbered 0, 1, 2, ...",
                            at(0))
        step = np.diff(pass_, prepend=0)
        fail_first((step != 0) & (step != 1), lambda r: f"field 'pass': {pass_[r]} follows {pass_[r - 1]}; "
                   "passes are numbered 0, 1, 2, ... in row order")
    fail_first((phase != 0) & (phase != 1), lambda r: f"field 'phase': {phase[r]} is not 0 (prefill) or 1 (decode)")
    n_passes = int(pass_[-1]) + 1 if n else 0
    pass_start = np.flatnonzero(np.diff(pass_, prepend=-1) != 0) if n else np.zeros(0, np.int64)
    fail_first(phase != phase[pass_start][pass_] if n else np.zeros(0, bool),
               lambda r: f"field 'phase': {phase[r]} differs from the rest of pass {pass_[r]}")

    is_access = ~expert_null
    fail_first(is_access & layer_null, lambda r: "field 'layer' is null on a row that names an expert")
    fail_first(is_access & token_null, lambda r: "field 'token' is null on a row that names an expert")
    fail_first(expert_null & ~layer_null & ~token_null,
               lambda r: "field 'expert' is null on a row with a layer and a token (a token in a cell must route)")
    has_token = ~token_null
    fail_first(has_token & (request_null | position_null),
               lambda r: "fields 'request' and 'position' must be set on every row with a token")
    fail_first(~layer_null & ((layer < 0) | (layer >= meta.n_layers)),
               lambda r: f"field 'layer': {layer[r]} outside 0..{meta.n_layers - 1}")
    fail_first(is_access & ((expert < 0) | (expert >= meta.n_experts)),
               lambda r: f"field 'expert': {expert[r]} outside 0..{meta.n_experts - 1}")
    fail_first(has_token & ((token < 0) | (token > INT32_MAX)),
               lambda r: f"field 'token': {token[r]} is negative or too large")
    for name, values in (("request", request), ("position", position)):
        fail_first(has_token & ((values < 0) | (values > INT32_MAX)),
                   lambda r, name=name, values=values: f"field '{name}': {values[r]} outside 0..{INT32_MAX}")

    # pass tokens: 0..max in every pass, one request/position each
    fail_first(has_token & (token >= max(n, 1)),
               lambda r: f"field 'token': {token[r]} exceeds the file's {n} rows (tokens are numbered 0, 1, 2, ...)")
    all_access = not expert_null.any()  # no structural rows: the common case, no gathers needed
    tok_rows = np.arange(n) if all_access else np.flatnonzero(has_token)

    def on_token_rows(a: np.ndarray) -> np.ndarray:
        return a if all_access else a[tok_rows]

    t_pass, t_token = on_token_rows(pass_), on_token_rows(token).astype(np.int64)
    t_request, t_position = on_token_rows(request), on_token_rows(position)
    n_tok = np.zeros(n_passes, dtype=np.int64)
    if t_token.size:  # rows are grouped by pass: each pass's largest token index is one reduceat away
        seg = np.flatnonzero(np.diff(t_pass, prepend=-1) != 0)
        n_tok[t_pass[seg]] = np.maximum.reduceat(t_token, seg) + 1
    pass_token_offsets = np.zeros(n_passes + 1, dtype=np.int64)
    np.cumsum(n_tok, out=pass_token_offsets[1:])
    n_tokens = int(pass_token_offsets[-1])
    gtok = pass_token_offsets[:-1][t_pass] + t_token
    token_request = np.zeros(n_tokens, dtype=np.int64)
    token_position = np.zeros(n_tokens, dtype=np.int64)
    seen = np.zeros(n_tokens, dtype=bool)
    # scatter in reverse so a token's first row is the one kept; then every row must agree with it
    token_request[gtok[::-1]] = t_request[::-1]
    token_position[gtok[::-1]] = t_position[::-1]
    seen[gtok] = True
    bad = np.flatnonzero((t_request != token_request[gtok]) | (t_position != token_position[gtok]))
    if bad.size:
        r = int(tok_rows[bad[0]])
        g = int(gtok[bad[0]])
        raise UserError(f"token {token[r]} of pass {pass_[r]} has request/position ({request[r]}, {position[r]}) "
                        f"here but ({token_request[g]}, {token_position[g]}) on an earlier row", at(r))
    if not seen.all():
        g = int(np.flatnonzero(~seen)[0])
        p = int(np.searchsorted(pass_token_offsets, g, side="right") - 1)
        raise UserError(f"pass {p}: token {g - int(pass_token_offsets[p])} has no row "
                        f"(tokens of a pass are numbered 0, 1, 2, ...)", where)

    # cells: consecutive rows with a layer, split where the pass or the layer changes
    cell_rows = np.arange(n) if all_access else np.flatnonzero(~layer_null)
    c_pass = pass_ if all_access else pass_[cell_rows]
    c_layer = layer if all_access else layer[cell_rows]
    new_cell = np.ones(cell_rows.size, dtype=bool)
    if cell_rows.size:
        new_cell[1:] = (c_pass[1:] != c_pass[:-1]) | (c_layer[1:] != c_layer[:-1])
    cell_of = np.cumsum(new_cell) - 1
    n_cells = int(cell_of[-1]) + 1 if cell_of.size else 0
    cell_first_row = cell_rows[new_cell]
    if not all_access:
        cell_size_rows = np.bincount(cell_of, minlength=n_cells)
        bad = np.flatnonzero(expert_null[cell_rows] & (cell_size_rows[cell_of] > 1))
        if bad.size:
            r = int(cell_rows[bad[0]])
            raise UserError("a row marking an empty cell (expert and token null) shares its cell with "
                            "rows that route", at(r))
    cell_pass = pass_[cell_first_row]
    pass_cell_offsets = np.zeros(n_passes + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell_pass, minlength=n_passes), out=pass_cell_offsets[1:])

    if all_access:
        acc_rows, acc_cell = cell_rows, cell_of
    else:
        acc_rows = np.flatnonzero(is_access)
        cell_of_row = np.zeros(n, dtype=np.int64)
        cell_of_row[cell_rows] = cell_of
        acc_cell = cell_of_row[acc_rows]
    cell_offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(acc_cell, minlength=n_cells), out=cell_offsets[1:])
    acc_token = token if all_access else token[acc_rows]
    run_start = np.ones(acc_rows.size, dtype=bool)
    if acc_rows.size:
        run_start[1:] = (acc_cell[1:] != acc_cell[:-1]) | (acc_token[1:] != acc_token[:-1])
    keys = acc_cell[run_start] * (int(n_tok.max(initial=0)) + 1) + acc_token[run_start]
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if repeated.size:
        r = int(acc_rows[np.flatnonzero(run_start)[order[repeated[0] + 1]]])
        raise UserError(f"token {token[r]} appears again in its cell after other tokens "
                        f"(a token's rows in a cell must be consecutive)", at(r))
    cell_tokens = np.bincount(acc_cell[run_start], minlength=n_cells).astype(np.int32)
    run_id = np.cumsum(run_start) - 1
    if meta.top_k is not None and acc_rows.size:
        lengths = np.bincount(run_id)
        bad = np.flatnonzero(lengths != meta.top_k)
        if bad.size:
            r = int(acc_rows[np.flatnonzero(run_start)[bad[0]]])
            raise UserError(f"token {token[r]} of pass {pass_[r]} routes to {int(lengths[bad[0]])} experts "
                            f"at layer {layer[r]}; top-k is {meta.top_k}", at(r))
    acc_expert = expert if all_access else expert[acc_rows]
    run_starts = np.flatnonzero(run_start)
    repeat = first_repeat_in_groups(run_starts, acc_expert)
    if repeat is not None:
        r = int(acc_rows[repeat])
        raise UserError(f"field 'expert': {expert[r]} appears twice for token {token[r]} at layer {layer[r]}", at(r))
    canonical = _canonical_runs(run_starts, acc_cell, acc_token, n_cells, n_tok[cell_pass])
    access_token = None if canonical else acc_token

    acc_weight_null = weight_null if all_access else weight_null[acc_rows]
    trace_weight = None
    if acc_rows.size and not acc_weight_null.all():
        fail_first(is_access & weight_null, lambda r: "field 'weight' is null here but set on other rows")
        w = weight if all_access else weight[acc_rows]
        fail_first(is_access & (~np.isfinite(weight) | (np.abs(weight) > np.finfo(np.float16).max)),
                   lambda r: f"field 'weight': {weight[r]} is not finite or beyond float16 range")
        trace_weight = w.astype(np.float16)

    annotations = {}
    predictions = {}
    for name in table.column_names:
        if name.startswith(ANNOTATION_PREFIX):
            annotations[name[len(ANNOTATION_PREFIX):]] = _annotation(table, name, acc_rows, at, where)
        elif name.startswith(PREDICTION_PREFIX):
            short = name[len(PREDICTION_PREFIX):]
            predictions[short] = _prediction(table, name, cell_first_row, widths.get(short), at, where)

    trace = Trace(
        meta=meta,
        pass_phase=phase[pass_start].astype(np.int8) if n else np.zeros(0, np.int8),
        pass_cell_offsets=pass_cell_offsets,
        pass_token_offsets=pass_token_offsets,
        token_request=token_request.astype(np.int32),
        token_position=token_position.astype(np.int32),
        cell_layer=layer[cell_first_row].astype(np.int16),
        cell_offsets=cell_offsets,
        cell_tokens=cell_tokens,
        expert=acc_expert.astype(expert_dtype(meta.n_experts)),
        weight=trace_weight,
        annotations=annotations,
        predictions=predictions,
    )
    if access_token is not None:
        trace.access_token = access_token
        trace.normalize_access_token()
    trace.validate(where)
    return trace


def _canonical_runs(run_starts: np.ndarray, acc_cell: np.ndarray, acc_token: np.ndarray, n_cells: int,
                    pass_tokens_of_cell: np.ndarray) -> bool:
    """True if every cell's token runs are its pass's last tokens in order, of equal length (the layout
    a Trace stores without access_token). Works on runs, not accesses: a top_k-th of the work."""
    n_a = int(acc_token.shape[0])
    if n_a == 0:
        return True
    run_cell = acc_cell[run_starts]
    lengths = np.diff(np.append(run_starts, n_a))
    runs_per_cell = np.bincount(run_cell, minlength=n_cells)
    first_run = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(runs_per_cell, out=first_run[1:])
    first_token = pass_tokens_of_cell - runs_per_cell  # a short cell holds its pass's last tokens
    expected = first_token[run_cell] + np.arange(run_starts.size) - first_run[run_cell]
    return bool((acc_token[run_starts] == expected).all() and (lengths == lengths[first_run[run_cell]]).all())


def _annotation(table: pa.Table, name: str, acc_rows: np.ndarray, at, where: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise UserError(f"column '{name}' has type {col.type}; annotations are numbers or booleans", where)
    null = pc.is_null(col).to_numpy(zero_copy_only=False).astype(bool)
    bad = np.flatnonzero(null[acc_rows])
    if bad.size:
        raise UserError(f"field '{name}' is null on a row that names an expert", at(int(acc_rows[bad[0]])))
    dtype = col.type.to_pandas_dtype()
    filler = False if pa.types.is_boolean(col.type) else 0
    values = col.fill_null(filler).to_numpy(zero_copy_only=False)
    return np.asarray(values[acc_rows], dtype=dtype)


def _prediction(table: pa.Table, name: str, cell_first_row: np.ndarray, width: Any, at, where: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if not pa.types.is_list(col.type) or not (pa.types.is_integer(col.type.value_type)
                                               or pa.types.is_floating(col.type.value_type)):
        raise UserError(f"column '{name}' has type {col.type}; predictions are lists of numbers", where)
    dtype = np.dtype(col.type.value_type.to_pandas_dtype())
    picked = col.take(pa.array(cell_first_row, type=pa.int64()))
    null = pc.is_null(picked).to_numpy(zero_copy_only=False).astype(bool)
    bad = np.flatnonzero(null)
    if bad.size:
        raise UserError(f"field '{name}' is null on the first row of a cell", at(int(cell_first_row[bad[0]])))
    lengths = pc.list_value_length(picked).to_numpy(zero_copy_only=False).astype(np.int64)
    if width is None:
        width = int(lengths[0]) if lengths.size else 0
    if not isinstance(width, int) or isinstance(width, bool) or width < 0:
        raise UserError(f"metadata: prediction width of '{name}' must be a non-negative integer", where)
    bad = np.flatnonzero(lengths != width)
    if bad.size:
        raise UserError(f"field '{name}' holds {int(lengths[bad[0]])} values; every cell holds {width}",
                        at(int(cell_first_row[bad[0]])))
    flat = picked.flatten()
    if flat.null_count:
        raise UserError(f"field '{name}' contains a null value", where)
    values = flat.to_numpy(zero_copy_only=False).astype(dtype)
    return values.reshape(cell_first_row.size, width)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
