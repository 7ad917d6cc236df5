"""Where the reader cuts a moesim Parquet file's record batches into chunks (parquet_read).

A chunk ends where a pass ends. A pass longer than the split size is cut where one of its cells
ends, and a cell longer than that between two of its tokens' runs, so no chunk holds much more
than the split size whatever the file's pass and cell sizes: the chunk after a cut gets what it
needs from the one before (parquet_carry). Only one token's run longer than a batch (more rows
than a valid file has experts, unless n_experts is huge) makes a longer chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Chunk:
    row0: int  # the chunk's first row in the file
    table: pa.Table
    open_pass: bool = False  # its last pass goes on in the next chunk
    open_cell: bool = False  # and so does its last cell (cut between two runs of it)


_NO_ROW = object()


def chunks(batches: Iterator[pa.RecordBatch], split_rows: int | None = None) -> Iterator[Chunk]:
    """Regroup batches into chunks that end where a pass ends, or, once a pass holds more than
    `split_rows` rows, where one of its cells ends, or where a run of its last cell ends.

    Rows with a null pass count as a change of pass: where chunks are cut then does not matter,
    the file fails the null check anyway.
    """
    held: list[pa.RecordBatch] = []
    held_rows = 0
    held_last: Any = None  # the pass value of the last held row
    held_layer: Any = None  # and its layer
    row0 = 0
    for batch in batches:
        passes = batch.column("pass")
        cut = _last_pass_start(passes, held_last if held else _NO_ROW)
        open_pass = open_cell = False
        if cut is None and split_rows is not None and held_rows + batch.num_rows > split_rows:
            cut = _last_cell_start(batch.column("layer"), held_layer if held else _NO_ROW)
            open_pass = True
            if cut == 0 and not held:
                cut = None
            if cut is None:
                cut = _last_run_start(batch)
                open_cell = cut is not None
        if cut is not None:
            table = pa.Table.from_batches([*held, batch.slice(0, cut)])
            yield Chunk(row0, table, open_pass, open_cell)
            row0 += table.num_rows
            held, held_rows = [], 0
            batch = batch.slice(cut)
        if batch.num_rows:
            held.append(batch)
            held_rows += batch.num_rows
            held_last = passes[-1].as_py()
            held_layer = batch.column("layer")[-1].as_py()
    if held:
        yield Chunk(row0, pa.Table.from_batches(held))


def _last_cell_start(layers: pa.Array, before: Any) -> int | None:
    """The last row of a batch (inside one pass) where the layer changes between two rows that
    both have one: a cell starts there. None if there is no such row."""
    n = len(layers)
    if n > 1:
        change = pc.fill_null(pc.not_equal(layers.slice(1), layers.slice(0, n - 1)), False)
        rows = np.flatnonzero(change.to_numpy(zero_copy_only=False))
        if rows.size:
            return int(rows[-1]) + 1
    if n and before is not _NO_ROW and before is not None and layers[0].is_valid and layers[0].as_py() != before:
        return 0
    return None


def _last_run_start(batch: pa.RecordBatch) -> int | None:
    """The last row r > 0 of a batch (inside one pass) where rows r-1 and r are both accesses (pass,
    layer, token and expert set) of one pass and layer, with different tokens: a run of the cell
    starts there, and each side of a cut there holds an access of the cell. None if there is none."""
    n = batch.num_rows
    if n < 2:
        return None
    valid = np.ones(n, dtype=bool)
    for name in ("pass", "layer", "token", "expert"):
        valid &= pc.is_valid(batch.column(name)).to_numpy(zero_copy_only=False)
    pairs = valid[1:] & valid[:-1]
    for name in ("pass", "layer"):
        values = batch.column(name)
        pairs &= pc.fill_null(pc.equal(values.slice(1), values.slice(0, n - 1)), False).to_numpy(zero_copy_only=False)
    tokens = batch.column("token")
    pairs &= pc.fill_null(pc.not_equal(tokens.slice(1), tokens.slice(0, n - 1)), False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(pairs)
    return int(rows[-1]) + 1 if rows.size else None


def _last_pass_start(passes: pa.Array, before: Any) -> int | None:
    """The last row of the batch whose pass differs from the row before it (`before`: the value on
    the row before the batch, or _NO_ROW), or None if the batch continues one pass."""
    n = len(passes)
    if n > 1:
        change = pc.fill_null(pc.not_equal(passes.slice(1), passes.slice(0, n - 1)), True)
        rows = np.flatnonzero(change.to_numpy(zero_copy_only=False))
        if rows.size:
            return int(rows[-1]) + 1
    if n and before is not _NO_ROW and (before is None or passes[0].as_py() != before):
        return 0
    return None
