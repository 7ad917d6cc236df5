"""One chunk of a moesim Parquet file -> its part of the Trace, with every row rule checked.

A chunk holds whole passes, or a pass cut where a cell ends, or a cell cut between two of its
tokens' runs (parquet_cuts); what a rule needs from the earlier part of a cut pass or cell comes
with the chunk (parquet_carry), so every rule is checked chunk by chunk. The one rule that needs
the whole file (weights set on some accesses must be set on all) is collected here and decided by
the reader. This module checks passes, fields and tokens; parquet_runs cells and their runs,
parquet_columns weights and the extra columns. Checks run in `Check` order and report the first
failing row; see parquet_checks for how chunks agree on the file's error.

Working memory is ~150 bytes per row of the chunk (full-width numpy columns and masks), which is
why the reader keeps chunks small.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from moesim.errors import UserError
from moesim.traces.format.parquet_carry import PassCarry, TokenTable
from moesim.traces.format.parquet_checks import Check, CheckFailed
from moesim.traces.format.parquet_columns import access_weights, extra_columns, floating_column, integer_column
from moesim.traces.format.parquet_layout import INT32_MAX
from moesim.traces.format.parquet_piece import FileState, Piece, PieceAccesses
from moesim.traces.format.parquet_runs import build_cells, check_runs
from moesim.traces.format.trace_meta import expert_dtype


Message = Callable[[int], str]


class ChunkDecoder:
    """Decode one chunk: `ChunkDecoder(table, row0, previous_pass, state).decode()`.

    `row0` is the chunk's first row in the file (errors name file rows); `previous_pass` is the
    pass value of the row before the chunk (None for the first chunk). Raises CheckFailed at the
    first broken rule and CheckSkipped when the file already broke an earlier-ordered one.
    """

    def __init__(self, table: pa.Table, row0: int, previous_pass: int | None, state: FileState,
                 carry: PassCarry | None = None, open_end: bool = False, continues_cell: bool = False,
                 open_cell: bool = False) -> None:
        self.table = table
        self.row0 = row0
        self.previous_pass = previous_pass
        self.state = state
        self.carry = carry  # the first pass began in earlier chunks
        self.open_end = open_end  # the last pass goes on in the next chunk
        # the first cell began in the earlier chunk (cut between two of its runs: row 0 is an access
        # of it); the last cell goes on in the next chunk
        self.continues_cell = continues_cell
        self.open_cell = open_cell
        self.next_carry: PassCarry | None = None
        self.meta = state.meta
        self.n = table.num_rows
        self.read_columns()

    @property
    def last_pass(self) -> int | None:
        """The pass value of the chunk's last row as the checks see it (nulls read as 0)."""
        return int(self.pass_[-1]) if self.n else self.previous_pass

    # ---- reporting ---------------------------------------------------------------------------

    def at(self, row: int) -> str:
        return f"{self.state.where}: row {self.row0 + row}"

    def fail_first(self, key: int, mask: np.ndarray, message: Message) -> None:
        self.state.errors.reach(key)
        idx = np.flatnonzero(mask)
        if idx.size:
            r = int(idx[0])
            raise CheckFailed(key, UserError(message(r), self.at(r)))

    def fail_at(self, key: int, row: int | None, message: str) -> None:
        raise CheckFailed(key, UserError(message, self.state.where if row is None else self.at(row)))

    # ---- the chunk ---------------------------------------------------------------------------

    def decode(self) -> tuple[Piece, PieceAccesses]:
        self.check_passes()
        self.check_fields()
        self.build_tokens()
        build_cells(self)
        check_runs(self)
        weight = access_weights(self)
        annotations, predictions = extra_columns(self)
        closed = self.n_passes - 1 if self.open_end else self.n_passes  # passes that end in this chunk
        pass_cells = np.bincount(self.cell_lpass, minlength=self.n_passes)
        if self.carry is not None and self.n_passes:  # a continued cell was counted in the earlier chunk
            pass_cells[0] += self.carry.n_cells - int(self.continues_cell)
        piece = Piece(
            pass_phase=self.phase[self.pass_start][:closed].astype(np.int8),
            pass_cells=pass_cells[:closed],
            pass_tokens=self.n_tok[:closed],
            token_request=self.closed_token_request,
            token_position=self.closed_token_position,
            cell_layer=self.layer[self.cell_first_row].astype(np.int16),
            cell_sizes=np.bincount(self.acc_cell, minlength=self.n_cells),
            cell_tokens=self.cell_tokens,
            prediction_values=predictions,
            access_token=None if self.canonical else self.acc_token,
            cell_end=self.cell_end,
            continues_cell=self.continues_cell,
        )
        carried_ends = self.carry.cell_ends if self.carry is not None else []
        if self.continues_cell and carried_ends:  # the continued cell's end is now this chunk's
            carried_ends = [np.concatenate(carried_ends)[:-1]]
        if carried_ends and closed:
            piece.closed_cell_ends.append((0, np.concatenate(carried_ends)))
        if self.next_carry is not None:  # the rest of what the next chunk needs: the open pass's cells
            open_cells = self.cell_lpass == self.n_passes - 1
            self.next_carry.n_cells = int(pass_cells[-1])
            self.next_carry.cell_ends = [*(carried_ends if self.n_passes == 1 else []), self.cell_end[open_cells]]
        accesses = PieceAccesses(expert=self.acc_expert.astype(expert_dtype(self.meta.n_experts)),
                                 weight=weight, annotations=annotations)
        return piece, accesses

    def read_columns(self) -> None:
        """Numpy values (nulls as 0) and null masks of the base columns (their types were checked)."""
        self.pass_, self.pass_null = integer_column(self.table, "pass")
        self.phase, self.phase_null = integer_column(self.table, "phase")
        self.request, self.request_null = integer_column(self.table, "request")
        self.position, self.position_null = integer_column(self.table, "position")
        self.token, self.token_null = integer_column(self.table, "token")
        self.layer, self.layer_null = integer_column(self.table, "layer")
        self.expert, self.expert_null = integer_column(self.table, "expert")
        self.weight, self.weight_null = floating_column(self.table, "weight")

    def check_passes(self) -> None:
        """Passes numbered 0, 1, 2, ... in row order; one phase per pass."""
        n, pass_, phase = self.n, self.pass_, self.phase
        self.fail_first(Check.PASS_NULL, self.pass_null, lambda r: "field 'pass' is null")
        self.fail_first(Check.PHASE_NULL, self.phase_null, lambda r: "field 'phase' is null")
        before = self.previous_pass
        if n:
            if before is None:
                self.state.errors.reach(Check.FIRST_PASS)
                if pass_[0] != 0:
                    self.fail_at(Check.FIRST_PASS, 0,
                                 f"field 'pass': the first row is pass {pass_[0]}; passes are numbered 0, 1, 2, ...")
            step = np.diff(pass_, prepend=0 if before is None else before)

            def follows(r: int) -> str:
                prior = pass_[r - 1] if r else before
                return f"field 'pass': {pass_[r]} follows {prior}; passes are numbered 0, 1, 2, ... in row order"
            self.fail_first(Check.PASS_STEP, (step != 0) & (step != 1), follows)
        self.fail_first(Check.PHASE_VALUE, (phase != 0) & (phase != 1),
                        lambda r: f"field 'phase': {phase[r]} is not 0 (prefill) or 1 (decode)")
        first = int(pass_[0]) if n else 0
        self.first_pass = first
        self.lpass = pass_ - pass_.dtype.type(first) if n else pass_  # pass index within the chunk
        self.n_passes = int(pass_[-1]) - first + 1 if n else 0
        self.pass_start = np.flatnonzero(np.diff(self.lpass, prepend=-1) != 0) if n else np.zeros(0, np.int64)
        pass_phase = phase[self.pass_start].astype(np.int64)
        if self.carry is not None and n:
            pass_phase[0] = self.carry.phase  # the pass's phase is its first row's, in an earlier chunk
        if self.open_end and n:
            self.next_carry = PassCarry(phase=int(pass_phase[-1]))
        self.fail_first(Check.PHASE_PER_PASS, phase != pass_phase[self.lpass] if n else np.zeros(0, bool),
                        lambda r: f"field 'phase': {phase[r]} differs from the rest of pass {pass_[r]}")

    def check_fields(self) -> None:
        """Which fields a row sets, and their ranges."""
        meta, f = self.meta, self.fail_first
        layer, expert, token = self.layer, self.expert, self.token
        expert_null, layer_null, token_null = self.expert_null, self.layer_null, self.token_null
        is_access = ~expert_null
        f(Check.ACCESS_LAYER, is_access & layer_null, lambda r: "field 'layer' is null on a row that names an expert")
        f(Check.ACCESS_TOKEN, is_access & token_null, lambda r: "field 'token' is null on a row that names an expert")
        f(Check.STRUCTURAL_EXPERT, expert_null & ~layer_null & ~token_null,
          lambda r: "field 'expert' is null on a row with a layer and a token (a token in a cell must route)")
        has_token = ~token_null
        f(Check.TOKEN_REQUEST, has_token & (self.request_null | self.position_null),
          lambda r: "fields 'request' and 'position' must be set on every row with a token")
        f(Check.LAYER_RANGE, ~layer_null & ((layer < 0) | (layer >= meta.n_layers)),
          lambda r: f"field 'layer': {layer[r]} outside 0..{meta.n_layers - 1}")
        f(Check.EXPERT_RANGE, is_access & ((expert < 0) | (expert >= meta.n_experts)),
          lambda r: f"field 'expert': {expert[r]} outside 0..{meta.n_experts - 1}")
        f(Check.TOKEN_RANGE, has_token & ((token < 0) | (token > INT32_MAX)),
          lambda r: f"field 'token': {token[r]} is negative or too large")
        for key, name, values in ((Check.REQUEST_RANGE, "request", self.request),
                                  (Check.POSITION_RANGE, "position", self.position)):
            f(key, has_token & ((values < 0) | (values > INT32_MAX)),
              lambda r, name=name, values=values: f"field '{name}': {values[r]} outside 0..{INT32_MAX}")
        n_file = self.state.n_rows
        f(Check.TOKEN_COUNT, has_token & (token >= max(n_file, 1)),
          lambda r: f"field 'token': {token[r]} exceeds the file's {n_file} rows (tokens are numbered 0, 1, 2, ...)")
        self.is_access = is_access
        self.has_token = has_token
        self.all_access = not expert_null.any()  # no structural rows: the common case, no gathers needed

    def build_tokens(self) -> None:
        """Each pass's tokens 0..max with one request and position each, agreed on by all their rows.

        A pass that began in an earlier chunk keeps its token table in the carry (updated in place);
        the chunk's other passes get one here."""
        self.state.errors.reach(Check.TOKEN_AGREEMENT)
        n, all_access = self.n, self.all_access
        tok_rows = np.arange(n) if all_access else np.flatnonzero(self.has_token)

        def on_token_rows(a: np.ndarray) -> np.ndarray:
            return a if all_access else a[tok_rows]

        t_pass, t_token = on_token_rows(self.lpass), on_token_rows(self.token).astype(np.int64)
        t_request, t_position = on_token_rows(self.request), on_token_rows(self.position)
        n_tok = np.zeros(self.n_passes, dtype=np.int64)
        if t_token.size:  # rows are grouped by pass: each pass's largest token index is one reduceat away
            seg = np.flatnonzero(np.diff(t_pass, prepend=-1) != 0)
            n_tok[t_pass[seg]] = np.maximum.reduceat(t_token, seg) + 1
        table = self.carry.tokens if self.carry is not None and self.n_passes else None
        here = n_tok.copy()  # tokens of the tables made here: none for the carried pass
        k = 0  # the carried pass's token rows come first
        if table is not None:
            n_tok[0] = max(int(n_tok[0]), table.n)
            here[0] = 0
            k = int(np.searchsorted(t_pass, 1))
        offsets = np.zeros(self.n_passes + 1, dtype=np.int64)
        np.cumsum(here, out=offsets[1:])
        gtok = offsets[:-1][t_pass[k:]] + t_token[k:]
        token_request = np.zeros(int(offsets[-1]), dtype=np.int64)
        token_position = np.zeros(int(offsets[-1]), dtype=np.int64)
        seen = np.zeros(int(offsets[-1]), dtype=bool)
        # scatter in reverse so a token's first row is the one kept; then every row must agree with it
        token_request[gtok[::-1]] = t_request[k:][::-1]
        token_position[gtok[::-1]] = t_position[k:][::-1]
        seen[gtok] = True
        want_request, want_position = token_request[gtok], token_position[gtok]
        if table is not None:  # tokens first seen in an earlier chunk keep those values
            head = t_token[:k]
            table.grow(int(n_tok[0]))
            new = ~table.seen[head]
            table.request[head[new][::-1]] = t_request[:k][new][::-1]
            table.position[head[new][::-1]] = t_position[:k][new][::-1]
            table.seen[head] = True
            want_request = np.concatenate([table.request[head], want_request])
            want_position = np.concatenate([table.position[head], want_position])
        bad = np.flatnonzero((t_request != want_request) | (t_position != want_position))
        if bad.size:
            r, b = int(tok_rows[bad[0]]), int(bad[0])
            self.fail_at(Check.TOKEN_AGREEMENT, r,
                         f"token {self.token[r]} of pass {self.pass_[r]} has request/position "
                         f"({self.request[r]}, {self.position[r]}) here but ({want_request[b]}, "
                         f"{want_position[b]}) on an earlier row")
        last = self.n_passes - 1
        if self.open_end and self.n_passes:  # the open pass's table, for the next chunk (before a later rule fails)
            assert self.next_carry is not None  # made by check_passes
            lo, hi = int(offsets[last]), int(offsets[last + 1])
            self.next_carry.tokens = table if table is not None and last == 0 else TokenTable.of(
                token_request[lo:hi], token_position[lo:hi], seen[lo:hi])
        self.state.errors.reach(Check.TOKEN_ROWS)
        closed = last if self.open_end else self.n_passes
        if table is not None and closed and not table.seen.all():
            self.fail_at(Check.TOKEN_ROWS, None, f"pass {self.first_pass}: token {int(np.argmin(table.seen))} "
                                                 f"has no row (tokens of a pass are numbered 0, 1, 2, ...)")
        closed_tokens = int(offsets[max(closed, 0)])
        if not seen[:closed_tokens].all():  # an open pass's tokens may still come in the next chunk
            g = int(np.flatnonzero(~seen[:closed_tokens])[0])
            p = int(np.searchsorted(offsets, g, side="right") - 1)
            self.fail_at(Check.TOKEN_ROWS, None, f"pass {self.first_pass + p}: token {g - int(offsets[p])} "
                                                 f"has no row (tokens of a pass are numbered 0, 1, 2, ...)")
        self.n_tok = n_tok
        self.closed_token_request = token_request[:closed_tokens].astype(np.int32)
        self.closed_token_position = token_position[:closed_tokens].astype(np.int32)
        if table is not None and closed:  # the carried pass closes here: its table comes first
            if closed_tokens:
                self.closed_token_request = np.concatenate([table.request, self.closed_token_request])
                self.closed_token_position = np.concatenate([table.position, self.closed_token_position])
            else:  # no copy of a long prompt's table (the table is not used after this chunk)
                self.closed_token_request, self.closed_token_position = table.request, table.position
