"""Generic CSV / TSV / JSONL / Parquet routing logs with a column map: import a logger's output without code.

A row is one token at one layer with its expert ids (a list in one column, e.g. "[3, 17]" or
"3;17" or "3 17" in CSV, a JSON list in JSONL) or one expert per row (rows of the same token and
layer are merged, in file order). Field names, filters and request ids: log_columns.py; how rows
form passes and phases whatever their order (--pass-by): pass_rules.py.

Input: one file, a folder of them, or a wildcard ('logs/moe_layer*.jsonl'). Several files are
one trace: one file per layer (the layer from `--layer-from-filename 'moe_layer{layer}'`, each
file's meta line `layer`, or a layer column holding one layer per file), whose rows must name the
same tokens, or one file per request (`request_from_filename`, else each file is its own request
when no request column says).

JSONL may start with a meta line, an object without the experts field, carrying n_layers,
n_experts, top_k, expert_bytes (bytes, or text with a unit, one value or one per layer),
dense_bytes, model, layer_ids, layer, in moesim's spelling or common others (model_id,
num_experts, n_routed_experts, layers_logged, num_experts_per_tok; log_read.META_ALIASES). The
same can be given as options (they must agree). Only the layers that appear (or are listed) are
trace layers, their model numbers kept in meta.layer_ids; unset counts are inferred (largest
id + 1), top_k from the rows when every token has the same number of experts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.log_columns import FIELDS, parse_column_map, resolve_columns
from moesim.traces.importers.log_import import ROW_OPTIONS, FileFacts, frames_to_rows, pass_options, rows_to_trace
from moesim.traces.importers.log_read import EXTENSIONS, expand_inputs, filename_value, has_wildcard, read_log
from moesim.traces.importers.options import Options
from moesim.traces.format.trace import Trace

NAME = "generic"
SUMMARY = ("CSV, TSV, JSONL or Parquet routing log read through a column map (--map FIELD=COLUMN,...); "
           "one file, a folder or a wildcard (one file per layer or per request)")
OPTIONS = {
    "column_map": "FIELD=COLUMN pairs, comma-separated (the CLI's --map); fields: request, position, layer, "
                  "experts, weights, phase, pass, ann_<name>",
    **ROW_OPTIONS,
}
MERGED_META = ("n_layers", "n_experts", "top_k", "expert_bytes", "dense_bytes", "model", "layer_ids")
MANY_FILES = True  # a folder or a wildcard of files is one trace


def sniff(path: Path) -> bool:
    if path.is_dir():
        try:
            return any(p.is_file() and p.suffix.lower() in EXTENSIONS for p in path.iterdir())
        except OSError:
            return False
    if not path.exists() and has_wildcard(str(path)):
        return True
    return path.is_file() and path.suffix.lower() in EXTENSIONS


def load(path: Path, options: Options) -> Trace:
    column_map = parse_column_map(options.raw("column_map"))
    paths = expand_inputs(path)
    experts_keys = (column_map["experts"],) if "experts" in column_map else FIELDS["experts"]
    files = [read_log(p, experts_keys) for p in paths]
    meta_line = _merged_meta(files)
    facts = _file_facts(files, options)
    per_layer = any(f.layer is not None for f in facts) or _one_layer_each(files, column_map)
    if len(files) > 1 and not per_layer and "request" not in column_map and not any(
            f.request is not None for f in facts) and not any(n in files[0].frame.columns for n in FIELDS["request"]):
        facts = [FileFacts(request=f.name) for f in files]  # one file per request
    first = files[0].frame.assign(**({"__layer__": 0} if per_layer else {}),
                                  **({"__request__": ""} if facts[0].request is not None else {}))
    if per_layer and "layer" not in column_map and not any(n in first.columns for n in FIELDS["layer"]):
        column_map["layer"] = "__layer__"
    if facts[0].request is not None and "request" not in column_map:
        column_map["request"] = "__request__"
    columns = resolve_columns(first, column_map, str(paths[0]), required=("layer", "experts"))
    rule, _, _ = pass_options(options, columns)
    if rule.column is not None and columns.get("position") == rule.column and "position" not in column_map:
        del columns["position"]  # a step or batch index names the pass, not the position: count positions
    collected = frames_to_rows(files, facts, columns, options, rule)
    shown = {k: v for k, v in columns.items() if not v.startswith("__")}
    return rows_to_trace(collected, options, columns, meta_line, NAME, paths, per_layer_files=per_layer,
                         more_provenance={"column_map": {k: shown[k] for k in sorted(shown)}})


def _one_layer_each(files: list, column_map: dict[str, str]) -> bool:
    """Several files whose layer columns each hold one layer, a different one per file."""
    if len(files) < 2:
        return False
    names = (column_map["layer"],) if "layer" in column_map else FIELDS["layer"]
    layers = []
    for f in files:
        column = next((n for n in names if n in f.frame.columns), None)
        if column is None:
            return False
        values = f.frame[column].dropna().unique()
        if len(values) != 1:
            return False
        layers.append(str(values[0]))
    return len(set(layers)) == len(layers)


def _merged_meta(files: list) -> dict[str, Any]:
    """The files' meta lines as one: every file that gives a key must give the same value."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for f in files:
        where = f"{f.name}: line {f.meta.get('_line', 1)}"
        for key in MERGED_META:
            if key not in f.meta:
                continue
            if key in merged and merged[key] != f.meta[key]:
                raise UserError(f"meta field '{key}' is {f.meta[key]!r} here but {merged[key]!r} in {origin[key]}",
                                where)
            merged.setdefault(key, f.meta[key])
            origin.setdefault(key, f.name)
        if "_unknown" in f.meta:
            merged.setdefault("_unknown", f.meta["_unknown"])
    if files and "_line" in files[0].meta:
        merged["_line"] = files[0].meta["_line"]
    return merged


def _file_facts(files: list, options: Options) -> list[FileFacts]:
    layer_pattern = options.text("layer_from_filename")
    request_pattern = options.text("request_from_filename")
    facts = []
    for f in files:
        layer = f.meta.get("layer")
        if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool) or layer < 0):
            raise UserError(f"meta field 'layer' must be a layer number, got {layer!r}",
                            f"{f.name}: line {f.meta.get('_line', 1)}")
        if layer_pattern is not None:
            named = int(filename_value(layer_pattern, f.name, "layer", "--layer-from-filename"))
            if layer is not None and layer != named:
                raise UserError(f"meta line says layer {layer} but the file name says {named}", f.name)
            layer = named
        request = None
        if request_pattern is not None:
            request = str(filename_value(request_pattern, f.name, "request", "--option request_from_filename"))
        facts.append(FileFacts(layer=layer, request=request))
    if len(files) > 1 and any(f.layer is not None for f in facts) and any(f.layer is None for f in facts):
        missing = files[[f.layer is None for f in facts].index(True)].name
        raise UserError("no layer for this file (others have one from their name or meta line)", missing)
    return facts


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    return [
        Example.file("csv", "t.csv", "req,position,layer,experts,weights,phase\n0,0,0,1;2,0.5;0.5,prefill\n"
                     "0,0,1,3;0,0.9;0.1,prefill\n0,1,0,2;1,0.5;0.5,decode\n0,1,1,0;3,0.6;0.4,decode\n"),
        Example.file("jsonl", "t.jsonl", '{"n_experts": 4, "top_k": 2, "expert_bytes": "1 KiB"}\n'
                     '{"position": 0, "layer": 0, "experts": [1, 2], "phase": "prefill"}\n'
                     '{"position": 0, "layer": 1, "experts": [3, 0], "phase": "prefill"}\n'
                     '{"position": 1, "layer": 0, "experts": [0, 2], "phase": "decode"}\n'),
    ]
