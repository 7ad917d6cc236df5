"""Rows of a router log grouped into passes by meaning, whatever order the rows come in.

A routing row says: this token (request, position) at this layer chose these experts. Loggers
write rows layer-major (every token of layer 0, then layer 1), token-major, one file per layer,
or batch by batch with an index that restarts; the pass a row belongs to is rarely a column.
`group_rows` decides each row's pass from a rule and sorts the rows into execution order (pass,
then layer, then the order the rows came in), so the layout of the file never changes the trace.

Rules (`--pass-by`, generic importers' option `pass_by`):

    prompt          (default) a request's prompt tokens are one prefill pass, each decode token
                    its own pass; the phase comes from a column, --option prompt_len or
                    --option phase, else every token is decode (one token per pass); passes
                    run request by request (by request id), in position order
    token           one pass per (request, position), in that order
    column:NAME     rows with the same value of column NAME are one pass (a step or batch id);
                    passes run in the order of the values
    reset:NAME      a batch index that restarts: a new pass starts wherever NAME does not
                    increase along one layer's rows; the k-th pass of every layer is pass k

Without a phase column or option, a pass is prefill when it is some request's first pass and
holds more than one of that request's tokens. Without a position column, a token's position is
its number among its request's rows at that layer (each row one token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.traces.importers.assemble import Routes, first_appearance_ids
from moesim.traces.format.trace_meta import DECODE, PREFILL

RULES = ("prompt", "token", "column:NAME", "reset:NAME")


@dataclass(frozen=True)
class PassRule:
    kind: str  # "prompt" | "token" | "column" | "reset"
    column: str | None = None

    def text(self) -> str:
        return self.kind if self.column is None else f"{self.kind}:{self.column}"


def parse_pass_rule(text: str | None, where: str = "--pass-by") -> PassRule:
    if text is None or not str(text).strip():
        return PassRule("prompt")
    kind, sep, column = str(text).strip().partition(":")
    kind = kind.strip().lower()
    if kind in ("prompt", "token") and not sep:
        return PassRule(kind)
    if kind in ("column", "reset") and column.strip():
        return PassRule(kind, column.strip())
    raise UserError(f"unknown rule {text!r}; rules: {', '.join(RULES)}", where)


@dataclass
class LogRows:
    """Routing rows as read from one or more files, before they are grouped into passes.

    Per row: its file (index into `files`) and line, request (already an integer), position
    (None: counted per request and layer), model layer id, phase (None: from a rule), the value of
    the pass-rule column (None for prompt/token rules); experts as offsets into `expert`.
    """

    files: list[str]
    file: np.ndarray
    line: np.ndarray
    request: np.ndarray
    position: np.ndarray | None
    layer: np.ndarray
    phase: np.ndarray | None
    rule_key: np.ndarray | None
    expert_offsets: np.ndarray
    expert: np.ndarray
    weight: np.ndarray | None = None
    annotations: dict[str, np.ndarray] = field(default_factory=dict)
    line_word: str = "line"

    @property
    def n_rows(self) -> int:
        return int(self.layer.shape[0])

    def at(self, row: int) -> str:
        return f"{self.files[int(self.file[row])]}: {self.line_word} {int(self.line[row])}"

    def take(self, keep: np.ndarray) -> "LogRows":
        """The rows where `keep` (bool per row) holds, experts and per-expert columns with them."""
        counts = np.diff(self.expert_offsets)
        per_expert = np.repeat(keep, counts)
        offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(counts[keep], out=offsets[1:])

        def rows(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        return LogRows(
            files=self.files, file=self.file[keep], line=self.line[keep], request=self.request[keep],
            position=rows(self.position), layer=self.layer[keep], phase=rows(self.phase),
            rule_key=rows(self.rule_key), expert_offsets=offsets, expert=self.expert[per_expert],
            weight=None if self.weight is None else self.weight[per_expert],
            annotations={k: v[per_expert] for k, v in self.annotations.items()}, line_word=self.line_word,
        )


@dataclass(frozen=True)
class PhaseRule:
    """Where phases come from when no column gives them: a fixed phase or a prompt length."""

    fixed: int | None = None
    prompt_len: int | None = None


def running_count(*keys: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows share its key (0, 1, 2, ... in row order)."""
    ids, n = first_appearance_ids(*keys)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    start = np.zeros(ids.shape[0], dtype=bool)
    if ids.shape[0]:
        start[0] = True
        start[1:] = sorted_ids[1:] != sorted_ids[:-1]
    idx = np.arange(ids.shape[0], dtype=np.int64)
    group_start = np.maximum.accumulate(np.where(start, idx, 0))
    out = np.empty(ids.shape[0], dtype=np.int64)
    out[order] = idx - group_start
    return out


def dense_rank(*keys: np.ndarray) -> np.ndarray:
    """0.. by the sorted order of the key tuples (equal tuples share a number)."""
    order = np.lexsort(tuple(reversed(keys)))
    new = np.zeros(order.shape[0], dtype=bool)
    if order.shape[0]:
        new[0] = True
    for key in keys:
        k = key[order]
        new[1:] |= k[1:] != k[:-1]
    out = np.empty(order.shape[0], dtype=np.int64)
    out[order] = np.cumsum(new) - 1
    return out


def _pass_ids(rows: LogRows, rule: PassRule, position: np.ndarray, prefill_row: np.ndarray) -> np.ndarray:
    """Pass index per row, 0.. in execution order."""
    if rule.kind in ("token", "prompt"):
        # a decode token's pass is its own; with the prompt rule a prompt token's pass is its
        # request's prefill (key -1). Passes run request by request, each in position order.
        key = np.where(prefill_row, -1, position) if rule.kind == "prompt" else position
        return dense_rank(rows.request, key)
    assert rows.rule_key is not None
    if rule.kind == "column":
        return np.unique(rows.rule_key, return_inverse=True)[1].reshape(-1).astype(np.int64)
    # reset: along each (file, layer) stream a value that does not increase starts a new pass
    stream = first_appearance_ids(rows.file, rows.layer)[0]
    order = np.argsort(stream, kind="stable")
    s, v = stream[order], rows.rule_key[order]
    new = np.ones(order.shape[0], dtype=bool)
    new[1:] = (s[1:] != s[:-1]) | (v[1:] <= v[:-1])
    counter = np.cumsum(new)
    first_of_stream = np.ones(order.shape[0], dtype=bool)
    first_of_stream[1:] = s[1:] != s[:-1]
    base = np.maximum.accumulate(np.where(first_of_stream, counter, 0))
    out = np.empty(order.shape[0], dtype=np.int64)
    out[order] = counter - base
    return out


def _pass_phases(rows: LogRows, pass_id: np.ndarray, n_passes: int, position: np.ndarray,
                 prefill_row: np.ndarray | None) -> np.ndarray:
    """Phase per pass when no column gives it (see the module docstring)."""
    if prefill_row is not None:
        phase = np.full(n_passes, DECODE, dtype=np.int64)
        phase[np.unique(pass_id[prefill_row])] = PREFILL
        return phase
    token, _ = first_appearance_ids(pass_id, rows.request, position)
    first_row = np.unique(token, return_index=True)[1]
    t_pass, t_req = pass_id[first_row], rows.request[first_row]
    group, n_groups = first_appearance_ids(t_pass, t_req)
    tokens_in_group = np.bincount(group, minlength=n_groups)
    g_first = np.unique(group, return_index=True)[1]
    g_pass, g_req = t_pass[g_first], t_req[g_first]
    req_ids, req_of_group = np.unique(g_req, return_inverse=True)
    first_pass = np.full(req_ids.shape[0], np.iinfo(np.int64).max)
    np.minimum.at(first_pass, req_of_group, g_pass)
    opens = (first_pass[req_of_group] == g_pass) & (tokens_in_group > 1)
    phase = np.full(n_passes, DECODE, dtype=np.int64)
    phase[np.unique(g_pass[opens])] = PREFILL
    return phase


def group_rows(rows: LogRows, rule: PassRule, phases: PhaseRule, skip_passes: int = 0) -> Routes:
    """Routes in execution order: passes by `rule`, then layers ascending, then row order."""
    if rows.n_rows == 0:
        raise UserError("no routing rows left", rows.files[0] if rows.files else "trace")
    position = rows.position if rows.position is not None else running_count(rows.request, rows.layer)
    prefill_row: np.ndarray | None = None
    if rows.phase is not None:
        prefill_row = rows.phase == PREFILL
    elif phases.prompt_len is not None:
        prefill_row = position < phases.prompt_len
    elif phases.fixed is not None:
        prefill_row = np.full(rows.n_rows, phases.fixed == PREFILL)
    pass_id = _pass_ids(rows, rule, position, prefill_row if prefill_row is not None
                        else np.zeros(rows.n_rows, dtype=bool))
    if skip_passes:
        keep = pass_id >= skip_passes
        if not keep.any():
            raise UserError(f"--skip passes:{skip_passes} leaves no pass (the log holds {int(pass_id.max()) + 1})",
                            "--skip")
        rows, position, pass_id = rows.take(keep), position[keep], pass_id[keep] - skip_passes
        prefill_row = None if prefill_row is None else prefill_row[keep]
    n_passes = int(pass_id.max()) + 1
    if rows.phase is not None:
        row_phase = rows.phase
    else:
        row_phase = _pass_phases(rows, pass_id, n_passes, position, prefill_row)[pass_id]
    order = np.lexsort((np.arange(rows.n_rows), rows.layer, pass_id))
    counts = np.diff(rows.expert_offsets)[order]
    starts = rows.expert_offsets[:-1][order]
    entry = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
    offsets = np.zeros(order.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    p = pass_id[order]
    new_pass = np.ones(order.shape[0], dtype=bool)
    new_pass[1:] = p[1:] != p[:-1]
    return Routes(
        line=rows.line[order], new_pass=new_pass, phase=row_phase[order], request=rows.request[order],
        position=position[order], layer=rows.layer[order], expert_offsets=offsets, expert=rows.expert[entry],
        weight=None if rows.weight is None else rows.weight[entry],
        annotations={k: v[entry] for k, v in rows.annotations.items()},
        source=rows.file[order], files=rows.files,
    )
