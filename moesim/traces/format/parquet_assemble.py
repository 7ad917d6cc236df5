"""Join the pieces a moesim Parquet file's chunks decode to into one Trace (parquet_read).

Per-access arrays go straight into arrays sized for the file as each chunk is decoded (so the
file's accesses are held once); per-pass, per-token and per-cell tables are concatenated at the
end, and a cell cut across chunks (Piece.continues_cell) is joined back into one.
"""

from __future__ import annotations

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.parquet_checks import Check, CheckFailed
from moesim.traces.format.parquet_piece import FileState, Piece, PieceAccesses
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import expert_dtype


class Assembler:
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
        # the pieces' token tables are joined first and dropped: a long prompt's are ~8 B per token
        token_request, token_position = _joined_once(pieces, "token_request"), _joined_once(pieces, "token_position")
        for piece in pieces:
            piece.token_request = piece.token_position = token_request[:0]
        cells = _CellJoin(pieces)
        predictions = {}
        for name in pieces[0].prediction_values:
            width = state.widths.get(name)
            values = np.concatenate([p.prediction_values[name] for p in pieces])
            predictions[name] = values.reshape(cells.n_cells, 0 if width is None else width)
        trace = Trace(
            meta=state.meta,
            pass_phase=_joined(pieces, "pass_phase"),
            pass_cell_offsets=_offsets(_joined(pieces, "pass_cells")),
            pass_token_offsets=_offsets(_joined(pieces, "pass_tokens")),
            token_request=token_request,
            token_position=token_position,
            cell_layer=cells.join(_joined(pieces, "cell_layer"), first=True),
            cell_offsets=_offsets(cells.join(_joined(pieces, "cell_sizes"))),
            cell_tokens=cells.join(_joined(pieces, "cell_tokens")),
            expert=self.expert,
            weight=self.weight,
            annotations=dict(self.annotations),
            predictions=predictions,
        )
        if any(p.access_token is not None for p in pieces) or not _split_cells_canonical(pieces):
            trace.access_token = self._access_tokens()
            trace.normalize_access_token()
        trace.validate(state.where)
        return trace

    def _access_tokens(self) -> np.ndarray:
        """Every access's token, for a trace whose layout is not canonical: pieces that kept their
        accesses' tokens give them; in the others each cell (the piece's part of it, for a cut
        cell) holds consecutive token runs of equal length that end at the cell's end token."""
        sizes = _joined(self.pieces, "cell_sizes").astype(np.int64)
        tokens = _joined(self.pieces, "cell_tokens").astype(np.int64)
        ends = _joined(self.pieces, "cell_end")  # -1 only for a cell without accesses
        starts = _offsets(sizes)[:-1]
        per_token = np.where(tokens > 0, sizes // np.maximum(tokens, 1), 1)
        within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(starts, sizes)
        out = (np.repeat(ends - tokens, sizes) + within // np.repeat(per_token, sizes)).astype(np.int32)
        for piece, start in zip(self.pieces, self.starts):
            if piece.access_token is not None:
                out[start:start + piece.access_token.shape[0]] = piece.access_token
        return out


class _CellJoin:
    """The pieces' cells -> the trace's: a piece's first cell that continues the previous piece's
    last one is added into it."""

    def __init__(self, pieces: list[Piece]) -> None:
        counts = [p.cell_layer.shape[0] for p in pieces]
        starts = np.zeros(sum(counts), dtype=bool)  # a piece-cell that starts a trace cell
        at = 0
        for piece, count in zip(pieces, counts):
            starts[at:at + count] = True
            if count and piece.continues_cell:
                starts[at] = False
            at += count
        self.first = np.flatnonzero(starts)
        self.joins = self.first.size != starts.size
        self.n_cells = int(self.first.size)

    def join(self, values: np.ndarray, first: bool = False) -> np.ndarray:
        """Per trace cell: the first piece-cell's value (`first`), else the sum of its piece-cells'."""
        if not self.joins:
            return values
        if first:
            return values[self.first]
        return np.add.reduceat(values, self.first).astype(values.dtype) if self.n_cells else values[:0]


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


def _joined_once(pieces: list[Piece], name: str) -> np.ndarray:
    """_joined, without a copy when one piece holds them all (a long prompt's token table)."""
    held = [getattr(p, name) for p in pieces if getattr(p, name).shape[0]]
    return held[0] if len(held) == 1 else _joined(pieces, name)


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _first(values: np.ndarray, n: int) -> np.ndarray:
    """The first n entries of a file-sized array, without a copy when they are all of it."""
    return values if values.shape[0] == n else values[:n].copy()
