"""From a router log's columns to `LogRows`: field names, filters, ids, expert lists.

Fields and the column names recognised without a map (CLI --map FIELD=COLUMN names others):

    request   request, request_id, req_id, seq_id   integers, or any text (UUIDs): mapped to
                                                    0, 1, ... by first appearance, the mapping kept
                                                    in provenance.request_ids
    position  position, pos, token, step             the token's position in its sequence
                                                    (optional: counted per request and layer)
    layer     layer, layer_id                        (optional when a file name or meta line says)
    experts   experts, expert, expert_ids, topk_ids  a list per row, or one expert per row
    weights   weights, weight, topk_weights          optional, aligned with experts
    phase     phase, forward_mode                    0/1, prefill/decode (extend = prefill)
    pass      pass, pass_id, forward_pass_id         optional: rows of one forward pass share it

Filters (CLI --skip, --where, --drop, --range) run before grouping, in that order:
`skip_rows` drops each file's first N rows; `where COL=VALUE` keeps rows whose COL equals VALUE
(several: all must hold); `drop COL=VALUE` drops them; `range COL=LO:HI` keeps LO <= COL <= HI
(or LO..HI; either side may be empty; numbers, or ISO times such as
2026-05-01T10:00:00..2026-05-01T11:00:00 for a column of times).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.format.trace_meta import DECODE, PREFILL

FIELDS: dict[str, tuple[str, ...]] = {
    "request": ("request", "request_id", "req_id", "seq_id"),
    "position": ("position", "pos", "token", "step"),
    "layer": ("layer", "layer_id"),
    "experts": ("experts", "expert", "expert_ids", "topk_ids"),
    "weights": ("weights", "weight", "topk_weights"),
    "phase": ("phase", "forward_mode"),
    "pass": ("pass", "pass_id", "forward_pass_id"),
}
FIELD_ALIASES = {alias: f for f, names in FIELDS.items() for alias in names}
PHASE_WORDS = {"prefill": PREFILL, "decode": DECODE, "extend": PREFILL, "0": PREFILL, "1": DECODE}
At = Callable[[int], str]


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


def resolve_columns(frame: pd.DataFrame, column_map: dict[str, str], where: str,
                    required: tuple[str, ...]) -> dict[str, str]:
    """Field -> column name: mapped ones (which must exist), then recognised names."""
    present = [str(c) for c in frame.columns]
    out: dict[str, str] = {}
    for field, column in column_map.items():
        if column not in present:
            raise UserError(f"--map {field}={column}: no column {column!r} "
                            f"(columns: {', '.join(present)[:200]})", where)
        out[field] = column
    taken = set(out.values())
    for field, names in FIELDS.items():
        if field not in out:
            found = [n for n in names if n in present and n not in taken]
            if found:
                out[field] = found[0]
                taken.add(found[0])
    for field in required:
        if field not in out:
            raise UserError(f"no column for field '{field}'; name it with --map {field}=COLUMN "
                            f"(columns: {', '.join(present)[:200]})", where)
    return out


# ---- filters ---------------------------------------------------------------------------------


def _pairs(value: Any, flag: str, sep: str = "=") -> list[tuple[str, str]]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        col, ok, rest = str(item).partition(sep)
        if not ok or not col.strip():
            raise UserError(f"expected COLUMN{sep}VALUE, got {item!r}", flag)
        out.append((col.strip(), rest.strip()))
    return out


def _column(frame: pd.DataFrame, col: str, flag: str) -> pd.Series:
    if col not in frame.columns:
        raise UserError(f"no column {col!r} (columns: {', '.join(map(str, frame.columns))[:200]})", flag)
    return frame[col]


def _equals(series: pd.Series, value: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        try:
            return (series.to_numpy(dtype=np.float64) == float(value))
        except ValueError:
            return np.zeros(len(series), dtype=bool)
    return (series.astype(str).str.strip() == value).to_numpy()


def filter_mask(frame: pd.DataFrame, where: Any, drop: Any, ranges: Any) -> np.ndarray:
    """Rows kept by --where / --drop / --range (bool per frame row)."""
    keep = np.ones(len(frame), dtype=bool)
    for col, value in _pairs(where, "--where") if where else []:
        keep &= _equals(_column(frame, col, "--where"), value)
    for col, value in _pairs(drop, "--drop") if drop else []:
        keep &= ~_equals(_column(frame, col, "--drop"), value)
    for col, span in _pairs(ranges, "--range") if ranges else []:
        if ".." in span:
            lo_text, _, hi_text = span.partition("..")
        elif span.count(":") == 1:
            lo_text, _, hi_text = span.partition(":")
        else:
            raise UserError(f"expected COLUMN=LO:HI or COLUMN=LO..HI (times need ..), got {col}={span}", "--range")
        series = _column(frame, col, "--range")
        values, lo, hi = _comparable(series, lo_text.strip(), hi_text.strip(), f"{col}={span}")
        if lo is not None:
            keep &= values >= lo
        if hi is not None:
            keep &= values <= hi
    return keep


def _comparable(series: pd.Series, lo: str, hi: str, text: str) -> tuple[np.ndarray, Any, Any]:
    """Numbers, or timestamps (ISO text such as 2026-05-01T12:00:00) when the column is not numeric."""
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.notna().any() or not len(series):
        try:
            return (numbers.to_numpy(dtype=np.float64, na_value=np.nan),
                    float(lo) if lo else None, float(hi) if hi else None)
        except ValueError:
            raise UserError(f"bounds must be numbers, got {text!r}", "--range") from None
    try:
        times = pd.to_datetime(series, errors="coerce", utc=True)
        lo_t = pd.Timestamp(lo, tz="UTC") if lo else None
        hi_t = pd.Timestamp(hi, tz="UTC") if hi else None
    except (ValueError, TypeError):
        raise UserError(f"bounds must be numbers or times, got {text!r}", "--range") from None
    if times.isna().all():
        raise UserError(f"column values are neither numbers nor times ({text!r})", "--range")
    ns = times.dt.as_unit("ns").astype("int64").to_numpy()
    ns = np.where(times.isna().to_numpy(), np.iinfo(np.int64).min, ns)
    return ns, None if lo_t is None else lo_t.value, None if hi_t is None else hi_t.value


# ---- typed columns ---------------------------------------------------------------------------


def integers(series: pd.Series, field: str, at: At) -> np.ndarray:
    """A column as int64; the first cell that is not an integer is a UserError at its row."""
    if pd.api.types.is_integer_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)) | (np.abs(numbers) > 2**53))
    if bad.size:
        r = int(bad[0])
        raise UserError(f"field '{field}': {str(series.iloc[r])[:40]!r} is not an integer", at(r))
    return numbers.astype(np.int64)


def ids_or_codes(series: pd.Series, field: str, at: At) -> tuple[np.ndarray, dict[str, int] | None]:
    """Integer ids as they are; any text (e.g. "r1", UUIDs) numbered 0.. by first appearance."""
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
        return integers(series, field, at), None
    text = series.astype(str).str.strip()
    empty = np.flatnonzero((text == "").to_numpy() | series.isna().to_numpy())
    if empty.size:
        raise UserError(f"field '{field}' is empty", at(int(empty[0])))
    codes, names = pd.factorize(text, sort=False)
    return codes.astype(np.int64), {str(name): i for i, name in enumerate(names)}


def phases(series: pd.Series, at: At) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = integers(series, "phase", at)
    else:
        words = series.astype(str).str.strip().str.lower()
        values = words.map(PHASE_WORDS).to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(np.isnan(values))
        if bad.size:
            r = int(bad[0])
            raise UserError(f"field 'phase': {str(series.iloc[r])[:40]!r} is not prefill/decode or 0/1", at(r))
        values = values.astype(np.int64)
    bad = np.flatnonzero((values != PREFILL) & (values != DECODE))
    if bad.size:
        r = int(bad[0])
        raise UserError(f"field 'phase': {int(values[r])} is not 0 (prefill) or 1 (decode)", at(r))
    return values


def lists(series: pd.Series, field: str, at: At, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat values) of a column holding one number or a list of numbers per row."""
    n = len(series)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64)
        _check_numbers(values, np.arange(n), field, at, integer)
        return np.arange(n + 1, dtype=np.int64), values.astype(np.int64) if integer else values
    counts = np.zeros(n, dtype=np.int64)
    flat: list[float] = []
    for r, cell in enumerate(series.tolist()):
        items = split_cell(cell)
        if items is None:
            raise UserError(f"field '{field}': {str(cell)[:40]!r} is not a number or a list of numbers", at(r))
        counts[r] = len(items)
        flat.extend(items)
    values = np.asarray(flat, dtype=np.float64)
    _check_numbers(values, np.repeat(np.arange(n), counts), field, at, integer)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, values.astype(np.int64) if integer else values


def split_cell(cell: Any) -> list[float] | None:
    """A cell's numbers: a JSON list, a number, or text like "[3, 17]", "3;17", "3 17", "3|17"."""
    if isinstance(cell, bool):
        return None
    if isinstance(cell, (int, float, np.integer, np.floating)):
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


def _check_numbers(values: np.ndarray, row_of: np.ndarray, field: str, at: At, integer: bool) -> None:
    bad = ~np.isfinite(values)
    if integer:
        bad |= (values != np.round(values)) | (np.abs(values) > 2**53)
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        kind = "an integer" if integer else "a finite number"
        raise UserError(f"field '{field}': {float(values[i])!r} is not {kind}", at(int(row_of[i])))


def annotation(series: pd.Series, field: str, at: At) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        r = int(bad[0])
        raise UserError(f"field '{field}': {str(series.iloc[r])[:40]!r} is not a number", at(r))
    if (values == np.round(values)).all() and np.abs(values).max(initial=0) <= np.iinfo(np.int32).max:
        return values.astype(np.int32)
    return values.astype(np.float32)
