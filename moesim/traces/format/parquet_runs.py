"""A chunk's cells, and their runs: each token of a cell is one run of distinct experts (top-k of them),
a token's run comes once per cell, and whether the cells hold the canonical layout (parquet_chunk
calls `check_runs` after the cells are known).

A cell may be cut between two runs (parquet_cuts): the chunk that continues it gets the tokens the
cell had so far and where its runs stopped (parquet_carry.CellCarry), so every rule reports what a
whole-file read reports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from moesim.traces.format.grouping import first_repeat_in_groups
from moesim.traces.format.parquet_carry import CellCarry, canonical_runs
from moesim.traces.format.parquet_checks import Check

if TYPE_CHECKING:
    from moesim.traces.format.parquet_chunk import ChunkDecoder


def build_cells(d: ChunkDecoder) -> None:
    """Cells: consecutive rows with a layer, split where the pass or the layer changes."""
    d.state.errors.reach(Check.EMPTY_CELL)
    n, all_access, layer_null = d.n, d.all_access, d.layer_null
    cell_rows = np.arange(n) if all_access else np.flatnonzero(~layer_null)
    c_pass = d.lpass if all_access else d.lpass[cell_rows]
    c_layer = d.layer if all_access else d.layer[cell_rows]
    new_cell = np.ones(cell_rows.size, dtype=bool)
    if cell_rows.size:
        new_cell[1:] = (c_pass[1:] != c_pass[:-1]) | (c_layer[1:] != c_layer[:-1])
    cell_of = np.cumsum(new_cell) - 1
    n_cells = int(cell_of[-1]) + 1 if cell_of.size else 0
    cell_first_row = cell_rows[new_cell]
    if not all_access:
        cell_size_rows = np.bincount(cell_of, minlength=n_cells)
        bad = np.flatnonzero(d.expert_null[cell_rows] & (cell_size_rows[cell_of] > 1))
        if bad.size:
            d.fail_at(Check.EMPTY_CELL, int(cell_rows[bad[0]]),
                      "a row marking an empty cell (expert and token null) shares its cell with rows that route")
    if all_access:
        acc_rows, acc_cell = cell_rows, cell_of
    else:
        acc_rows = np.flatnonzero(d.is_access)
        cell_of_row = np.zeros(n, dtype=np.int64)
        cell_of_row[cell_rows] = cell_of
        acc_cell = cell_of_row[acc_rows]
    d.n_cells, d.cell_first_row = n_cells, cell_first_row
    d.cell_lpass = d.lpass[cell_first_row]
    d.acc_rows, d.acc_cell = acc_rows, acc_cell


def check_runs(d: ChunkDecoder) -> None:
    """Sets d.cell_tokens, d.cell_end, d.canonical, d.acc_token, d.acc_expert (and the open cell's
    carry); raises CheckFailed at the first broken rule."""
    d.state.errors.reach(Check.TOKEN_SPLIT)
    acc_rows, acc_cell, token, n_cells = d.acc_rows, d.acc_cell, d.token, d.n_cells
    acc_token = token if d.all_access else token[acc_rows]
    run_start = np.ones(acc_rows.size, dtype=bool)
    if acc_rows.size:
        run_start[1:] = (acc_cell[1:] != acc_cell[:-1]) | (acc_token[1:] != acc_token[:-1])
    run_starts = np.flatnonzero(run_start)
    run_cell = acc_cell[run_starts]
    run_token = acc_token[run_starts].astype(np.int64)
    carried = d.carry.cell if d.continues_cell and d.carry is not None else None
    repeat = _first_token_repeat(run_cell, run_token, None if carried is None else carried.seen)
    if repeat is not None:
        r = int(acc_rows[run_starts[repeat]])
        d.fail_at(Check.TOKEN_SPLIT, r, f"token {token[r]} appears again in its cell after other tokens "
                                        f"(a token's rows in a cell must be consecutive)")
    open_cell = None
    if d.open_cell and d.next_carry is not None and n_cells:
        open_cell = d.next_carry.cell = CellCarry(seen=_seen_tokens(run_cell, run_token, n_cells - 1, carried))
    d.cell_tokens = np.bincount(run_cell, minlength=n_cells).astype(np.int32)
    lengths = np.diff(np.append(run_starts, acc_rows.size))
    top_k = d.meta.top_k
    d.state.errors.reach(Check.TOP_K)
    if top_k is not None and acc_rows.size:
        bad = np.flatnonzero(lengths != top_k)
        if bad.size:
            r = int(acc_rows[run_starts[bad[0]]])
            d.fail_at(Check.TOP_K, r, f"token {token[r]} of pass {d.pass_[r]} routes to {int(lengths[bad[0]])} "
                                      f"experts at layer {d.layer[r]}; top-k is {top_k}")
    d.state.errors.reach(Check.EXPERT_REPEAT)
    acc_expert = d.expert if d.all_access else d.expert[acc_rows]
    repeat = first_repeat_in_groups(run_starts, acc_expert)
    if repeat is not None:
        r = int(acc_rows[repeat])
        d.fail_at(Check.EXPERT_REPEAT, r, f"field 'expert': {d.expert[r]} appears twice for token "
                                          f"{token[r]} at layer {d.layer[r]}")
    # a cell's end: the token after its last run. A closed pass's cells end at its last token;
    # an open pass's are checked against their own end here and against the pass's when it closes
    cell_end = np.full(n_cells, -1, dtype=np.int64)  # -1: a cell without runs (an empty cell)
    if run_starts.size:
        last_run = np.flatnonzero(np.append(run_cell[1:] != run_cell[:-1], True))
        cell_end[run_cell[last_run]] = run_token[last_run] + 1
    ends = d.n_tok[d.cell_lpass].astype(np.int64)
    if d.open_end and d.n_passes:
        open_cells = d.cell_lpass == d.n_passes - 1
        ends[open_cells] = cell_end[open_cells]
    canonical = canonical_runs(run_starts, acc_cell, acc_token, n_cells, ends)
    if canonical and carried is not None and run_starts.size:
        # the cell's runs go on from where the earlier chunk's stopped, with the same length
        canonical = int(run_token[0]) == carried.end and int(lengths[0]) == carried.run_length
    if open_cell is not None:
        open_cell.end = int(cell_end[n_cells - 1])
        first_of_last = int(np.searchsorted(run_cell, n_cells - 1))
        open_cell.run_length = carried.run_length if carried is not None and n_cells == 1 else int(lengths[first_of_last])
    d.cell_end, d.canonical = cell_end, canonical
    d.acc_token, d.acc_expert = acc_token, acc_expert


def _first_token_repeat(run_cell: np.ndarray, run_token: np.ndarray, carried_seen: np.ndarray | None) -> int | None:
    """The first run (in row order) whose token already had a run in its cell, or None. Cell 0's
    earlier runs, when it began in an earlier chunk, are `carried_seen` (bool per token)."""
    first = None
    if run_cell.size:
        group_starts = np.flatnonzero(np.diff(run_cell, prepend=-1) != 0)
        first = first_repeat_in_groups(group_starts, run_token)
    if carried_seen is not None and run_cell.size:
        in_first = run_cell == 0
        tokens = run_token[in_first]
        inside = tokens < carried_seen.size
        again = np.flatnonzero(inside & carried_seen[np.where(inside, tokens, 0)])
        if again.size and (first is None or int(again[0]) < first):
            first = int(again[0])  # cell 0's runs come first: its run index is the chunk's
    return first


def _seen_tokens(run_cell: np.ndarray, run_token: np.ndarray, cell: int, carried: CellCarry | None) -> np.ndarray:
    """Bool per token index: the tokens with a run in `cell` (the chunk's last), and, if that is the
    cell the chunk continued, in the earlier chunks too (that array is updated in place, grown by
    a quarter when too short: a long cell costs a byte per token once, not a copy per chunk)."""
    tokens = run_token[run_cell == cell]
    seen = carried.seen if carried is not None and cell == 0 else np.zeros(0, dtype=bool)
    size = int(tokens.max()) + 1 if tokens.size else 0
    if size > seen.size:
        grown = np.zeros(max(size, seen.size * 5 // 4), dtype=bool)
        grown[:seen.size] = seen
        seen = grown
    seen[tokens] = True
    return seen
