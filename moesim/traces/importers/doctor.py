"""The trace doctor: signs that a trace was imported wrong, each with what to pass to fix it.

A router log can load as a perfectly valid trace and still be wrong: rows split into passes by
row order (a layer-major log becomes one-layer passes), a batch index taken for the position, a
warm-up pass left in, layers that were never logged kept as empty layers, 1-byte placeholder
sizes. Replays of such traces give confident, wrong numbers (README "Importing router logs").
`diagnose` looks for each sign with a few numpy reductions (cheap on 10 M accesses);
`moesim traces validate` lists the findings and every command that reads a trace prints them as
one-line warnings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.trace import Trace

SIZE_FIX = ("give real sizes with --option expert_bytes=SIZE (e.g. '3 MiB') or --option model=NAME "
            "(a catalog model)")
WARMUP_RATIO = 4  # a first pass this many times larger than any other multi-token pass
WARMUP_RATIO_ORPHAN = 2  # ... or this many times larger when its requests never run again


@dataclass(frozen=True)
class Finding:
    code: str
    message: str


def has_placeholder_sizes(trace: Trace) -> bool:
    return bool(trace.meta.extra.get("object_bytes_unknown"))


def refuse_placeholder_sizes(trace: Trace, what: str, where: str) -> None:
    """UserError when `what` (a byte capacity, a timed run) needs object sizes the trace lacks."""
    if has_placeholder_sizes(trace):
        raise UserError(f"{what} needs object sizes, and this trace has 1-byte placeholders: {SIZE_FIX} "
                        f"(for a converted .parquet: --option expert_bytes=SIZE), or give the capacity in slots "
                        f"(e.g. 51slots)", where)


def diagnose(trace: Trace) -> list[Finding]:
    out: list[Finding] = []
    if trace.n_passes == 0:
        return out
    split = _one_layer_passes(trace)
    if split:
        out.append(split)
    else:
        repeated = _repeated_tokens(trace)
        if repeated:
            out.append(repeated)
    for check in (_empty_layers, _placeholder, _warmup, _phase_fit):
        finding = check(trace)
        if finding:
            out.append(finding)
    return out


def _layer_name(trace: Trace, layer: int) -> int:
    ids = trace.meta.layer_ids
    return int(ids[layer]) if ids else int(layer)


def _one_layer_passes(trace: Trace) -> Finding | None:
    cells = np.diff(trace.pass_cell_offsets)
    with_cells = cells > 0
    layers = np.unique(trace.cell_layer[np.diff(trace.cell_offsets) > 0])
    if layers.size < 2 or not with_cells.any():
        return None
    single = int((cells[with_cells] == 1).sum())
    if single * 2 <= int(with_cells.sum()):
        return None
    return Finding("one-layer-passes",
                   f"{single} of {int(with_cells.sum())} passes hold a single layer's routing although the trace "
                   f"has {layers.size} layers: the rows were split into passes by their order; pass --pass-by token "
                   f"(one pass per token), --pass-by reset:COLUMN (a batch index that restarts) or --pass-by "
                   f"column:COLUMN (a step id)")


def _repeated_tokens(trace: Trace) -> Finding | None:
    n_tok = trace.token_request.shape[0]
    if n_tok < 2 or trace.n_passes < 2:  # a key in several passes needs two passes
        return None
    token_pass = np.repeat(np.arange(trace.n_passes), np.diff(trace.pass_token_offsets))
    # one int64 per (request, position), in the same order: a 1-D unique, not a row-wise one
    # (np.unique(axis=1) copied and sorted ~70 bytes per token: 1 GB on a 7.5 M-token prompt)
    keys = trace.token_request.astype(np.int64) * 2**32 + (trace.token_position.astype(np.int64) + 2**31)
    _, key_id = np.unique(keys, return_inverse=True)
    del keys
    key_id = key_id.reshape(-1)
    pairs = np.unique(key_id * np.int64(trace.n_passes) + token_pass)
    passes_per_key = np.bincount(pairs // trace.n_passes)
    repeated = int((passes_per_key > 1).sum())
    if repeated * 10 <= passes_per_key.size or repeated < 2:
        return None
    return Finding("repeated-positions",
                   f"{repeated} of {passes_per_key.size} tokens (request, position) appear in several passes (up to "
                   f"{int(passes_per_key.max())}): the position column restarts (a batch index?) or requests are "
                   f"missing; leave position out of --map so positions are counted per request, name the request "
                   f"column, and pass --pass-by reset:COLUMN or column:COLUMN")


def _empty_layers(trace: Trace) -> Finding | None:
    held = np.zeros(trace.meta.n_layers, dtype=bool)
    held[trace.cell_layer[np.diff(trace.cell_offsets) > 0]] = True
    empty = np.flatnonzero(~held)
    if not empty.size:
        return None
    names = [_layer_name(trace, int(i)) for i in empty[:8]]
    more = f" and {empty.size - 8} more" if empty.size > 8 else ""
    return Finding("empty-layers",
                   f"{empty.size} of {trace.meta.n_layers} layers hold no routing (layers {names}{more}): drop "
                   f"--option n_layers (only logged layers are kept) or list the logged ones with --option "
                   f"layer_ids=...; capacities in % count only the layers with routing")


def _placeholder(trace: Trace) -> Finding | None:
    if not has_placeholder_sizes(trace):
        return None
    return Finding("placeholder-sizes",
                   f"object sizes are 1-byte placeholders (the source gives none): {SIZE_FIX}; byte and % "
                   f"capacities and timed runs are refused, slot capacities (e.g. 51slots) work")


def _warmup(trace: Trace) -> Finding | None:
    tokens = np.diff(trace.pass_token_offsets)
    if tokens.size < 2:
        return None
    first, rest = int(tokens[0]), tokens[1:]
    multi = rest[rest > 1]
    first_requests = np.unique(trace.token_request[: trace.pass_token_offsets[1]])
    orphan = not np.isin(first_requests, trace.token_request[trace.pass_token_offsets[1]:]).any()
    big = (multi.size and first >= WARMUP_RATIO * int(multi.max())) or (
        orphan and first >= WARMUP_RATIO_ORPHAN * int(rest.max()) and first > 1)
    if not big:
        return None
    ratio = first / max(int(rest.max()), 1)
    return Finding("warm-up",
                   f"the first pass holds {first} tokens, {ratio:.1f}x any other pass"
                   + (", and its requests never run again" if orphan else "")
                   + ": a warm-up or profiling pass? pass --skip passes:1 (or --skip rows:N / --drop COLUMN=VALUE)")


def _phase_fit(trace: Trace) -> Finding | None:
    tokens = np.diff(trace.pass_token_offsets)
    decode = trace.pass_phase == DECODE
    crowded = np.zeros(trace.n_passes, dtype=bool)
    if decode.any():  # distinct requests per decode pass (only decode passes can be crowded)
        token_pass = np.repeat(np.arange(trace.n_passes), tokens)
        on_decode = decode[token_pass]
        token_pass, request = token_pass[on_decode], trace.token_request[on_decode]
        width = int(request.max(initial=0)) + 1
        pairs = np.unique(token_pass.astype(np.int64) * width + request)
        requests = np.bincount(pairs // width, minlength=trace.n_passes)
        crowded = decode & (tokens > requests)
    if crowded.sum() * 10 > max(int(decode.sum()), 1) and crowded.any():
        return Finding("phase-fit",
                       f"{int(crowded.sum())} of {int(decode.sum())} decode passes hold several tokens of one "
                       f"request (a prompt marked decode?): give the phase with --map phase=COLUMN, --option "
                       f"prompt_len=N or --option phase=prefill")
    prefill = trace.pass_phase == PREFILL
    if not prefill.any() and trace.n_passes > 1 and (tokens == 1).all() and (trace.token_position == 0).any():
        return Finding("phase-fit",
                       f"all {trace.n_passes} passes hold one token and none is prefill, although requests start "
                       f"at position 0: each prompt was split into one-token passes (the log gives no phase); "
                       f"pass --option prompt_len=N or --map phase=COLUMN so that a prompt is one prefill pass")
    lone = prefill & (tokens == 1)
    if int(prefill.sum()) >= 3 and lone.sum() * 2 > prefill.sum():
        return Finding("phase-fit",
                       f"{int(lone.sum())} of {int(prefill.sum())} prefill passes hold one token each (decode steps "
                       f"marked prefill?): give the phase with --map phase=COLUMN or --option phase=decode, or "
                       f"group a prompt into one pass with --pass-by prompt")
    return None
