"""Small helpers every importer shares: provenance, placeholder sizes, safe reads, numeric columns."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from moesim.errors import UserError

UNKNOWN_SIZE_NOTE = ("the source does not give object sizes: every object counts 1 byte; give real sizes "
                     "with --option expert_bytes=... (e.g. '3 MiB') before sizing caches in bytes")


def sha256_of(paths: Iterable[Path], root: Path | None = None) -> str:
    """SHA-256 of one file's bytes, or of several files (each relative name, then its bytes)."""
    paths = list(paths)
    h = hashlib.sha256()
    if len(paths) == 1 and root is None:
        h.update(paths[0].read_bytes())
        return h.hexdigest()
    for p in sorted(paths):
        name = p.relative_to(root).as_posix() if root is not None else p.name
        h.update(name.encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def provenance(fmt: str, path: Path, digest: str, **more: Any) -> dict[str, Any]:
    """Where a trace came from: format, the source's name (not its absolute path, so a conversion
    gives the same bytes on any machine) and content hash, plus importer-specific facts."""
    out: dict[str, Any] = {"format": fmt, "source_file": path.name, "source_sha256": digest}
    out.update({k: v for k, v in more.items() if v is not None})
    return out


def mark_unknown_sizes(extra: dict[str, Any], n_layers: int) -> list[int]:
    """Placeholder sizes (1 byte per object) and a note saying so."""
    extra["object_bytes_unknown"] = True
    extra["object_bytes_note"] = UNKNOWN_SIZE_NOTE
    return [1] * n_layers


def catalog_expert_bytes(model: str | None, n_experts: int) -> tuple[int, str] | None:
    """(bytes per expert, where from) from the model catalog, if it knows `model` and agrees on the
    expert count; the catalog's default dtype is used (--option expert_bytes overrides)."""
    if not model:
        return None
    from moesim.traces.models.catalog import load_model

    try:
        spec = load_model(model)
    except UserError:
        return None
    if spec.n_routed_experts != n_experts:
        return None
    return spec.expert_bytes(), f"model catalog entry {spec.name} ({spec.default_dtype} experts)"


def object_bytes(options: Any, model: str | None, n_layers: int, n_experts: int,
                 extra: dict[str, Any]) -> tuple[list[int], str | None]:
    """Per-layer object sizes and where they came from: --option expert_bytes, else the model catalog,
    else 1-byte placeholders (flagged in `extra`)."""
    given = options.byte_sizes("expert_bytes", n_layers)
    if given is not None:
        return given, "--option expert_bytes"
    found = catalog_expert_bytes(model, n_experts)
    if found is not None:
        return [found[0]] * n_layers, found[1]
    return mark_unknown_sizes(extra, n_layers), None


def read_text(path: Path, where: str | None = None) -> str:
    """A text file as UTF-8; unreadable or binary files are UserErrors."""
    where = where or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror or exc})", where) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", where) from None


def integer_column(frame: pd.DataFrame, name: str, where: str, first_line: int,
                   line_of: np.ndarray | None = None) -> np.ndarray:
    """A text column as int64; the first non-integer cell is a UserError naming its line."""
    raw = frame[name]
    if pd.api.types.is_integer_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.int64)
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers)) | (np.abs(numbers) > 2**53)
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        line = int(line_of[i]) if line_of is not None else first_line + i
        raise UserError(f"field '{name}': {str(raw.iloc[i])[:40]!r} is not an integer", f"{where}: line {line}")
    return numbers.astype(np.int64)


def float_column(frame: pd.DataFrame, name: str, where: str, first_line: int,
                 line_of: np.ndarray | None = None) -> np.ndarray:
    raw = frame[name]
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        numbers = raw.to_numpy(dtype=np.float64)
    else:
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    idx = np.flatnonzero(~np.isfinite(numbers))
    if idx.size:
        i = int(idx[0])
        line = int(line_of[i]) if line_of is not None else first_line + i
        raise UserError(f"field '{name}': {str(raw.iloc[i])[:40]!r} is not a finite number", f"{where}: line {line}")
    return numbers


def read_csv_text(path: Path, skip_lines: int, where: str) -> pd.DataFrame:
    """The CSV body after `skip_lines` preamble lines (types are checked per column by the callers:
    pandas parses clean numeric columns fast, and a column with a bad cell stays text so the
    caller can name that cell's line).

    Blank lines are kept (as empty rows) so row i is exactly line skip_lines + 2 + i of the file.
    """
    try:
        frame = pd.read_csv(path, skiprows=skip_lines, keep_default_na=False, skip_blank_lines=False,
                            encoding="utf-8", engine="c", low_memory=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:  # EmptyDataError, UnicodeDecodeError are ValueErrors
        text = str(exc).strip().splitlines()
        raise UserError(f"cannot read as CSV ({text[0][:160] if text else type(exc).__name__})", where) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns):
        raise UserError("the CSV header names a column twice", where)
    return frame
