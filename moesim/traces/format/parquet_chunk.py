"""One chunk of a moesim Parquet file -> its part of the Trace, with every row rule checked.

A chunk holds whole passes (the reader cuts the file where a pass starts), so every rule about
a pass, its tokens, its cells and their token runs can be checked inside the chunk alone; the
one rule that needs the whole file (weights set on some accesses must be set on all) is
collected here and decided by the reader. Checks run in `Check` order and report the first
failing row; see parquet_checks for how chunks agree on the file's error.

Working memory is ~150 bytes per row of the chunk (full-width numpy columns and masks), which is
why the reader keeps chunks small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from moesim.errors import UserError
from moesim.traces.format.grouping import first_repeat_in_groups
from moesim.traces.format.parquet_carry import PassCarry, canonical_runs
from moesim.traces.format.parquet_checks import Check, CheckFailed, FirstError, extra_column_key
from moesim.traces.format.parquet_layout import ANNOTATION_PREFIX, INT32_MAX, PREDICTION_PREFIX
from moesim.traces.format.trace_meta import TraceMeta, expert_dtype


@dataclass
class FileState:
    """What every chunk needs to know about the file, and what chunks tell the reader."""

    meta: TraceMeta
    where: str
    n_rows: int  # rows in the whole file (a token index must be below it)
    widths: dict[str, Any]  # prediction widths: from the metadata, else learned from the first cell
    errors: FirstError = field(default_factory=FirstError)
    any_weight: bool = False  # some access has a weight
    first_null_weight_row: int | None = None  # the first access without one


@dataclass
class Piece:
    """A chunk's passes, their tokens and cells, ready to concatenate with the other chunks'."""

    pass_phase: np.ndarray  # int8 per pass
    pass_cells: np.ndarray  # cells per pass
    pass_tokens: np.ndarray  # tokens per pass
    token_request: np.ndarray  # int32 per pass-token
    token_position: np.ndarray  # int32 per pass-token
    cell_layer: np.ndarray  # int16 per cell
    cell_sizes: np.ndarray  # accesses per cell
    cell_tokens: np.ndarray  # int32 per cell
    prediction_values: dict[str, np.ndarray]  # flat, cell-major: reshaped once the width is known
    access_token: np.ndarray | None  # the accesses' tokens, only where the layout is not canonical
    # Passes whose cells span chunks are emitted by the chunk that closes them (pass_* and token_*
    # cover closed passes only). Their cells in earlier chunks were checked against their own last
    # token: (closing pass index within this piece, cell end tokens) to compare with the pass's
    # final token count once known; the layout is canonical only if every end equals it.
    closed_cell_ends: list[tuple[int, np.ndarray]] = field(default_factory=list)
    cell_end: np.ndarray | None = None  # per cell of this piece: the token after its last run


@dataclass
class PieceAccesses:
    """A chunk's per-access arrays: the reader copies them into file-sized arrays and drops them."""

    expert: np.ndarray  # in the trace's expert dtype
    weight: np.ndarray | None  # float16; None where the chunk carries no weight
    annotations: dict[str, np.ndarray]


Message = Callable[[int], str]


class ChunkDecoder:
    """Decode one chunk: `ChunkDecoder(table, row0, previous_pass, state).decode()`.

    `row0` is the chunk's first row in the file (errors name file rows); `previous_pass` is the
    pass value of the row before the chunk (None for the first chunk). Raises CheckFailed at the
    first broken rule and CheckSkipped when the file already broke an earlier-ordered one.
    """

    def __init__(self, table: pa.Table, row0: int, previous_pass: int | None, state: FileState,
                 carry: PassCarry | None = None, open_end: bool = False) -> None:
        self.table = table
        self.row0 = row0
        self.previous_pass = previous_pass
        self.state = state
        self.carry = carry  # the first pass began in earlier chunks
        self.open_end = open_end  # the last pass goes on in the next chunk
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
        self.build_cells()
        self.build_runs()
        weight = self.weights()
        annotations, predictions = self.extra_columns()
        closed = self.n_passes - 1 if self.open_end else self.n_passes  # passes that end in this chunk
        pass_cells = np.bincount(self.cell_lpass, minlength=self.n_passes)
        if self.carry is not None and self.n_passes:
            pass_cells[0] += self.carry.n_cells
        token_stop = int(self.pass_token_offsets[closed])
        piece = Piece(
            pass_phase=self.phase[self.pass_start][:closed].astype(np.int8),
            pass_cells=pass_cells[:closed],
            pass_tokens=self.n_tok[:closed],
            token_request=self.token_request[:token_stop].astype(np.int32),
            token_position=self.token_position[:token_stop].astype(np.int32),
            cell_layer=self.layer[self.cell_first_row].astype(np.int16),
            cell_sizes=np.bincount(self.acc_cell, minlength=self.n_cells),
            cell_tokens=self.cell_tokens,
            prediction_values=predictions,
            access_token=None if self.canonical else self.acc_token,
            cell_end=self.cell_end,
        )
        carried_ends = self.carry.cell_ends if self.carry is not None else []
        if carried_ends and closed:
            piece.closed_cell_ends.append((0, np.concatenate(carried_ends)))
        if self.next_carry is not None:  # the rest of what the next chunk needs: the open pass's cells
            open_cells = self.cell_lpass == self.n_passes - 1
            self.next_carry.n_cells = int(pass_cells[-1])
            self.next_carry.cell_ends = [*(carried_ends if self.n_passes == 1 else []), self.cell_end[open_cells]]
        accesses = PieceAccesses(expert=self.acc_expert.astype(expert_dtype(self.meta.n_experts)),
                                 weight=weight, annotations=annotations)
        return piece, accesses

    def _carry_tokens(self, offsets: np.ndarray, request: np.ndarray, position: np.ndarray,
                      seen: np.ndarray) -> None:
        """The open last pass's token table, for the next chunk's token checks. Made as soon as the
        tokens agree, so that a later rule failing here still leaves the next chunk what the
        earlier-ordered token checks need."""
        last = self.n_passes - 1
        lo, hi = int(offsets[last]), int(offsets[last + 1])
        assert self.next_carry is not None  # made by check_passes
        self.next_carry.request, self.next_carry.position = request[lo:hi].copy(), position[lo:hi].copy()
        self.next_carry.seen = seen[lo:hi].copy()

    def read_columns(self) -> None:
        """Numpy values (nulls as 0) and null masks of the base columns (their types were checked)."""
        self.pass_, self.pass_null = _integer(self.table, "pass")
        self.phase, self.phase_null = _integer(self.table, "phase")
        self.request, self.request_null = _integer(self.table, "request")
        self.position, self.position_null = _integer(self.table, "position")
        self.token, self.token_null = _integer(self.table, "token")
        self.layer, self.layer_null = _integer(self.table, "layer")
        self.expert, self.expert_null = _integer(self.table, "expert")
        self.weight, self.weight_null = _floating(self.table, "weight")

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
        """Each pass's tokens 0..max with one request and position each, agreed on by all their rows."""
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
        carry = self.carry if self.carry is not None and self.carry.seen is not None else None
        if carry is not None and self.n_passes:
            n_tok[0] = max(int(n_tok[0]), carry.seen.shape[0])
        pass_token_offsets = np.zeros(self.n_passes + 1, dtype=np.int64)
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
        if carry is not None and self.n_passes:  # tokens first seen in an earlier chunk keep those values
            k = carry.seen.shape[0]
            earlier = np.flatnonzero(carry.seen)
            token_request[earlier] = carry.request[earlier]
            token_position[earlier] = carry.position[earlier]
            seen[:k] |= carry.seen
        bad = np.flatnonzero((t_request != token_request[gtok]) | (t_position != token_position[gtok]))
        if bad.size:
            r = int(tok_rows[bad[0]])
            g = int(gtok[bad[0]])
            self.fail_at(Check.TOKEN_AGREEMENT, r,
                         f"token {self.token[r]} of pass {self.pass_[r]} has request/position "
                         f"({self.request[r]}, {self.position[r]}) here but ({token_request[g]}, "
                         f"{token_position[g]}) on an earlier row")
        if self.open_end and self.n_passes:
            self._carry_tokens(pass_token_offsets, token_request, token_position, seen)
        self.state.errors.reach(Check.TOKEN_ROWS)
        closed_tokens = int(pass_token_offsets[self.n_passes - 1 if self.open_end and self.n_passes else self.n_passes])
        if not seen[:closed_tokens].all():  # an open pass's tokens may still come in the next chunk
            g = int(np.flatnonzero(~seen[:closed_tokens])[0])
            p = int(np.searchsorted(pass_token_offsets, g, side="right") - 1)
            self.fail_at(Check.TOKEN_ROWS, None, f"pass {self.first_pass + p}: token {g - int(pass_token_offsets[p])} "
                                                 f"has no row (tokens of a pass are numbered 0, 1, 2, ...)")
        self.n_tok = n_tok
        self.pass_token_offsets = pass_token_offsets
        self.token_request, self.token_position, self.token_seen = token_request, token_position, seen

    def build_cells(self) -> None:
        """Cells: consecutive rows with a layer, split where the pass or the layer changes."""
        self.state.errors.reach(Check.EMPTY_CELL)
        n, all_access, layer_null = self.n, self.all_access, self.layer_null
        cell_rows = np.arange(n) if all_access else np.flatnonzero(~layer_null)
        c_pass = self.lpass if all_access else self.lpass[cell_rows]
        c_layer = self.layer if all_access else self.layer[cell_rows]
        new_cell = np.ones(cell_rows.size, dtype=bool)
        if cell_rows.size:
            new_cell[1:] = (c_pass[1:] != c_pass[:-1]) | (c_layer[1:] != c_layer[:-1])
        cell_of = np.cumsum(new_cell) - 1
        n_cells = int(cell_of[-1]) + 1 if cell_of.size else 0
        cell_first_row = cell_rows[new_cell]
        if not all_access:
            cell_size_rows = np.bincount(cell_of, minlength=n_cells)
            bad = np.flatnonzero(self.expert_null[cell_rows] & (cell_size_rows[cell_of] > 1))
            if bad.size:
                self.fail_at(Check.EMPTY_CELL, int(cell_rows[bad[0]]),
                             "a row marking an empty cell (expert and token null) shares its cell with rows that route")
        if all_access:
            acc_rows, acc_cell = cell_rows, cell_of
        else:
            acc_rows = np.flatnonzero(self.is_access)
            cell_of_row = np.zeros(n, dtype=np.int64)
            cell_of_row[cell_rows] = cell_of
            acc_cell = cell_of_row[acc_rows]
        self.n_cells, self.cell_first_row = n_cells, cell_first_row
        self.cell_lpass = self.lpass[cell_first_row]
        self.acc_rows, self.acc_cell = acc_rows, acc_cell

    def build_runs(self) -> None:
        """A cell's accesses come token by token: each token one run of distinct experts (top-k of them)."""
        self.state.errors.reach(Check.TOKEN_SPLIT)
        acc_rows, acc_cell, token, n_cells = self.acc_rows, self.acc_cell, self.token, self.n_cells
        acc_token = token if self.all_access else token[acc_rows]
        run_start = np.ones(acc_rows.size, dtype=bool)
        if acc_rows.size:
            run_start[1:] = (acc_cell[1:] != acc_cell[:-1]) | (acc_token[1:] != acc_token[:-1])
        keys = acc_cell[run_start] * (int(self.n_tok.max(initial=0)) + 1) + acc_token[run_start]
        order = np.argsort(keys, kind="stable")
        repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
        if repeated.size:
            r = int(acc_rows[np.flatnonzero(run_start)[order[repeated[0] + 1]]])
            self.fail_at(Check.TOKEN_SPLIT, r, f"token {token[r]} appears again in its cell after other tokens "
                                               f"(a token's rows in a cell must be consecutive)")
        self.cell_tokens = np.bincount(acc_cell[run_start], minlength=n_cells).astype(np.int32)
        top_k = self.meta.top_k
        self.state.errors.reach(Check.TOP_K)
        if top_k is not None and acc_rows.size:
            lengths = np.bincount(np.cumsum(run_start) - 1)
            bad = np.flatnonzero(lengths != top_k)
            if bad.size:
                r = int(acc_rows[np.flatnonzero(run_start)[bad[0]]])
                self.fail_at(Check.TOP_K, r, f"token {token[r]} of pass {self.pass_[r]} routes to "
                                             f"{int(lengths[bad[0]])} experts at layer {self.layer[r]}; "
                                             f"top-k is {top_k}")
        self.state.errors.reach(Check.EXPERT_REPEAT)
        acc_expert = self.expert if self.all_access else self.expert[acc_rows]
        run_starts = np.flatnonzero(run_start)
        repeat = first_repeat_in_groups(run_starts, acc_expert)
        if repeat is not None:
            r = int(acc_rows[repeat])
            self.fail_at(Check.EXPERT_REPEAT, r, f"field 'expert': {self.expert[r]} appears twice for token "
                                                 f"{token[r]} at layer {self.layer[r]}")
        # a cell's end: the token after its last run. A closed pass's cells end at its last token;
        # an open pass's are checked against their own end here and against the pass's when it closes
        run_cell = acc_cell[run_starts]
        cell_end = np.full(n_cells, -1, dtype=np.int64)  # -1: a cell without runs (an empty cell)
        if run_starts.size:
            last_run = np.flatnonzero(np.append(run_cell[1:] != run_cell[:-1], True))
            cell_end[run_cell[last_run]] = acc_token[run_starts[last_run]].astype(np.int64) + 1
        ends = self.n_tok[self.cell_lpass].astype(np.int64)
        if self.open_end and self.n_passes:
            open_cells = self.cell_lpass == self.n_passes - 1
            ends[open_cells] = cell_end[open_cells]
        self.cell_end = cell_end
        self.canonical = canonical_runs(run_starts, acc_cell, acc_token, n_cells, ends)
        self.acc_token, self.acc_expert = acc_token, acc_expert

    def weights(self) -> np.ndarray | None:
        """The accesses' float16 weights, or None if the chunk sets none.

        Whether a null weight is an error depends on the whole file (are weights set anywhere?),
        so the chunk only reports whether it sets any and where its first null one is.
        """
        state = self.state
        state.errors.reach(Check.WEIGHT_NULL)
        acc_weight_null = self.weight_null if self.all_access else self.weight_null[self.acc_rows]
        nulls = np.flatnonzero(acc_weight_null)
        if nulls.size and state.first_null_weight_row is None:
            state.first_null_weight_row = self.row0 + int(self.acc_rows[nulls[0]])
        if not self.acc_rows.size or nulls.size == self.acc_rows.size:
            return None
        state.any_weight = True
        weight = self.weight
        self.fail_first(Check.WEIGHT_RANGE,
                        self.is_access & (~np.isfinite(weight) | (np.abs(weight) > np.finfo(np.float16).max)),
                        lambda r: f"field 'weight': {weight[r]} is not finite or beyond float16 range")
        return (weight if self.all_access else weight[self.acc_rows]).astype(np.float16)

    def extra_columns(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Annotations (one value per access) and predictions (one list per cell, flattened)."""
        annotations: dict[str, np.ndarray] = {}
        predictions: dict[str, np.ndarray] = {}
        for position, name in enumerate(self.table.column_names):
            if name.startswith(ANNOTATION_PREFIX):
                annotations[name[len(ANNOTATION_PREFIX):]] = self.annotation(position, name)
            elif name.startswith(PREDICTION_PREFIX):
                predictions[name[len(PREDICTION_PREFIX):]] = self.prediction(position, name)
        return annotations, predictions

    def annotation(self, position: int, name: str) -> np.ndarray:
        self.state.errors.reach(extra_column_key(position, 0))
        col = self.table.column(name).combine_chunks()
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            self.fail_at(extra_column_key(position, 0), None,
                         f"column '{name}' has type {col.type}; annotations are numbers or booleans")
        self.state.errors.reach(extra_column_key(position, 1))
        bad = np.flatnonzero(_nulls(col)[self.acc_rows])
        if bad.size:
            self.fail_at(extra_column_key(position, 1), int(self.acc_rows[bad[0]]),
                         f"field '{name}' is null on a row that names an expert")
        dtype = col.type.to_pandas_dtype()
        filler = False if pa.types.is_boolean(col.type) else 0
        values = col.fill_null(filler).to_numpy(zero_copy_only=False)
        return np.asarray(values[self.acc_rows], dtype=dtype)

    def prediction(self, position: int, name: str) -> np.ndarray:
        """The lists on the cells' first rows, flattened; the width comes from the metadata or the
        file's first cell (remembered in the file state for later chunks)."""
        short = name[len(PREDICTION_PREFIX):]
        self.state.errors.reach(extra_column_key(position, 0))
        col = self.table.column(name).combine_chunks()
        if not pa.types.is_list(col.type) or not (pa.types.is_integer(col.type.value_type)
                                                   or pa.types.is_floating(col.type.value_type)):
            self.fail_at(extra_column_key(position, 0), None,
                         f"column '{name}' has type {col.type}; predictions are lists of numbers")
        first_rows = self.cell_first_row
        picked = col.take(pa.array(first_rows, type=pa.int64()))
        self.state.errors.reach(extra_column_key(position, 1))
        bad = np.flatnonzero(_nulls(picked))
        if bad.size:
            self.fail_at(extra_column_key(position, 1), int(first_rows[bad[0]]),
                         f"field '{name}' is null on the first row of a cell")
        stray = np.setdiff1d(np.flatnonzero(~_nulls(col)), first_rows)
        if stray.size:  # a value the format has no place for would be dropped silently
            self.fail_at(extra_column_key(position, 1), int(stray[0]),
                         f"field '{name}' is set on a row that is not its cell's first (predictions are per cell)")
        self.state.errors.reach(extra_column_key(position, 2))
        lengths = pc.list_value_length(picked).to_numpy(zero_copy_only=False).astype(np.int64)
        width = self.state.widths.get(short)
        if width is None and lengths.size:
            width = self.state.widths[short] = int(lengths[0])
        if width is not None:
            if not isinstance(width, int) or isinstance(width, bool) or width < 0:
                self.fail_at(extra_column_key(position, 2), None,
                             f"metadata: prediction width of '{name}' must be a non-negative integer")
            bad = np.flatnonzero(lengths != width)
            if bad.size:
                self.fail_at(extra_column_key(position, 2), int(first_rows[bad[0]]),
                             f"field '{name}' holds {int(lengths[bad[0]])} values; every cell holds {width}")
        self.state.errors.reach(extra_column_key(position, 3))
        flat = picked.flatten()
        if flat.null_count:
            self.fail_at(extra_column_key(position, 3), None, f"field '{name}' contains a null value")
        dtype = np.dtype(col.type.value_type.to_pandas_dtype())
        return flat.to_numpy(zero_copy_only=False).astype(dtype)


def _integer(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls as 0, null mask); signed types up to 32 bits keep their width."""
    col = table.column(name).combine_chunks()
    null = _nulls(col)
    values = col.fill_null(0).to_numpy(zero_copy_only=False)
    if values.dtype not in (np.int8, np.int16, np.int32):  # int64 and unsigned: compute in int64
        values = values.astype(np.int64)
    return values, null


def _floating(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    col = table.column(name).combine_chunks()
    null = _nulls(col)
    if pa.types.is_null(col.type):
        return np.zeros(table.num_rows, dtype=np.float32), null
    return col.fill_null(0).to_numpy(zero_copy_only=False), null


def _nulls(col: pa.Array) -> np.ndarray:
    return pc.is_null(col).to_numpy(zero_copy_only=False).astype(bool)
