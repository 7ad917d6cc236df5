"""Read a moesim Parquet file's rows into a Trace, a chunk of rows at a time.

Why chunks: the file has one row per access and eight or more columns; decoding it as one table
peaked at ~155 bytes per access, forty times the 3.6-byte trace it produces. Here pyarrow hands
over record batches, they are regrouped into chunks that end where a pass ends (parquet_cuts), and
each chunk's accesses are copied into arrays sized for the whole file (parquet_assemble). A pass
longer than SPLIT_BATCHES batches is cut where a cell ends, and a cell longer than that between
two of its tokens' runs: the chunk that goes on gets what the rules need from the earlier part
(parquet_carry), so one 60 M-row prefill, or one 60 M-row cell, costs one chunk's working set, not
9 GB. Peak memory is the trace, one chunk's working set (about SPLIT_BATCHES x BATCH_ROWS rows),
the open pass's token table and one Parquet row group. Errors are the ones a whole-file read
reports (see parquet_checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from moesim.errors import UserError
from moesim.limits import check_memory
from moesim.traces.format.parquet_checks import Check, CheckFailed, CheckSkipped
from moesim.traces.format.parquet_assemble import Assembler
from moesim.traces.format.parquet_carry import PassCarry
from moesim.traces.format.parquet_chunk import ChunkDecoder
from moesim.traces.format.parquet_cuts import chunks
from moesim.traces.format.parquet_layout import ANNOTATION_PREFIX, BASE_COLUMNS, PREDICTION_PREFIX
from moesim.traces.format.parquet_piece import FileState
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import TraceMeta

# Rows per record batch. A chunk's working set is ~150 bytes per row (full-width numpy columns and
# masks): 64 Ki rows keep it near 10 MB, and larger batches were not faster (10 M accesses: 3.4 s
# at 64 Ki, 4.0 s at 256 Ki). Decoding itself holds one Parquet row group (ROW_GROUP_SIZE rows).
BATCH_ROWS = 1 << 16
# A pass is cut at a cell boundary once its rows pass this many batches (~40 MB of working set).
SPLIT_BATCHES = 4
CHUNK_BYTES_PER_ROW = 150  # a chunk's decoding working set per row (parquet_chunk's module docstring)

ARROW_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError, EOFError)


def read_rows(path: Path, meta: TraceMeta, widths: dict[str, Any], where: str,
              batch_rows: int = BATCH_ROWS) -> Trace:
    """The trace stored in the rows of the moesim Parquet file `path` (its metadata already read).

    `batch_rows` sets the chunk size; the result, and the error for a broken file, do not depend
    on it. Every problem is a UserError naming the file and, where there is one, the row.
    """
    try:
        file = pq.ParquetFile(path)
        n_rows = file.metadata.num_rows
        schema = file.schema_arrow
    except ARROW_ERRORS as exc:
        raise UserError(f"cannot read the Parquet data ({first_line(exc)})", where) from None
    if n_rows < 0:  # a damaged footer (found by tests/traces/traceio/test_fuzz_importers.py)
        raise UserError(f"cannot read the Parquet data (the footer claims {n_rows} rows)", where)
    state = FileState(meta=meta, where=where, n_rows=n_rows, widths=dict(widths))
    batches = _batches(file, batch_rows, where)
    try:
        check_columns(schema, where)
    except CheckFailed as failed:
        # nothing to decode, but a whole-file read would first fail on unreadable data: read it all
        for _ in batches:
            pass
        raise failed.error from None
    assembler = Assembler(state, n_rows)
    previous_pass: int | None = None
    carry: PassCarry | None = None
    continues_cell = False
    for chunk in chunks(batches, SPLIT_BATCHES * batch_rows):
        rows = chunk.table.num_rows
        # only one token's run longer than a batch makes a chunk this large: refuse it rather than
        # run out of memory half-way (moesim.limits)
        check_memory(rows * CHUNK_BYTES_PER_ROW, f"decoding a chunk of {rows:,} rows", f"{where}: row {chunk.row0}")
        decoder = ChunkDecoder(chunk.table, chunk.row0, previous_pass, state, carry, chunk.open_pass,
                               continues_cell, chunk.open_cell)
        _decode_into(assembler, decoder)
        previous_pass, carry, continues_cell = decoder.last_pass, decoder.next_carry, chunk.open_cell
        del decoder, chunk  # the chunk's working set (and the carry it read) goes before the next is read
    carry = None  # an open pass's token table, if the file ended inside one: not needed any more
    if n_rows == 0:  # no chunk at all: decode the empty table, as a whole-file read does
        _decode_into(assembler, ChunkDecoder(schema.empty_table(), 0, None, state))
    # pyarrow's allocator keeps the decoded row groups' freed buffers for reuse; numpy cannot reuse
    # them, so hand them back before assembling and validating the trace allocates (~35 MB at 10 M)
    pa.default_memory_pool().release_unused()
    return assembler.finish()


def _decode_into(assembler: Assembler, decoder: ChunkDecoder) -> None:
    """Add the chunk's piece, or record its error (the file's, unless an earlier-ordered one turns up)."""
    try:
        assembler.add(*decoder.decode())
    except CheckFailed as failed:
        decoder.state.errors.record(failed)
    except CheckSkipped:
        pass


def check_columns(schema: pa.Schema, where: str) -> None:
    """Unknown, repeated, missing and mistyped columns: CheckFailed(Check.COLUMNS) for the first."""

    def fail(message: str) -> None:
        raise CheckFailed(Check.COLUMNS, UserError(message, where))

    names = schema.names
    for name in names:
        if name not in BASE_COLUMNS and not name.startswith((ANNOTATION_PREFIX, PREDICTION_PREFIX)):
            fail(f"unknown column '{name}' (extra per-access columns must be named '{ANNOTATION_PREFIX}<name>')")
    for name in names:
        if names.count(name) > 1:
            fail(f"column '{name}' appears {names.count(name)} times")
    for name in BASE_COLUMNS:
        if name not in names:
            fail(f"missing column '{name}'")
        dtype = schema.field(name).type
        if name == "weight":
            if not (pa.types.is_floating(dtype) or pa.types.is_null(dtype)):
                fail(f"column '{name}' has type {dtype}; expected floating point")
        elif not pa.types.is_integer(dtype):
            fail(f"column '{name}' has type {dtype}; expected integers")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _batches(file: pq.ParquetFile, batch_rows: int, where: str) -> Iterator[pa.RecordBatch]:
    """The file's record batches; a decoding failure, or rows the footer does not count, is a UserError."""
    expected = file.metadata.num_rows
    seen = 0
    try:
        # one thread: each extra one keeps its own allocator arenas (~10 MB more at peak, not faster)
        for batch in file.iter_batches(batch_size=batch_rows, use_threads=False):
            seen += batch.num_rows
            if seen > expected:
                break
            yield batch
    except ARROW_ERRORS as exc:
        raise UserError(f"cannot read the Parquet data ({first_line(exc)})", where) from None
    if seen != expected:
        raise UserError(f"cannot read the Parquet data (its footer counts {expected} rows, its pages hold "
                        f"{'more' if seen > expected else seen})", where)
