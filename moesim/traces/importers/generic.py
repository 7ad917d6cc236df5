"""Generic CSV / JSONL / Parquet routing logs with a column map: import a logger's output without code.

A row is one token at one layer with its expert ids (a list in one column, e.g. "[3, 17]" or
"3;17" or "3 17" in CSV, a JSON list in JSONL) or one expert per row (rows of the same token and
layer are merged, in file order). Fields and the column names recognised without a map:

    request   request, request_id, seq_id       (default: 0 for every row)
    position  position, token, step, pos        (the token's position in its sequence; required)
    layer     layer, layer_id                   (required)
    experts   experts, expert, expert_ids, topk_ids   (required)
    weights   weights, weight, topk_weights     (optional gate weights, aligned with experts)
    phase     phase: 0/1 or prefill/decode      (default: --option phase, itself default decode)
    pass      pass, pass_id                     (optional: rows of one forward pass share a value)

`column_map` (CLI: --map) names other columns: "layer=lyr,experts=topk_ids,position=tok";
"ann_<name>=<column>" keeps a numeric column as the per-access annotation <name>.
Without a pass column a new pass starts when the request or the phase changes, or when a decode
row's position changes: a prefill is one pass, each decode step one pass. Batched logs (several
requests in one step) need the pass column.

JSONL may start with a meta line, an object without the layer field, carrying n_layers,
n_experts, top_k, expert_bytes (bytes, or text with a unit, one value or one per layer),
dense_bytes, model, layer_ids; the same can be given as options (they must agree). Unset counts are
inferred (largest id + 1), top_k from the rows when every token has the same number of experts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.importers.assemble import Routes, assemble
from moesim.traces.importers.common import integer_column, object_bytes, provenance, read_csv_text, read_text, sha256_of
from moesim.traces.importers.options import Options, parse_size
from moesim.traces.trace import DECODE, PREFILL, Trace, TraceMeta

NAME = "generic"
SUMMARY = "CSV, TSV, JSONL or Parquet routing log read through a column map (--map FIELD=COLUMN,...)"
OPTIONS = {
    "column_map": "FIELD=COLUMN pairs, comma-separated (the CLI's --map); fields: request, position, layer, "
                  "experts, weights, phase, pass, ann_<name>",
    "n_layers": "MoE layers (default: meta line, else largest layer + 1)",
    "n_experts": "experts per layer (default: meta line, else largest id + 1)",
    "top_k": "experts per token (default: meta line, else inferred when constant)",
    "expert_bytes": "bytes per expert: one size or one per layer (e.g. '3 MiB'); default: meta line, else the "
                    "model's catalog entry",
    "model": "model name to record (a catalog name such as qwen3-30b-a3b also gives the expert size)",
    "phase": "phase of every row when no column gives it: prefill or decode (default decode)",
}
FIELDS: dict[str, tuple[str, ...]] = {
    "request": ("request", "request_id", "seq_id"),
    "position": ("position", "token", "step", "pos"),
    "layer": ("layer", "layer_id"),
    "experts": ("experts", "expert", "expert_ids", "topk_ids"),
    "weights": ("weights", "weight", "topk_weights"),
    "phase": ("phase",),
    "pass": ("pass", "pass_id"),
}
FIELD_ALIASES = {alias: field for field, names in FIELDS.items() for alias in names}
META_KEYS = ("n_layers", "n_experts", "top_k", "expert_bytes", "dense_bytes", "model", "layer_ids")
EXTENSIONS = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
PHASE_WORDS = {"prefill": PREFILL, "decode": DECODE, "0": PREFILL, "1": DECODE}


def sniff(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS


def parse_column_map(text: Any) -> dict[str, str]:
    """"layer=lyr,experts=ids" (or a dict) -> {"layer": "lyr", "experts": "ids"}; fields by canonical name."""
    if text is None:
        return {}
    if isinstance(text, dict):
        pairs = [(str(k), str(v)) for k, v in text.items()]
    elif isinstance(text, str):
        pairs = []
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise UserError(f"expected FIELD=COLUMN, got {item!r}", "--map")
            pairs.append((key.strip(), value.strip()))
    else:
        raise UserError(f"expected FIELD=COLUMN pairs, got {text!r}", "--map")
    out: dict[str, str] = {}
    for key, value in pairs:
        field = key if key.startswith("ann_") and len(key) > 4 else FIELD_ALIASES.get(key)
        if field is None:
            raise UserError(f"unknown field {key!r}; fields: {', '.join(FIELDS)}, ann_<name>", "--map")
        if field in out:
            raise UserError(f"field {field!r} is mapped twice", "--map")
        twin = next((f for f, c in out.items() if c == value), None)
        if twin is not None:  # one column cannot be two fields: one of them would be read wrong
            raise UserError(f"fields {twin!r} and {field!r} both read column {value!r}", "--map")
        out[field] = value
    return out


def load(path: Path, options: Options) -> Trace:
    where = str(path)
    column_map = parse_column_map(options.raw("column_map"))
    suffix = path.suffix.lower()
    meta_line: dict[str, Any] = {}
    if suffix in (".jsonl", ".ndjson"):
        frame, lines, meta_line = _read_jsonl(path, column_map, where)
        line_word = "line"
    elif suffix == ".parquet":
        frame = _read_parquet(path, where)
        lines = np.arange(len(frame), dtype=np.int64)
        line_word = "row"
    else:
        frame, lines = _read_csv(path, where, sep="\t" if suffix == ".tsv" else ",")
        line_word = "line"
    columns = _resolve_columns(frame, column_map, where)
    routes = _routes(frame, columns, lines, options, where, line_word)
    meta = _meta(routes, meta_line, options, path, columns, where)
    return assemble(routes, meta, where, line_word=line_word, infer_top_k=meta.top_k is None)


# ---- reading the three layouts ---------------------------------------------------------------


def _read_csv(path: Path, where: str, sep: str) -> tuple[pd.DataFrame, np.ndarray]:
    text = read_text(path)
    skip = 0
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        skip += 1
    if sep == ",":
        frame = read_csv_text(path, skip, where)
    else:
        try:
            frame = pd.read_csv(path, sep=sep, skiprows=skip, keep_default_na=False, skip_blank_lines=False,
                                low_memory=False)
        except (ValueError, OSError) as exc:
            raise UserError(f"cannot read as TSV ({str(exc).strip()[:160]})", where) from None
        frame.columns = [str(c).strip() for c in frame.columns]
    return frame, np.arange(skip + 2, skip + 2 + len(frame), dtype=np.int64)


def _read_parquet(path: Path, where: str) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError, EOFError) as exc:
        raise UserError(f"cannot read as Parquet ({str(exc).strip()[:160]})", where) from None


def _read_jsonl(path: Path, column_map: dict[str, str], where: str) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Route lines as a frame (one column per JSON key), their line numbers, and the meta line."""
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    meta: dict[str, Any] = {}
    layer_keys = (column_map["layer"],) if "layer" in column_map else FIELDS["layer"]
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise UserError(f"not valid JSON ({str(exc)[:120]})", f"{where}: line {number}") from None
        if not isinstance(obj, dict):
            raise UserError("each line must be a JSON object", f"{where}: line {number}")
        if not records and not meta and not any(k in obj for k in layer_keys):
            unknown = sorted(set(obj) - set(META_KEYS))
            meta = {k: v for k, v in obj.items() if k in META_KEYS}
            if unknown:
                meta["_unknown"] = {k: obj[k] for k in unknown}
            meta["_line"] = number
            continue
        records.append(obj)
        lines.append(number)
    if not records:
        raise UserError("no route lines", where)
    return pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64), meta


# ---- columns to routes -----------------------------------------------------------------------


def _resolve_columns(frame: pd.DataFrame, column_map: dict[str, str], where: str) -> dict[str, str]:
    """Field -> column name: mapped ones (which must exist), then recognised names."""
    present = [str(c) for c in frame.columns]
    out: dict[str, str] = {}
    for field, column in column_map.items():
        if column not in present:
            raise UserError(f"--map {field}={column}: no column {column!r} "
                            f"(columns: {', '.join(present)[:200]})", where)
        out[field] = column
    for field, names in FIELDS.items():
        if field not in out:
            found = [n for n in names if n in present]
            if found:
                out[field] = found[0]
    for field in ("layer", "experts", "position"):
        if field not in out:
            raise UserError(f"no column for field '{field}'; name it with --map {field}=COLUMN "
                            f"(columns: {', '.join(present)[:200]})", where)
    return out


def _routes(frame: pd.DataFrame, columns: dict[str, str], lines: np.ndarray, options: Options,
            where: str, line_word: str) -> Routes:
    n = len(frame)
    if n == 0:
        raise UserError("no routing rows", where)

    def ints(field: str) -> np.ndarray:
        return _integers(frame[columns[field]], field, lines, where, line_word)

    layer, position = ints("layer"), ints("position")
    request = ints("request") if "request" in columns else np.zeros(n, dtype=np.int64)
    if "phase" in columns:
        phase = _phases(frame[columns["phase"]], lines, where, line_word)
    else:
        phase = np.full(n, PHASE_WORDS[options.text("phase", "decode", choices=("prefill", "decode"))],
                        dtype=np.int64)
    offsets, experts = _lists(frame[columns["experts"]], "experts", lines, where, line_word, integer=True)
    weights = None
    if "weights" in columns:
        w_offsets, weights = _lists(frame[columns["weights"]], "weights", lines, where, line_word, integer=False)
        bad = np.flatnonzero(np.diff(w_offsets) != np.diff(offsets))
        if bad.size:
            r = int(bad[0])
            raise UserError(f"{int(np.diff(w_offsets)[r])} weights for {int(np.diff(offsets)[r])} experts",
                            f"{where}: {line_word} {int(lines[r])}")
    counts = np.diff(offsets)
    annotations = {}
    for field, column in columns.items():
        if field.startswith("ann_"):
            annotations[field[4:]] = np.repeat(_annotation(frame[column], field, lines, where, line_word), counts)
    new_pass = np.ones(n, dtype=bool)
    if "pass" in columns:
        pass_key = ints("pass")
        new_pass[1:] = pass_key[1:] != pass_key[:-1]
    else:
        new_pass[1:] = ((request[1:] != request[:-1]) | (phase[1:] != phase[:-1])
                        | ((phase[1:] == DECODE) & (position[1:] != position[:-1])))
    return Routes(line=lines, new_pass=new_pass, phase=phase, request=request, position=position, layer=layer,
                  expert_offsets=offsets, expert=experts, weight=weights, annotations=annotations)


def _integers(series: pd.Series, field: str, lines: np.ndarray, where: str, line_word: str) -> np.ndarray:
    frame = pd.DataFrame({field: series.reset_index(drop=True)})
    try:
        return integer_column(frame, field, where, 0, line_of=lines)
    except UserError as exc:
        if line_word == "line":
            raise
        raise UserError(exc.message, (exc.where or where).replace(": line ", f": {line_word} ")) from None


def _phases(series: pd.Series, lines: np.ndarray, where: str, line_word: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = _integers(series, "phase", lines, where, line_word)
    else:
        words = series.astype(str).str.strip().str.lower()
        values = words.map(PHASE_WORDS).to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(np.isnan(values))
        if bad.size:
            r = int(bad[0])
            raise UserError(f"field 'phase': {str(series.iloc[r])[:40]!r} is not prefill/decode or 0/1",
                            f"{where}: {line_word} {int(lines[r])}")
        values = values.astype(np.int64)
    bad = np.flatnonzero((values != PREFILL) & (values != DECODE))
    if bad.size:
        r = int(bad[0])
        raise UserError(f"field 'phase': {int(values[r])} is not 0 (prefill) or 1 (decode)",
                        f"{where}: {line_word} {int(lines[r])}")
    return values


def _lists(series: pd.Series, field: str, lines: np.ndarray, where: str, line_word: str,
           integer: bool) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat values) of a column holding one number or a list of numbers per row."""
    n = len(series)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
        _check_numbers(values, np.arange(n), field, lines, where, line_word, integer)
        return np.arange(n + 1, dtype=np.int64), values.astype(np.int64) if integer else values
    counts = np.zeros(n, dtype=np.int64)
    flat: list[float] = []
    for r, cell in enumerate(series.tolist()):
        items = _split_cell(cell)
        if items is None:
            raise UserError(f"field '{field}': {str(cell)[:40]!r} is not a number or a list of numbers",
                            f"{where}: {line_word} {int(lines[r])}")
        counts[r] = len(items)
        flat.extend(items)
    values = np.asarray(flat, dtype=np.float64)
    _check_numbers(values, np.repeat(np.arange(n), counts), field, lines, where, line_word, integer)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, values.astype(np.int64) if integer else values


def _split_cell(cell: Any) -> list[float] | None:
    """A cell's numbers: a JSON list, a number, or text like "[3, 17]", "3;17", "3 17", "3|17"."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, (int, float)):
        return [float(cell)]
    if isinstance(cell, (list, tuple, np.ndarray)):
        items = list(cell)
        if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in items):
            return [float(v) for v in items]
        return None
    if isinstance(cell, str):
        text = cell.strip().strip("[]()")
        for sep in (",", ";", "|"):
            text = text.replace(sep, " ")
        try:
            return [float(v) for v in text.split()]
        except ValueError:
            return None
    return None


def _check_numbers(values: np.ndarray, row_of: np.ndarray, field: str, lines: np.ndarray, where: str,
                   line_word: str, integer: bool) -> None:
    bad = ~np.isfinite(values)
    if integer:
        bad |= (values != np.round(values)) | (np.abs(values) > 2**53)
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        kind = "an integer" if integer else "a finite number"
        raise UserError(f"field '{field}': {float(values[i])!r} is not {kind}",
                        f"{where}: {line_word} {int(lines[row_of[i]])}")


def _annotation(series: pd.Series, field: str, lines: np.ndarray, where: str, line_word: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        r = int(bad[0])
        raise UserError(f"field '{field}': {str(series.iloc[r])[:40]!r} is not a number",
                        f"{where}: {line_word} {int(lines[r])}")
    if (values == np.round(values)).all() and np.abs(values).max(initial=0) <= np.iinfo(np.int32).max:
        return values.astype(np.int32)
    return values.astype(np.float32)


# ---- metadata --------------------------------------------------------------------------------


def _meta(routes: Routes, meta_line: dict[str, Any], options: Options, path: Path,
          columns: dict[str, str], where: str) -> TraceMeta:
    line_where = f"{where}: line {meta_line.get('_line', 1)}"
    extra: dict[str, Any] = {}

    def pick(key: str, from_rows: int | None) -> int | None:
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

    n_layers = pick("n_layers", int(routes.layer.max()) + 1 if routes.n_rows else 1)
    n_experts = pick("n_experts", int(routes.expert.max()) + 1 if routes.expert.size else 1)
    top_k = pick("top_k", None)
    assert n_layers is not None and n_experts is not None
    if n_layers > np.iinfo(np.int16).max or n_experts > np.iinfo(np.int32).max:
        raise UserError(f"{n_layers} layers x {n_experts} experts is more than a trace holds", where)
    model = options.text("model") or meta_line.get("model")
    if model is not None and not isinstance(model, str):
        raise UserError("meta field 'model' must be text", line_where)
    sizes, size_note = object_bytes(options, model, n_layers, n_experts, extra)
    if "expert_bytes" in meta_line:
        from_line = _sizes(meta_line["expert_bytes"], n_layers, f"{line_where}: meta field 'expert_bytes'")
        if options.has("expert_bytes") and sizes != from_line:
            raise UserError("--option expert_bytes disagrees with the meta line", line_where)
        sizes, size_note = from_line, "meta line"
        extra.pop("object_bytes_unknown", None)
        extra.pop("object_bytes_note", None)
    dense = None
    if meta_line.get("dense_bytes") is not None:
        dense = _sizes(meta_line["dense_bytes"], n_layers, f"{line_where}: meta field 'dense_bytes'")
    layer_ids = meta_line.get("layer_ids")
    if layer_ids is not None and (not isinstance(layer_ids, list) or len(layer_ids) != n_layers
                                  or not all(isinstance(i, int) and not isinstance(i, bool) for i in layer_ids)):
        raise UserError(f"meta field 'layer_ids' must list {n_layers} integers", line_where)
    if "_unknown" in meta_line:
        extra["meta_line"] = meta_line["_unknown"]
    return TraceMeta(
        n_layers=n_layers,
        n_experts=n_experts,
        top_k=top_k,
        object_bytes=sizes,
        model=model,
        dense_bytes=dense,
        layer_ids=layer_ids,
        provenance=provenance("generic", path, sha256_of([path]), object_bytes_from=size_note,
                              column_map={k: columns[k] for k in sorted(columns)}),
        extra=extra,
    )


def _sizes(value: Any, n_layers: int, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    sizes = [parse_size(v, where) for v in items]
    if len(sizes) == 1:
        sizes = sizes * n_layers
    if len(sizes) != n_layers:
        raise UserError(f"gives {len(sizes)} sizes for {n_layers} layers", where)
    return sizes
