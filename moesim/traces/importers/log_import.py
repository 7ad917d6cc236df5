"""The shared path of every router-log importer: frames -> LogRows -> passes -> Trace.

generic.py (CSV / JSONL / Parquet with a column map), megatron.py, moecap.py and
activation_csv.py each turn their files into frames with known columns; this module filters the
rows, maps text request ids to integers, groups rows into passes (moesim.traces.importers.pass_rules),
keeps only the layers the log holds (their model numbers in meta.layer_ids), checks that files
holding one layer each agree on the tokens, and builds the validated Trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.importers import log_columns as lc
from moesim.traces.importers.assemble import Routes, assemble, first_appearance_ids
from moesim.traces.importers.common import object_bytes, provenance, sha256_of
from moesim.traces.importers.log_read import LogFile
from moesim.traces.importers.options import Options, parse_size
from moesim.traces.importers.pass_rules import LogRows, PassRule, PhaseRule, group_rows, parse_pass_rule
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import TraceMeta

LAYER_MAX = int(np.iinfo(np.int16).max)
ROW_OPTIONS = {
    "pass_by": "how rows form passes (the CLI's --pass-by): prompt (default: a request's prompt is one prefill "
               "pass, each decode token one pass), token, column:NAME (a step or batch id), reset:NAME (a batch "
               "index that restarts every forward pass)",
    "phase": "phase of every row when no column gives it: prefill or decode (default: the first pass of a "
             "request is prefill when it holds more than one of its tokens)",
    "prompt_len": "positions below this are prompt (prefill) tokens when no column gives the phase",
    "skip_rows": "drop each file's first N rows (the CLI's --skip rows:N)",
    "skip_passes": "drop the first N passes, e.g. a warm-up (the CLI's --skip passes:N)",
    "where": "keep rows whose COLUMN equals VALUE: COLUMN=VALUE (the CLI's --where, repeatable)",
    "drop": "drop rows whose COLUMN equals VALUE: COLUMN=VALUE (the CLI's --drop, repeatable)",
    "range": "keep rows with LO <= COLUMN <= HI: COLUMN=LO:HI, or COLUMN=LO..HI for times (the CLI's --range, "
             "repeatable)",
    "layer_from_filename": "one file per layer: the layer in each file's name, e.g. 'moe_layer{layer}'",
    "request_from_filename": "one file per request: the request in each file's name, e.g. 'req{request}'",
    "layer_ids": "the model layer numbers the log holds, comma-separated (default: meta line, else the layers "
                 "that appear; layers that never appear are left out)",
    "n_layers": "MoE layers: keep layers 0..N-1 even where the log has no rows (default: only the layers logged)",
    "n_experts": "experts per layer (default: meta line, else largest id + 1)",
    "top_k": "experts per token (default: meta line, else inferred when constant)",
    "expert_bytes": "bytes per expert: one size, or one per trace layer (e.g. '3 MiB'); default: meta line, else "
                    "the model's catalog entry",
    "model": "model name to record (a catalog name such as qwen3-30b-a3b also gives the expert size)",
}


@dataclass
class FileFacts:
    """What a file's name or meta line says about all its rows."""

    layer: int | None = None
    request: str | None = None


@dataclass
class Collected:
    """Rows plus what the provenance should say about how they were read."""

    rows: LogRows
    request_ids: dict[str, int] | None
    facts: dict[str, Any] = field(default_factory=dict)


def frames_to_rows(files: list[LogFile], facts: list[FileFacts], columns: dict[str, str], options: Options,
                   rule: PassRule) -> Collected:
    """Concatenate the files' frames, apply the filters, read the fields (columns: field -> column)."""
    skip_rows = options.int("skip_rows", 0) or 0
    parts, lines, file_ix = [], [], []
    for i, f in enumerate(files):
        frame = f.frame.iloc[skip_rows:].reset_index(drop=True)
        if facts[i].layer is not None:
            frame = frame.assign(__layer__=facts[i].layer)
        if facts[i].request is not None:
            frame = frame.assign(__request__=facts[i].request)
        parts.append(frame)
        lines.append(f.lines[skip_rows:])
        file_ix.append(np.full(len(frame), i, dtype=np.int64))
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True, sort=False)
    line = np.concatenate(lines)
    file = np.concatenate(file_ix)
    keep = lc.filter_mask(frame, options.raw("where"), options.raw("drop"), options.raw("range"))
    if not keep.all():
        frame, line, file = frame.loc[keep].reset_index(drop=True), line[keep], file[keep]
    names = [f.name for f in files]
    word = files[0].line_word
    if len(frame) == 0:
        raise UserError("no routing rows left after --skip/--where/--drop/--range", names[0])

    def at(r: int) -> str:
        return f"{names[int(file[r])]}: {word} {int(line[r])}"

    def col(field_name: str) -> pd.Series:
        return frame[columns[field_name]]

    n = len(frame)
    layer = lc.integers(col("layer"), "layer", at)
    if "__layer__" in frame.columns and columns["layer"] != "__layer__":
        differ = np.flatnonzero(layer != frame["__layer__"].to_numpy(dtype=np.int64))
        if differ.size:
            r = int(differ[0])
            raise UserError(f"field 'layer': {int(layer[r])} but the file name / meta line says layer "
                            f"{int(frame['__layer__'].iloc[r])}", at(r))
    bad = np.flatnonzero((layer < 0) | (layer > LAYER_MAX))
    if bad.size:
        r = int(bad[0])
        raise UserError(f"field 'layer': {int(layer[r])} outside 0..{LAYER_MAX}", at(r))
    request_ids = None
    if "request" in columns:
        request, request_ids = lc.ids_or_codes(col("request"), "request", at)
    else:
        request = np.zeros(n, dtype=np.int64)
    position = lc.integers(col("position"), "position", at) if "position" in columns else None
    phase = lc.phases(col("phase"), at) if "phase" in columns else None
    rule_key = None
    if rule.kind in ("column", "reset"):
        assert rule.column is not None
        if rule.column not in frame.columns:
            raise UserError(f"no column {rule.column!r} (columns: {', '.join(map(str, frame.columns))[:200]})",
                            "--pass-by")
        rule_key, _ = lc.ids_or_codes(frame[rule.column], rule.column, at)
    offsets, experts = lc.lists(col("experts"), "experts", at, integer=True)
    weights = None
    if "weights" in columns:
        w_offsets, weights = lc.lists(col("weights"), "weights", at, integer=False)
        bad = np.flatnonzero(np.diff(w_offsets) != np.diff(offsets))
        if bad.size:
            r = int(bad[0])
            raise UserError(f"{int(np.diff(w_offsets)[r])} weights for {int(np.diff(offsets)[r])} experts", at(r))
    counts = np.diff(offsets)
    annotations = {name[4:]: np.repeat(lc.annotation(frame[c], name, at), counts)
                   for name, c in columns.items() if name.startswith("ann_")}
    rows = LogRows(files=names, file=file, line=line, request=request, position=position, layer=layer,
                   phase=phase, rule_key=rule_key, expert_offsets=offsets, expert=experts, weight=weights,
                   annotations=annotations, line_word=word)
    return Collected(rows, request_ids)


def pass_options(options: Options, columns: dict[str, str]) -> tuple[PassRule, PhaseRule, int]:
    """The pass rule (--pass-by; else a mapped or recognised pass column; else prompt), phases, skip."""
    if options.has("pass_by") or "pass" not in columns:
        rule = parse_pass_rule(options.text("pass_by"), "--pass-by")
    else:
        rule = PassRule("column", columns["pass"])
    fixed = options.text("phase", None, choices=("prefill", "decode"))
    phases = PhaseRule(fixed=None if fixed is None else lc.PHASE_WORDS[fixed],
                       prompt_len=options.int("prompt_len", None, minimum=1))
    return rule, phases, options.int("skip_passes", 0) or 0


def check_single_rows(routes: Routes, request_names: list[str] | None) -> None:
    """A token whose expert lists sit on several rows of one layer and pass is a position that repeats."""
    counts = np.diff(routes.expert_offsets)
    pass_id = np.cumsum(routes.new_pass) - 1
    group, _ = first_appearance_ids(pass_id, routes.request, routes.position, routes.layer)
    seen = np.zeros(group.shape[0], dtype=bool)
    order = np.argsort(group, kind="stable")
    seen[order[1:]] = group[order[1:]] == group[order[:-1]]
    repeat = np.flatnonzero(seen & (counts > 1))
    if not repeat.size:
        return
    r = int(repeat[0])
    req = int(routes.request[r])
    where = f"{routes.files[int(routes.source[r])]}: line {int(routes.line[r])}" if routes.files else "line"
    raise UserError(f"request {request_names[req] if request_names else req} position {int(routes.position[r])} "
                    f"at layer {int(routes.layer[r])} has a second row of experts in the same pass: positions repeat "
                    f"(a batch index that restarts?); pass --pass-by reset:COLUMN (or column:COLUMN), and leave "
                    f"position out of --map so positions are counted per request", where)


def check_aligned(routes: Routes, request_names: list[str] | None) -> None:
    """Files that each hold one layer must hold the same tokens in the same passes."""
    assert routes.source is not None and routes.files is not None
    pass_id = np.cumsum(routes.new_pass) - 1
    key, n_keys = first_appearance_ids(pass_id, routes.request, routes.position)
    present = np.zeros((n_keys, len(routes.files)), dtype=bool)
    present[key, routes.source] = True
    bad = np.flatnonzero(~present.all(axis=1))
    if not bad.size:
        return
    k = int(bad[0])
    row = int(np.flatnonzero(key == k)[0])
    missing = routes.files[int(np.flatnonzero(~present[k])[0])]
    req = int(routes.request[row])
    req_text = request_names[req] if request_names else str(req)
    raise UserError(f"request {req_text} position {int(routes.position[row])} in pass {int(pass_id[row])} has no "
                    f"row in {missing} (files that hold one layer each must hold the same tokens; "
                    f"check --pass-by and --skip)",
                    f"{routes.files[int(routes.source[row])]}: line {int(routes.line[row])}")


def rows_to_trace(collected: Collected, options: Options, columns: dict[str, str], meta_line: dict[str, Any],
                  fmt: str, paths: list[Path], per_layer_files: bool = False,
                  more_provenance: dict[str, Any] | None = None,
                  lossy: str | None = None) -> Trace:
    rows = collected.rows
    rule, phases, skip_passes = pass_options(options, columns)
    routes = group_rows(rows, rule, phases, skip_passes)
    names = None
    if collected.request_ids is not None:
        # number the requests that are left (after --skip passes) 0.. by first appearance
        by_code = {i: text for text, i in collected.request_ids.items()}
        codes, first = np.unique(routes.request, return_index=True)
        kept = codes[np.argsort(first, kind="stable")]
        remap = np.zeros(int(codes.max()) + 1, dtype=np.int64)
        remap[kept] = np.arange(kept.size)
        routes.request = remap[routes.request]
        names = [by_code[int(c)] for c in kept]
        collected.request_ids = {text: i for i, text in enumerate(names)}
    check_single_rows(routes, names)
    if per_layer_files and len(paths) > 1:
        check_aligned(routes, names)
    where = rows.files[0]
    line_where = f"{where}: line {meta_line.get('_line', 1)}"
    extra: dict[str, Any] = {}
    n_layers, layer_ids, routes.layer = _layers(routes, options, meta_line, line_where, extra)
    n_experts = _pick(options, meta_line, "n_experts", line_where, extra,
                      int(routes.expert.max()) + 1 if routes.expert.size else 1)
    top_k = _pick(options, meta_line, "top_k", line_where, extra, None)
    assert n_experts is not None
    if n_experts > np.iinfo(np.int32).max:
        raise UserError(f"{n_experts} experts is more than a trace holds", where)
    model = options.text("model") or meta_line.get("model")
    if model is not None and not isinstance(model, str):
        raise UserError("meta field 'model' must be text", line_where)
    sizes, size_note = object_bytes_for(options, meta_line, model, n_layers, n_experts, layer_ids, line_where, extra)
    dense = None
    if meta_line.get("dense_bytes") is not None:
        dense = sizes_per_layer(meta_line["dense_bytes"], n_layers, layer_ids,
                                f"{line_where}: meta field 'dense_bytes'")
    if "_unknown" in meta_line:
        extra["meta_line"] = meta_line["_unknown"]
    if lossy:
        extra["lossy"] = lossy
    prov_more: dict[str, Any] = dict(more_provenance or {})
    prov_more["pass_by"] = rule.text()
    for key in ("skip_rows", "skip_passes", "where", "drop", "range", "phase", "prompt_len"):
        if options.has(key):
            prov_more[key] = options.raw(key)
    if collected.request_ids is not None:
        prov_more["request_ids"] = collected.request_ids
    if len(paths) > 1:
        prov_more["source_files"] = [p.name for p in paths]
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=sizes, model=model,
                     dense_bytes=dense, layer_ids=layer_ids,
                     provenance=provenance(fmt, paths[0], sha256_of(paths), object_bytes_from=size_note, **prov_more),
                     extra=extra)
    if len(paths) > 1:
        meta.provenance["source_file"] = paths[0].parent.name or paths[0].name
    return assemble(routes, meta, where, line_word=rows.line_word, infer_top_k=top_k is None)


def _pick(options: Options, meta_line: dict[str, Any], key: str, line_where: str, extra: dict[str, Any],
          from_rows: int | None) -> int | None:
    opt = options.int(key, minimum=1)
    line = meta_line.get(key)
    if line is not None and (not isinstance(line, int) or isinstance(line, bool) or line < 1):
        raise UserError(f"meta field '{key}' must be a positive integer, got {line!r}", line_where)
    if opt is not None and line is not None and opt != line:
        raise UserError(f"--option {key}={opt} disagrees with the meta line's {line}", line_where)
    value = opt if opt is not None else line
    if value is None and from_rows is not None:
        extra[f"{key}_inferred"] = True
        return from_rows
    return value


def _layers(routes: Routes, options: Options, meta_line: dict[str, Any], line_where: str,
            extra: dict[str, Any]) -> tuple[int, list[int] | None, np.ndarray]:
    """(n_layers, layer_ids, trace layer per row): only the logged layers unless n_layers is given."""
    listed = options.int_list("layer_ids")
    if listed is None and meta_line.get("layer_ids") is not None:
        value = meta_line["layer_ids"]
        if not isinstance(value, list) or not value or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= LAYER_MAX for i in value):
            raise UserError("meta field 'layer_ids' (layers_logged) must list layer numbers", line_where)
        listed = value
    layer = routes.layer.astype(np.int64)
    present = np.unique(layer)
    n_given = _pick(options, meta_line, "n_layers", line_where, {}, None)
    if listed is not None:
        if len(set(listed)) != len(listed) or sorted(listed) != list(listed):
            raise UserError(f"layer ids must ascend without repeats, got {listed}", "--option layer_ids")
        if n_given is not None and n_given != len(listed):
            raise UserError(f"n_layers {n_given} but {len(listed)} layer ids", line_where)
        ids = np.asarray(listed, dtype=np.int64)
        if np.isin(present, ids).all():
            mapped = np.searchsorted(ids, layer)
        elif int(present.max()) < len(listed):  # rows already count trace layers 0..n-1
            mapped = layer
        else:
            r = int(np.flatnonzero(~np.isin(layer, ids))[0])
            raise UserError(f"field 'layer': {int(layer[r])} is not among the logged layers {listed}",
                            f"{routes.files[int(routes.source[r])] if routes.files else line_where}: "
                            f"line {int(routes.line[r])}")
        trivial = listed == list(range(len(listed)))
        return len(listed), None if trivial else [int(i) for i in listed], mapped
    if n_given is not None:
        return n_given, None, layer
    extra["layers_from_rows"] = True
    if present.tolist() == list(range(present.size)):
        return int(present.size), None, layer
    return int(present.size), [int(i) for i in present], np.searchsorted(present, layer)


def sizes_per_layer(value: Any, n_layers: int, layer_ids: list[int] | None, where: str) -> list[int]:
    """One size, one per trace layer, or (with layer ids) one per model layer 0..max id."""
    items = value if isinstance(value, list) else [
        p.strip() for p in str(value).split(",") if p.strip()] if isinstance(value, str) else [value]
    sizes = [parse_size(v, where) for v in items]
    if len(sizes) == 1:
        return sizes * n_layers
    if len(sizes) == n_layers:
        return sizes
    if layer_ids is not None and len(sizes) > max(layer_ids):
        return [sizes[i] for i in layer_ids]
    raise UserError(f"gives {len(sizes)} sizes for {n_layers} layers", where)


def object_bytes_for(options: Options, meta_line: dict[str, Any], model: str | None, n_layers: int, n_experts: int,
                     layer_ids: list[int] | None, line_where: str,
                     extra: dict[str, Any]) -> tuple[list[int], str | None]:
    if options.has("expert_bytes"):
        given = sizes_per_layer(options.raw("expert_bytes"), n_layers, layer_ids, "--option expert_bytes")
        if "expert_bytes" in meta_line and given != sizes_per_layer(
                meta_line["expert_bytes"], n_layers, layer_ids, line_where):
            raise UserError("--option expert_bytes disagrees with the meta line", line_where)
        return given, "--option expert_bytes"
    if "expert_bytes" in meta_line:
        return sizes_per_layer(meta_line["expert_bytes"], n_layers, layer_ids,
                               f"{line_where}: meta field 'expert_bytes'"), "meta line"
    return object_bytes(options, model, n_layers, n_experts, extra)
