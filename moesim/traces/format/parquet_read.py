"""Read a moesim Parquet file's rows into a Trace, a chunk of whole passes at a time.

Why chunks: the file has one row per access and eight or more columns; decoding it as one table
peaked at ~155 bytes per access, forty times the 3.6-byte trace it produces. Here pyarrow hands
over record batches, they are regrouped into chunks that end where a pass ends (so every rule
about a pass, its tokens and cells can be checked inside a chunk: parquet_chunk), and each
chunk's accesses are copied into arrays sized for the whole file. A pass longer than
SPLIT_BATCHES batches is cut where a cell ends: the chunk that goes on with it gets the pass's
phase and token table (parquet_carry.PassCarry), so one 60 M-row prefill costs one chunk's
working set, not 9 GB. Peak memory is the trace, one chunk's working set (about SPLIT_BATCHES x
BATCH_ROWS rows; more only for a single cell longer than that) and one Parquet row group. Errors
are the ones a whole-file read reports (see parquet_checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moesim.errors import UserError
from moesim.limits import check_memory
from moesim.traces.format.parquet_checks import Check, CheckFailed, CheckSkipped
from moesim.traces.format.parquet_carry import PassCarry
from moesim.traces.format.parquet_chunk import ChunkDecoder, FileState, Piece, PieceAccesses
from moesim.traces.format.parquet_layout import ANNOTATION_PREFIX, BASE_COLUMNS, PREDICTION_PREFIX
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import TraceMeta, expert_dtype

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
    assembler = _Assembler(state, n_rows)
    previous_pass: int | None = None
    carry: PassCarry | None = None
    for row0, table, open_end in _whole_pass_chunks(batches, SPLIT_BATCHES * batch_rows):
        # only a single cell longer than the split size makes a chunk this large: refuse it rather
        # than run out of memory half-way (moesim.limits)
        check_memory(table.num_rows * CHUNK_BYTES_PER_ROW, f"decoding one cell of {table.num_rows:,} rows",
                     f"{where}: row {row0}")
        decoder = ChunkDecoder(table, row0, previous_pass, state, carry, open_end)
        _decode_into(assembler, decoder)
        previous_pass = decoder.last_pass
        carry = decoder.next_carry
    if n_rows == 0:  # no chunk at all: decode the empty table, as a whole-file read does
        _decode_into(assembler, ChunkDecoder(schema.empty_table(), 0, None, state))
    # pyarrow's allocator keeps the decoded row groups' freed buffers for reuse; numpy cannot reuse
    # them, so hand them back before assembling and validating the trace allocates (~35 MB at 10 M)
    pa.default_memory_pool().release_unused()
    return assembler.finish()


def _decode_into(assembler: "_Assembler", decoder: ChunkDecoder) -> None:
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


def _whole_pass_chunks(batches: Iterator[pa.RecordBatch],
                       split_rows: int | None = None) -> Iterator[tuple[int, pa.Table, bool]]:
    """Regroup batches into (first row, table, pass goes on) chunks that end where a pass ends, or,
    once a pass holds more than `split_rows` rows, where one of its cells ends (pass goes on: True).

    A cell longer than that makes one longer chunk. Rows with a null pass count as a change of
    pass: where chunks are cut then does not matter, the file fails the null check anyway.
    """
    held: list[pa.RecordBatch] = []
    held_rows = 0
    held_last: Any = None  # the pass value of the last held row
    held_layer: Any = None  # and its layer
    row0 = 0
    for batch in batches:
        passes = batch.column("pass")
        cut = _last_pass_start(passes, held_last if held else _NO_ROW)
        open_end = False
        if cut is None and split_rows is not None and held_rows + batch.num_rows > split_rows:
            cut = _last_cell_start(batch.column("layer"), held_layer if held else _NO_ROW)
            open_end = True
            if cut == 0 and not held:
                cut = None
        if cut is not None:
            table = pa.Table.from_batches([*held, batch.slice(0, cut)])
            yield row0, table, open_end
            row0 += table.num_rows
            held, held_rows = [], 0
            batch = batch.slice(cut)
        if batch.num_rows:
            held.append(batch)
            held_rows += batch.num_rows
            held_last = passes[-1].as_py()
            held_layer = batch.column("layer")[-1].as_py()
    if held:
        yield row0, pa.Table.from_batches(held), False


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


_NO_ROW = object()


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


class _Assembler:
    """Collects the chunks' pieces; per-access arrays go straight into arrays sized for the file."""

    def __init__(self, state: FileState, n_rows: int) -> None:
        self.state = state
        self.n_rows = n_rows  # accesses are at most the rows: arrays of this size never grow
        self.pieces: list[Piece] = []
        self.expert = np.empty(n_rows, dtype=expert_dtype(state.meta.n_experts))
        self.weight: np.ndarray | None = None  # made when a chunk first sets weights
        self.annotations: dict[str, np.ndarray] = {}
        self.n_accesses = 0
        self.starts: list[int] = []  # each piece's first access

    def add(self, piece: Piece, accesses: PieceAccesses) -> None:
        start = self.n_accesses
        self.starts.append(start)
        stop = start + accesses.expert.shape[0]
        self.expert[start:stop] = accesses.expert
        if accesses.weight is not None:
            if self.weight is None:  # earlier chunks had no weights: if they had accesses, the file fails
                self.weight = np.empty(self.n_rows, dtype=np.float16)
            self.weight[start:stop] = accesses.weight
        for name, values in accesses.annotations.items():
            if name not in self.annotations:
                self.annotations[name] = np.empty(self.n_rows, dtype=values.dtype)
            self.annotations[name][start:stop] = values
        self.n_accesses = stop
        self.pieces.append(piece)

    def finish(self) -> Trace:
        state = self.state
        if state.any_weight and state.first_null_weight_row is not None:
            where = f"{state.where}: row {state.first_null_weight_row}"
            state.errors.record(CheckFailed(Check.WEIGHT_NULL,
                                            UserError("field 'weight' is null here but set on other rows", where)))
        state.errors.raise_if_any()
        pieces, n_a = self.pieces, self.n_accesses
        # cut the file-sized arrays to the accesses read; each reassignment frees the longer array
        self.expert = _first(self.expert, n_a)
        if self.weight is not None:
            self.weight = _first(self.weight, n_a)
        for name in self.annotations:
            self.annotations[name] = _first(self.annotations[name], n_a)
        n_cells = sum(p.cell_layer.shape[0] for p in pieces)
        predictions = {}
        for name in pieces[0].prediction_values:
            width = state.widths.get(name)
            values = np.concatenate([p.prediction_values[name] for p in pieces])
            predictions[name] = values.reshape(n_cells, 0 if width is None else width)
        trace = Trace(
            meta=state.meta,
            pass_phase=_joined(pieces, "pass_phase"),
            pass_cell_offsets=_offsets(_joined(pieces, "pass_cells")),
            pass_token_offsets=_offsets(_joined(pieces, "pass_tokens")),
            token_request=_joined(pieces, "token_request"),
            token_position=_joined(pieces, "token_position"),
            cell_layer=_joined(pieces, "cell_layer"),
            cell_offsets=_offsets(_joined(pieces, "cell_sizes")),
            cell_tokens=_joined(pieces, "cell_tokens"),
            expert=self.expert,
            weight=self.weight,
            annotations=dict(self.annotations),
            predictions=predictions,
        )
        if any(p.access_token is not None for p in pieces) or not _split_cells_canonical(pieces):
            trace.access_token = self._access_tokens(trace)
            trace.normalize_access_token()
        trace.validate(state.where)
        return trace


    def _access_tokens(self, trace: Trace) -> np.ndarray:
        """Every access's token, for a trace whose layout is not canonical: pieces that kept their
        accesses' tokens give them; the others' cells hold consecutive token runs of equal length
        that end at the cell's end token (its pass's last token, or for a cut pass what it read)."""
        ends = np.repeat(trace.pass_token_offsets[1:] - trace.pass_token_offsets[:-1], np.diff(trace.pass_cell_offsets))
        cell0 = 0
        for piece in self.pieces:
            n = piece.cell_tokens.shape[0]
            if piece.cell_end is not None:
                own = piece.cell_end >= 0
                ends[cell0:cell0 + n][own] = piece.cell_end[own]
            cell0 += n
        sizes = np.diff(trace.cell_offsets)
        tokens = trace.cell_tokens.astype(np.int64)
        per_token = np.where(tokens > 0, sizes // np.maximum(tokens, 1), 1)
        within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(trace.cell_offsets[:-1], sizes)
        out = (np.repeat(ends - tokens, sizes) + within // np.repeat(per_token, sizes)).astype(np.int32)
        for piece, start in zip(self.pieces, self.starts):
            if piece.access_token is not None:
                out[start:start + piece.access_token.shape[0]] = piece.access_token
        return out


def _split_cells_canonical(pieces: list[Piece]) -> bool:
    """True if every cell of a cut pass (checked against its own end while the pass was open) ends
    at the pass's last token, as the canonical layout needs."""
    for piece in pieces:
        for index, ends in piece.closed_cell_ends:
            final = int(piece.pass_tokens[index])
            if ((ends >= 0) & (ends != final)).any():
                return False
    return True


def _joined(pieces: list[Piece], name: str) -> np.ndarray:
    return np.concatenate([getattr(p, name) for p in pieces])


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _first(values: np.ndarray, n: int) -> np.ndarray:
    """The first n entries of a file-sized array, without a copy when they are all of it."""
    return values if values.shape[0] == n else values[:n].copy()
