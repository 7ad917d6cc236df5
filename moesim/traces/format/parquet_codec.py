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

Both directions stream: rows are built and read a few passes at a time (parquet_write,
parquet_read), so neither holds more than one chunk's full-width columns next to the compact
trace. This module is the entry point and owns the file-level metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moesim.atomic_io import atomic_path
from moesim.errors import UserError
from moesim.traces.format.parquet_layout import FORMAT_VERSION, INT32_MAX, METADATA_KEY, ROW_GROUP_SIZE
from moesim.traces.format.parquet_read import ARROW_ERRORS, BATCH_ROWS, first_line, read_rows
from moesim.traces.format.parquet_write import file_metadata, fixed_size_tables, row_pieces
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import TraceMeta
from moesim.units import show


# ---- writing ---------------------------------------------------------------------------------


def write_trace(trace: Trace, path: str | Path) -> None:
    """Validate `trace` and write it to `path` atomically (a failure leaves no file behind).

    Rows are built a piece of passes at a time and written in row groups of ROW_GROUP_SIZE rows:
    the same bytes as writing `trace_to_table(trace)` in one go, without its full-width columns.
    """
    where = str(path)
    trace.validate(where)
    tables = fixed_size_tables(row_pieces(trace, where), ROW_GROUP_SIZE)
    first = next(tables)
    schema = first.schema.with_metadata(file_metadata(trace))
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            writer.write_table(first, row_group_size=ROW_GROUP_SIZE)
            del first
            for table in tables:
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)


def trace_to_table(trace: Trace, where: str = "trace") -> pa.Table:
    """The Arrow table of `trace` in the documented row layout, with the file's metadata."""
    table = pa.concat_tables(row_pieces(trace, where)).combine_chunks()
    return table.replace_schema_metadata(file_metadata(trace))


# ---- reading ---------------------------------------------------------------------------------


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The decoded "moesim" metadata of a Parquet file, or None if the file has none."""
    where = str(path)
    try:
        schema = pq.read_schema(path)
    except ARROW_ERRORS as exc:
        raise UserError(f"not a readable Parquet file ({first_line(exc)})", where) from None
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


def read_trace(path: str | Path, batch_rows: int = BATCH_ROWS) -> Trace:
    """Load a moesim Parquet trace; every problem is a UserError naming the file and row.

    `batch_rows` (rows decoded at a time) trades peak memory for per-chunk overhead; the trace and
    any error are the same for every value.
    """
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
    return read_rows(path, meta, widths, where, batch_rows)


def _meta_from(raw: Any, where: str) -> TraceMeta:
    if not isinstance(raw, dict):
        raise UserError("metadata field 'meta' must be an object", where)
    try:
        meta = TraceMeta.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"metadata field 'meta' is incomplete or malformed ({first_line(exc)})", where) from None
    if meta.layer_ids is not None and (not isinstance(meta.layer_ids, list)
                                       or not all(isinstance(i, int) for i in meta.layer_ids)):
        raise UserError("metadata field 'meta.layer_ids' must be a list of integers", where)
    if meta.dense_bytes is not None and len(meta.dense_bytes) != meta.n_layers:
        raise UserError("metadata field 'meta.dense_bytes' needs one entry per layer", where)
    if not isinstance(meta.kind, str) or (meta.model is not None and not isinstance(meta.model, str)):
        raise UserError("metadata fields 'meta.kind' and 'meta.model' must be text", where)
    if meta.n_layers < 1 or meta.n_experts < 1:  # checked first: every row's range check divides by them
        raise UserError(f"metadata: n_layers and n_experts must be at least 1, got {show(meta.n_layers)} and "
                        f"{show(meta.n_experts)}", where)
    if meta.n_layers > np.iinfo(np.int16).max or meta.n_experts > INT32_MAX:
        raise UserError("metadata: n_layers must fit int16 and n_experts int32", where)
    return meta
