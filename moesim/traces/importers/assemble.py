"""From routing rows in file order to a Trace, with errors that name the source line.

Every text importer reads its file into `Routes`: one row per (token, layer) with that token's
experts (or one expert per row; rows of the same token and layer are merged). `assemble` then
groups rows into passes, cells and tokens:

- a pass starts wherever `new_pass` is set (the importer decides: a change of request or phase, a
  new decode step, an explicit pass column);
- a pass's tokens are its distinct (request, position) pairs, numbered by first appearance;
- a pass's cells are its distinct layers in order of first appearance, so a layer-major prefill
  (all tokens of layer 0, then layer 1) and a token-major log give the same cells;
- inside a cell, a token's experts keep the order the source wrote them, and tokens keep the order
  they first appear in that cell (the order a sequential replay sees).

The checks a user can fail (ids out of range, a token with the wrong number of experts or the same
expert twice) are made here, where the source line is still known; `Trace.validate` runs last as
the net for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.grouping import first_repeat_in_groups
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import TraceMeta, expert_dtype

INT32_MAX = int(np.iinfo(np.int32).max)
FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class Routes:
    """Routing rows in file order. Per row: line, new_pass, phase, request, position, layer;
    the row's experts are expert[expert_offsets[r]:expert_offsets[r+1]] (weights and annotations
    are per expert entry, aligned with `expert`)."""

    line: np.ndarray
    new_pass: np.ndarray
    phase: np.ndarray
    request: np.ndarray
    position: np.ndarray
    layer: np.ndarray
    expert_offsets: np.ndarray
    expert: np.ndarray
    weight: np.ndarray | None = None
    annotations: dict[str, np.ndarray] = field(default_factory=dict)
    source: np.ndarray | None = None  # file index per row when the rows come from several files
    files: list[str] | None = None

    @property
    def n_rows(self) -> int:
        return int(self.layer.shape[0])


def first_appearance_ids(*keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Number the distinct key tuples 0..n-1 in order of first appearance; returns (id per row, n).

    O(rows log rows): one lexsort, no Python loop.
    """
    n = int(keys[0].shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    rows = np.arange(n)
    order = np.lexsort((rows,) + tuple(reversed(keys)))
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for key in keys:
        k = key[order]
        new[1:] |= k[1:] != k[:-1]
    group_sorted = np.cumsum(new) - 1
    first_rows = order[new]
    rank = np.empty(first_rows.size, dtype=np.int64)
    rank[np.argsort(first_rows, kind="stable")] = np.arange(first_rows.size)
    ids = np.empty(n, dtype=np.int64)
    ids[order] = rank[group_sorted]
    return ids, int(first_rows.size)


def first_index_of(ids: np.ndarray, n: int) -> np.ndarray:
    """Index of the first row carrying each id 0..n-1."""
    first = np.full(n, ids.shape[0], dtype=np.int64)
    np.minimum.at(first, ids, np.arange(ids.shape[0], dtype=np.int64))
    return first


def assemble(routes: Routes, meta: TraceMeta, where: str, line_word: str = "line",
             infer_top_k: bool = False) -> Trace:
    """Build and validate a Trace from `routes`; UserError names `where` and the row's line."""
    n = routes.n_rows
    if n == 0:
        raise UserError("no routing rows", where)

    def at(row: int) -> str:
        if routes.files is not None and routes.source is not None:
            return f"{routes.files[int(routes.source[row])]}: {line_word} {int(routes.line[row])}"
        return f"{where}: {line_word} {int(routes.line[row])}"

    counts = np.diff(routes.expert_offsets).astype(np.int64)
    _check_rows(routes, meta, counts, at)

    new_pass = routes.new_pass.astype(bool).copy()
    new_pass[0] = True
    pass_id = np.cumsum(new_pass) - 1
    pass_first = np.flatnonzero(new_pass)
    n_passes = int(pass_first.size)
    phase_changes = np.flatnonzero(routes.phase != routes.phase[pass_first][pass_id])
    if phase_changes.size:
        r = int(phase_changes[0])
        raise UserError(f"field 'phase': {int(routes.phase[r])} differs from the rest of its pass", at(r))

    token_id, n_tokens = first_appearance_ids(pass_id, routes.request, routes.position)
    token_first = first_index_of(token_id, n_tokens)
    token_pass = pass_id[token_first]
    pass_token_offsets = np.zeros(n_passes + 1, dtype=np.int64)
    np.cumsum(np.bincount(token_pass, minlength=n_passes), out=pass_token_offsets[1:])
    token_in_pass = token_id - pass_token_offsets[:-1][pass_id]
    if n_tokens and int(np.diff(pass_token_offsets).max()) > INT32_MAX:
        raise UserError("a pass has more tokens than an int32 can count", where)

    cell_id, n_cells = first_appearance_ids(pass_id, routes.layer)
    cell_first = first_index_of(cell_id, n_cells)
    group_id, n_groups = first_appearance_ids(cell_id, token_id)
    group_first = first_index_of(group_id, n_groups)

    order = np.lexsort((np.arange(n), group_id, cell_id))
    sorted_counts = counts[order]
    entry_row = np.repeat(order, sorted_counts)
    starts = routes.expert_offsets[:-1][order]
    before = np.cumsum(sorted_counts) - sorted_counts
    entry = np.repeat(starts - before, sorted_counts) + np.arange(int(sorted_counts.sum()))

    group_sizes = np.bincount(group_id, weights=counts, minlength=n_groups).astype(np.int64)
    top_k = meta.top_k
    if top_k is None and infer_top_k and n_groups and (group_sizes == group_sizes[0]).all():
        top_k = int(group_sizes[0])
    if top_k is not None:
        bad = np.flatnonzero(group_sizes != top_k)
        if bad.size:
            r = int(group_first[bad[0]])
            raise UserError(
                f"the token at request {int(routes.request[r])}, position {int(routes.position[r])}, "
                f"layer {int(routes.layer[r])} routes to {int(group_sizes[bad[0]])} experts; top-k is {top_k}",
                at(r),
            )
    expert = routes.expert[entry]
    entry_group = group_id[entry_row]
    _check_duplicates(entry_group, expert, entry_row, routes, at)

    cell_pass = pass_id[cell_first]
    pass_cell_offsets = np.zeros(n_passes + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell_pass, minlength=n_passes), out=pass_cell_offsets[1:])
    cell_offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell_id[entry_row], minlength=n_cells), out=cell_offsets[1:])
    cell_tokens = np.bincount(cell_id[group_first], minlength=n_cells).astype(np.int32)

    meta.top_k = top_k
    trace = Trace(
        meta=meta,
        pass_phase=routes.phase[pass_first].astype(np.int8),
        pass_cell_offsets=pass_cell_offsets,
        pass_token_offsets=pass_token_offsets,
        token_request=routes.request[token_first].astype(np.int32),
        token_position=routes.position[token_first].astype(np.int32),
        cell_layer=routes.layer[cell_first].astype(np.int16),
        cell_offsets=cell_offsets,
        cell_tokens=cell_tokens,
        expert=expert.astype(expert_dtype(meta.n_experts)),
        weight=None if routes.weight is None else routes.weight[entry].astype(np.float16),
        annotations={name: values[entry] for name, values in routes.annotations.items()},
        access_token=token_in_pass[entry_row],
    )
    trace.normalize_access_token()
    trace.validate(where)
    return trace


def _check_rows(routes: Routes, meta: TraceMeta, counts: np.ndarray, at) -> None:
    """Ranges of every per-row and per-expert field, naming the first offending line."""

    def first_bad(mask: np.ndarray) -> int | None:
        idx = np.flatnonzero(mask)
        return int(idx[0]) if idx.size else None

    r = first_bad((routes.phase != 0) & (routes.phase != 1))
    if r is not None:
        raise UserError(f"field 'phase': {int(routes.phase[r])} is not 0 (prefill) or 1 (decode)", at(r))
    r = first_bad((routes.layer < 0) | (routes.layer >= meta.n_layers))
    if r is not None:
        raise UserError(f"field 'layer': {int(routes.layer[r])} outside 0..{meta.n_layers - 1}", at(r))
    for name, values in (("request", routes.request), ("position", routes.position)):
        r = first_bad((values < 0) | (values > INT32_MAX))
        if r is not None:
            raise UserError(f"field '{name}': {int(values[r])} outside 0..{INT32_MAX}", at(r))
    r = first_bad(counts == 0)
    if r is not None:
        raise UserError("no expert ids in this row", at(r))
    entry_row = np.repeat(np.arange(routes.n_rows), counts)
    e = first_bad((routes.expert < 0) | (routes.expert >= meta.n_experts))
    if e is not None:
        raise UserError(f"field 'expert': {int(routes.expert[e])} outside 0..{meta.n_experts - 1}",
                        at(int(entry_row[e])))
    if routes.weight is not None:
        e = first_bad(~np.isfinite(routes.weight) | (np.abs(routes.weight) > FLOAT16_MAX))
        if e is not None:
            raise UserError(f"field 'weight': {float(routes.weight[e])!r} is not a finite number within "
                            f"float16 range (weights are kept at float16)", at(int(entry_row[e])))


def _check_duplicates(entry_group: np.ndarray, expert: np.ndarray, entry_row: np.ndarray,
                      routes: Routes, at) -> None:
    """A token routes to each expert at most once per layer (entries are grouped by token here)."""
    if expert.size < 2:
        return
    starts = np.flatnonzero(np.diff(entry_group, prepend=-1) != 0)
    i = first_repeat_in_groups(starts, expert)
    if i is not None:
        r = int(entry_row[i])
        raise UserError(
            f"field 'expert': {int(expert[i])} appears twice for the token at request "
            f"{int(routes.request[r])}, position {int(routes.position[r])}, layer {int(routes.layer[r])}",
            at(r),
        )
