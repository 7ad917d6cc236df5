"""A chunk's columns as numpy arrays: the base columns' values and null masks, and the extra
columns (annotations per access, predictions per cell) with their checks (parquet_chunk calls these)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moesim.traces.format.parquet_checks import Check, extra_column_key
from moesim.traces.format.parquet_layout import ANNOTATION_PREFIX, PREDICTION_PREFIX

if TYPE_CHECKING:
    from moesim.traces.format.parquet_chunk import ChunkDecoder


def integer_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, null mask); signed types up to 32 bits keep their width."""
    col = table.column(name).combine_chunks()
    null = nulls(col)
    values = col.fill_null(0).to_numpy(zero_copy_only=False)
    if values.dtype not in (np.int8, np.int16, np.int32):  # int64 and unsigned: compute in int64
        values = values.astype(np.int64)
    return values, null


def floating_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    col = table.column(name).combine_chunks()
    null = nulls(col)
    if pa.types.is_null(col.type):
        return np.zeros(table.num_rows, dtype=np.float32), null
    return col.fill_null(0).to_numpy(zero_copy_only=False), null


def nulls(col: pa.Array) -> np.ndarray:
    return pc.is_null(col).to_numpy(zero_copy_only=False).astype(bool)


def access_weights(d: ChunkDecoder) -> np.ndarray | None:
    """The accesses' float16 weights, or None if the chunk sets none.

    Whether a null weight is an error depends on the whole file (are weights set anywhere?),
    so the chunk only reports whether it sets any and where its first null one is.
    """
    state = d.state
    state.errors.reach(Check.WEIGHT_NULL)
    acc_weight_null = d.weight_null if d.all_access else d.weight_null[d.acc_rows]
    missing = np.flatnonzero(acc_weight_null)
    if missing.size and state.first_null_weight_row is None:
        state.first_null_weight_row = d.row0 + int(d.acc_rows[missing[0]])
    if not d.acc_rows.size or missing.size == d.acc_rows.size:
        return None
    state.any_weight = True
    weight = d.weight
    d.fail_first(Check.WEIGHT_RANGE,
                 d.is_access & (~np.isfinite(weight) | (np.abs(weight) > np.finfo(np.float16).max)),
                 lambda r: f"field 'weight': {weight[r]} is not finite or beyond float16 range")
    return (weight if d.all_access else weight[d.acc_rows]).astype(np.float16)


def extra_columns(d: ChunkDecoder) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Annotations (one value per access) and predictions (one list per cell, flattened)."""
    annotations: dict[str, np.ndarray] = {}
    predictions: dict[str, np.ndarray] = {}
    for position, name in enumerate(d.table.column_names):
        if name.startswith(ANNOTATION_PREFIX):
            annotations[name[len(ANNOTATION_PREFIX):]] = annotation(d, position, name)
        elif name.startswith(PREDICTION_PREFIX):
            predictions[name[len(PREDICTION_PREFIX):]] = prediction(d, position, name)
    return annotations, predictions


def annotation(d: ChunkDecoder, position: int, name: str) -> np.ndarray:
    d.state.errors.reach(extra_column_key(position, 0))
    col = d.table.column(name).combine_chunks()
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        d.fail_at(extra_column_key(position, 0), None,
                  f"column '{name}' has type {col.type}; annotations are numbers or booleans")
    d.state.errors.reach(extra_column_key(position, 1))
    bad = np.flatnonzero(nulls(col)[d.acc_rows])
    if bad.size:
        d.fail_at(extra_column_key(position, 1), int(d.acc_rows[bad[0]]),
                  f"field '{name}' is null on a row that names an expert")
    dtype = col.type.to_pandas_dtype()
    filler = False if pa.types.is_boolean(col.type) else 0
    values = col.fill_null(filler).to_numpy(zero_copy_only=False)
    return np.asarray(values[d.acc_rows], dtype=dtype)


def prediction(d: ChunkDecoder, position: int, name: str) -> np.ndarray:
    """The lists on the cells' first rows, flattened; the width comes from the metadata or the
    file's first cell (remembered in the file state for later chunks). A cell that began in an
    earlier chunk has its first row there: its list was read with that chunk."""
    short = name[len(PREDICTION_PREFIX):]
    d.state.errors.reach(extra_column_key(position, 0))
    col = d.table.column(name).combine_chunks()
    if not pa.types.is_list(col.type) or not (pa.types.is_integer(col.type.value_type)
                                               or pa.types.is_floating(col.type.value_type)):
        d.fail_at(extra_column_key(position, 0), None,
                  f"column '{name}' has type {col.type}; predictions are lists of numbers")
    first_rows = d.cell_first_row[1:] if d.continues_cell else d.cell_first_row
    picked = col.take(pa.array(first_rows, type=pa.int64()))
    d.state.errors.reach(extra_column_key(position, 1))
    bad = np.flatnonzero(nulls(picked))
    if bad.size:
        d.fail_at(extra_column_key(position, 1), int(first_rows[bad[0]]),
                  f"field '{name}' is null on the first row of a cell")
    stray = np.setdiff1d(np.flatnonzero(~nulls(col)), first_rows)
    if stray.size:  # a value the format has no place for would be dropped silently
        d.fail_at(extra_column_key(position, 1), int(stray[0]),
                  f"field '{name}' is set on a row that is not its cell's first (predictions are per cell)")
    d.state.errors.reach(extra_column_key(position, 2))
    lengths = pc.list_value_length(picked).to_numpy(zero_copy_only=False).astype(np.int64)
    width = d.state.widths.get(short)
    if width is None and lengths.size:
        width = d.state.widths[short] = int(lengths[0])
    if width is not None:
        if not isinstance(width, int) or isinstance(width, bool) or width < 0:
            d.fail_at(extra_column_key(position, 2), None,
                      f"metadata: prediction width of '{name}' must be a non-negative integer")
        bad = np.flatnonzero(lengths != width)
        if bad.size:
            d.fail_at(extra_column_key(position, 2), int(first_rows[bad[0]]),
                      f"field '{name}' holds {int(lengths[bad[0]])} values; every cell holds {width}")
    d.state.errors.reach(extra_column_key(position, 3))
    flat = picked.flatten()
    if flat.null_count:
        d.fail_at(extra_column_key(position, 3), None, f"field '{name}' contains a null value")
    dtype = np.dtype(col.type.value_type.to_pandas_dtype())
    return flat.to_numpy(zero_copy_only=False).astype(dtype)
