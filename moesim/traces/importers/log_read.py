"""Reading router logs: one CSV / TSV / JSONL / Parquet file, or several (a folder or a wildcard).

Each file gives a frame (one column per field), the line (or row) number of every frame row, and
the file's meta line (JSONL only: a first line without the experts field, e.g.
`{"model_id": "...", "top_k": 8, "layers_logged": [0, 8, 16]}`), with common spellings mapped to
moesim's names (META_ALIASES). Several files are read in natural name order (moe_layer8 before
moe_layer16); `--layer-from-filename 'moe_layer{layer}'` or a meta line's `layer` says which layer a
file holds, `request_from_filename 'req{request}'` which request.
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.importers.common import read_csv_text, read_text

EXTENSIONS = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")
META_KEYS = ("n_layers", "n_experts", "top_k", "expert_bytes", "dense_bytes", "model", "layer_ids", "layer")
META_ALIASES = {
    "model_id": "model", "model_name": "model",
    "num_experts": "n_experts", "n_routed_experts": "n_experts", "num_local_experts": "n_experts",
    "layers_logged": "layer_ids", "logged_layers": "layer_ids",
    "num_experts_per_tok": "top_k", "topk": "top_k", "moe_topk": "top_k",
    "layer_id": "layer", "moe_layer": "layer",
}
WILDCARDS = ("*", "?", "[")
ROW_KEYS = ("position", "pos", "token", "request", "request_id", "req_id")  # a line with these is a route line


@dataclass
class LogFile:
    """One file's rows: frame, line numbers, meta line (canonical keys), and the file's name."""

    name: str
    frame: pd.DataFrame
    lines: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    line_word: str = "line"


def has_wildcard(text: str) -> bool:
    return any(c in text for c in WILDCARDS)


def natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def expand_inputs(path: Path) -> list[Path]:
    """The files a path names: itself, a folder's log files, or a wildcard's matches (natural order)."""
    text = str(path)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS]
        if not files:
            raise UserError(f"no {'/'.join(EXTENSIONS)} files in this folder", text)
    elif not path.exists() and has_wildcard(text):
        files = [Path(p) for p in glob.glob(text) if Path(p).is_file()]
        if not files:
            raise UserError("no file matches this pattern", text)
    else:
        return [path]
    return sorted(files, key=lambda p: natural_key(p.name))


def filename_value(pattern: str, name: str, field_name: str, flag: str) -> int | str:
    """The value of {field_name} in `name` by `pattern` ('moe_layer{layer}' on 'moe_layer8.jsonl' -> 8)."""
    token = "{" + field_name + "}"
    if token not in pattern:
        raise UserError(f"the pattern must contain {token}, got {pattern!r}", flag)
    head, _, tail = pattern.partition(token)
    capture = r"(\d+)" if field_name == "layer" else r"(.+?)"
    regex = re.escape(head) + capture + re.escape(tail) + (r"(?:\.|$)" if field_name != "layer" else "")
    found = re.search(regex, name)
    if not found:
        raise UserError(f"file name does not match {flag} {pattern!r}", name)
    value = found.group(1)
    return int(value) if field_name == "layer" else value


def read_log(path: Path, experts_keys: tuple[str, ...]) -> LogFile:
    """One file by its suffix; `experts_keys` are the names a JSONL route line's experts may have."""
    where = str(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        frame, lines, meta = _read_jsonl(path, experts_keys, where)
        return LogFile(path.name, frame, lines, meta)
    if suffix == ".parquet":
        frame = _read_parquet(path, where)
        return LogFile(path.name, frame, np.arange(len(frame), dtype=np.int64), {}, "row")
    frame, lines = _read_csv(path, where, sep="\t" if suffix == ".tsv" else ",")
    return LogFile(path.name, frame, lines)


def canonical_meta(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A meta line with aliases mapped (model_id -> model, ...); unknown keys kept under _unknown."""
    meta: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    for key, value in obj.items():
        name = META_ALIASES.get(key, key)
        if name not in META_KEYS:
            unknown[key] = value
            continue
        if name in meta and meta[name] != value:
            raise UserError(f"meta fields {key!r} and another spelling of {name!r} disagree", where)
        meta[name] = value
    if unknown:
        meta["_unknown"] = unknown
    return meta


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


def _read_jsonl(path: Path, experts_keys: tuple[str, ...], where: str) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Route lines as a frame (one column per JSON key), their line numbers, and the meta line."""
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    meta: dict[str, Any] = {}
    for number, obj in json_object_lines(read_text(path), where):
        if not records and not meta and not any(k in obj for k in experts_keys + ROW_KEYS):
            meta = canonical_meta(obj, f"{where}: line {number}")
            meta["_line"] = number
            continue
        records.append(obj)
        lines.append(number)
    if not records:
        raise UserError("no route lines", where)
    return pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64), meta


def json_object_lines(text: str, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL text; a line that is not a JSON
    object is a UserError naming it. Shared by every JSONL importer."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise UserError(f"not valid JSON ({str(exc)[:120]})", f"{where}: line {number}") from None
        if not isinstance(obj, dict):
            raise UserError("each line must be a JSON object", f"{where}: line {number}")
        yield number, obj
