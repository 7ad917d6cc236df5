"""Readers for measured runs: the BigMoeOnEdge engine's per-step CSV (`--csv` output, and the
route-trace runs' `.metrics`, which add majflt/cpu_ms) with its `# summary` line, the engine's
`.log` summary lines, the `key=value` memory sidecars, and a generic per-step CSV/JSONL read
through a column map.

    run = read_run("gemma_base_ov.csv")                    # .log / .metrics beside it are read too
    run = read_run("steps.jsonl", columns="step=i,wall_ms=lat,read_bytes=bytes")

Every problem is one UserError naming the file, the row (1-based data row) and the field.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.runs.measured import STEP_COLUMNS, MeasuredRun, RunConfig

# canonical field -> (engine column, scale to SI)
ENGINE_COLUMNS = {"wall_s": ("wall_ms", 1e-3), "io_s": ("io_ms", 1e-3), "compute_s": ("compute_ms", 1e-3),
                  "stall_s": ("stall_ms", 1e-3), "mgmt_s": ("mgmt_ms", 1e-3), "read_bytes": ("read_bytes", 1.0)}
UNIT_SUFFIX = {"_ms": 1e-3, "_us": 1e-6, "_s": 1.0}
GENERIC_FIELDS = ("step", "wall", "io", "compute", "stall", "mgmt", "read_bytes", "hits", "hit_pct_cum")


BUNDLED_RUNS_DIR = Path(__file__).resolve().parent / "data"
BUNDLED_PREFIX = "bundled:"


def bundled_run_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED_RUNS_DIR.glob("*.metrics"))


def run_path(text: str | Path) -> Path:
    """A path, or `bundled:NAME` for the measurements shipped with moesim (the runs of bundled:qwen/gemma)."""
    text = str(text)
    if text.startswith(BUNDLED_PREFIX):
        name = text[len(BUNDLED_PREFIX):]
        path = BUNDLED_RUNS_DIR / f"{name}.metrics"
        if not path.is_file():
            raise UserError(f"no bundled run {name!r}; bundled: {', '.join(bundled_run_names())}", text)
        return path
    return Path(text)


def read_run(path: str | Path, columns: str | None = None) -> MeasuredRun:
    """A run from its per-step file; the engine's .log and memory sidecar beside it are read when present."""
    path = run_path(path)
    if not path.is_file():
        raise UserError("no such file", str(path))
    if columns:
        return read_generic(path, columns)
    text = _read_text(path)
    header = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
    if not header.startswith("step,") or "wall_ms" not in header:
        raise UserError("not this engine's per-step CSV (no 'step,...,wall_ms' header); give --columns "
                        "to read a generic per-step CSV/JSONL", str(path))
    return read_engine_csv(path, text)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read: {exc}", str(path)) from None


def parse_summary_line(line: str) -> dict[str, Any]:
    """'# summary tokens=256 s/tok=0.317 ...' -> {"tokens": 256.0, "s/tok": 0.317, ...}."""
    out: dict[str, Any] = {}
    for item in line.lstrip("#").split()[1:]:
        if "=" in item:
            key, value = item.split("=", 1)
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def read_engine_csv(path: Path, text: str | None = None) -> MeasuredRun:
    text = _read_text(path) if text is None else text
    summary: dict[str, Any] = {}
    lines = []
    for line in text.splitlines():
        if line.startswith("# summary"):
            summary = parse_summary_line(line)
        elif line.strip() and not line.startswith("#"):
            lines.append(line)
    header = lines[0].split(",")
    rows = [ln.split(",") for ln in lines[1:]]
    where = str(path)
    data: dict[str, np.ndarray] = {}
    for name in header:
        data[name] = np.empty(len(rows))
    for r, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise UserError(f"{len(row)} fields, the header has {len(header)}", f"{where}: row {r}")
        for name, value in zip(header, row):
            data[name][r - 1] = _number(value, f"{where}: row {r}, field {name}")
    for need in ("step", "wall_ms"):
        if need not in data:
            raise UserError(f"no {need!r} column", where)
    steps = pd.DataFrame({"step": data["step"].astype(np.int64)})
    for field, (col, scale) in ENGINE_COLUMNS.items():
        steps[field] = data[col] * scale if col in data else np.nan
    for extra in ("majflt", "cpu_ms"):
        if extra in data:
            steps[extra] = data[extra]
    hit_pct = pd.Series(data["cache_hit_pct"]) if "cache_hit_pct" in data else None
    steps["hits"] = np.nan  # filled by moesim.runs.hits once the lookups per step are known
    _check_steps(steps, where)
    log_lines = _sibling_log(path)
    sidecar = _sibling_sidecar(path)
    config = config_from_engine(summary, log_lines, hit_pct, steps)
    name = path.stem
    return MeasuredRun(name=name, source=where, steps=steps[list(STEP_COLUMNS) + [c for c in ("majflt", "cpu_ms")
                                                                                if c in steps]],
                       config=config, summary=summary, sidecar=sidecar, hit_pct_cumulative=hit_pct)


def _number(value: str, where: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise UserError(f"not a number: {value.strip()!r}", where) from None
    if math.isnan(x) or math.isinf(x):
        raise UserError(f"not a finite number: {value.strip()!r}", where)
    return x


def _check_steps(steps: pd.DataFrame, where: str) -> None:
    if steps.empty:
        raise UserError("no data rows", where)
    step = steps["step"].to_numpy()
    bad = np.flatnonzero(np.diff(step) <= 0)
    if bad.size:
        raise UserError(f"steps must increase (step {step[bad[0] + 1]} after {step[bad[0]]})",
                        f"{where}: row {bad[0] + 2}, field step")
    for field in ("wall_s", "read_bytes", "io_s", "mgmt_s"):
        values = steps[field].to_numpy(dtype=float)
        neg = np.flatnonzero(values < 0)
        if neg.size:
            raise UserError(f"negative value {values[neg[0]]}", f"{where}: row {neg[0] + 1}, field {field}")


def _sibling_log(path: Path) -> list[str]:
    for candidate in (path.with_suffix(".log"),):
        if candidate.is_file() and candidate != path:
            return _read_text(candidate).splitlines()
    return []


def _sibling_sidecar(path: Path) -> dict[str, float]:
    """key=value lines of a memory/temperature sidecar (.metrics that is not a per-step CSV)."""
    side = path.with_suffix(".metrics")
    if not side.is_file() or side == path:
        return {}
    text = _read_text(side)
    if text.startswith("step,"):
        return {}
    return parse_sidecar(text)


def parse_sidecar(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)=(-?[\d.]+)\s*", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


_LOG_PATTERNS = {
    "top_k": [r"expert_used_count'\s*=\s*(\d+)", r"n_expert_used\s*=\s*(\d+)"],
    "model": [r"general\.architecture\s+str\s+=\s+(\w+)"],
    "lanes": [r"io_threads=(\d+)"],
    "cache_mib": [r"budget ([\d.]+) MiB", r"expert streaming ON .*cache=([\d.]+) MiB"],
    "n_prompt": [r"^prefill: (\d+) tokens"],
    "prefill_s": [r"^prefill: \d+ tokens, ([\d.]+) s"],
    "n_decode": [r"^generation: (\d+) tokens"],
}


def config_from_engine(summary: dict[str, Any], log: list[str], hit_pct: pd.Series | None,
                       steps: pd.DataFrame) -> RunConfig:
    """What the summary line and the log say; the rest stays None for the caller's options."""
    found: dict[str, Any] = {}
    for key, patterns in _LOG_PATTERNS.items():
        for line in log:
            for pattern in patterns:
                m = re.search(pattern, line)
                if m and key not in found:
                    found[key] = m.group(1) if key == "model" else float(m.group(1))
    if "cache_budget_MiB" in summary:
        found["cache_mib"] = float(summary["cache_budget_MiB"])
    if "n_prompt" in summary:
        found["n_prompt"] = summary["n_prompt"]
    if "prefill_s" in summary:
        found["prefill_s"] = summary["prefill_s"]
    found.setdefault("n_decode", summary.get("tokens", len(steps)))
    streamed = float(np.nansum(steps["read_bytes"])) > 0
    no_cache = hit_pct is not None and bool((hit_pct < 0).all())
    mmap = no_cache and not streamed
    if no_cache and streamed:
        found["cache_mib"] = 0.0  # -1 hit % with bytes read: streaming with no expert cache
    overlap: bool | None = None
    if any(line.startswith("moe-overlap") for line in log) or float(summary.get("stall_s/tok", 0) or 0) > 0 \
            or float(np.nansum(steps["stall_s"])) > 0:
        overlap = True
    elif log and any(line.startswith("moe-stream") for line in log):
        overlap = False  # a streaming run's log without the overlap line
    elif "stall_s/tok" in summary and not mmap:
        overlap = False  # the engine reports stall, and it was zero: reads were not overlapped
    return RunConfig(
        model=found.get("model"),
        cache_mib=found.get("cache_mib"),
        lanes=None if "lanes" not in found else int(found["lanes"]),
        overlap=None if mmap else overlap,
        top_k=None if "top_k" not in found else int(found["top_k"]),
        n_prompt=None if "n_prompt" not in found else int(found["n_prompt"]),
        prefill_s=found.get("prefill_s"),
        mmap=mmap,
        n_decode=None if found.get("n_decode") is None else int(found["n_decode"]),
    )


# ---- generic per-step files -------------------------------------------------------------------

def parse_column_map(spec: str) -> dict[str, tuple[str, float]]:
    """'step=i,wall_ms=lat,read_bytes=b' -> {"wall": ("lat", 1e-3), ...} (field, its source column, scale)."""
    out: dict[str, tuple[str, float]] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise UserError(f"expected FIELD=COLUMN, got {item!r}", "--columns")
        key, column = (s.strip() for s in item.split("=", 1))
        scale = 1.0
        base = key
        for suffix, factor in UNIT_SUFFIX.items():
            if key.endswith(suffix) and key[: -len(suffix)] in ("wall", "io", "compute", "stall", "mgmt"):
                base, scale = key[: -len(suffix)], factor
                break
        if base in ("wall", "io", "compute", "stall", "mgmt") and base == key:
            raise UserError(f"say the unit of {key!r}: {key}_ms, {key}_us or {key}_s", "--columns")
        if base not in GENERIC_FIELDS:
            raise UserError(f"unknown field {key!r} (known: step, wall_ms|_s|_us, io_*, compute_*, stall_*, "
                            "mgmt_*, read_bytes, hits, hit_pct_cum)", "--columns")
        out[base] = (column, scale)
    for need in ("step", "wall"):
        if need not in out:
            raise UserError(f"the column map needs {need!r}", "--columns")
    return out


def read_generic(path: Path, columns: str, config: RunConfig | None = None) -> MeasuredRun:
    """A per-step CSV (header row) or JSONL (one object per line) read through a column map."""
    cmap = parse_column_map(columns)
    where = str(path)
    records = _jsonl_records(path) if path.suffix.lower() in (".jsonl", ".ndjson") else _csv_records(path)
    if not records:
        raise UserError("no data rows", where)
    out: dict[str, np.ndarray] = {}
    for field, (column, scale) in cmap.items():
        values = np.empty(len(records))
        for r, rec in enumerate(records, start=1):
            if column not in rec:
                raise UserError(f"no column {column!r} (mapped to {field})", f"{where}: row {r}")
            values[r - 1] = _number(str(rec[column]), f"{where}: row {r}, field {column}") * scale
        out[field] = values
    steps = pd.DataFrame({"step": out["step"].astype(np.int64)})
    for field in ("wall", "io", "compute", "stall", "mgmt"):
        steps[f"{field}_s"] = out.get(field, np.full(len(records), np.nan))
    steps["read_bytes"] = out.get("read_bytes", np.full(len(records), np.nan))
    steps["hits"] = out.get("hits", np.full(len(records), np.nan))
    _check_steps(steps, where)
    hit_pct = pd.Series(out["hit_pct_cum"]) if "hit_pct_cum" in out else None
    return MeasuredRun(name=path.stem, source=where, steps=steps[list(STEP_COLUMNS)], config=config or RunConfig(),
                       hit_pct_cumulative=hit_pct)


def _csv_records(path: Path) -> list[dict[str, Any]]:
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        return []
    header = [h.strip() for h in lines[0].split(",")]
    records = []
    for r, line in enumerate(lines[1:], start=1):
        row = line.split(",")
        if len(row) != len(header):
            raise UserError(f"{len(row)} fields, the header has {len(header)}", f"{path}: row {r}")
        records.append(dict(zip(header, (v.strip() for v in row))))
    return records


def _jsonl_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for r, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"not JSON: {exc.msg}", f"{path}: line {r}") from None
        if not isinstance(rec, dict):
            raise UserError("each line must be a JSON object", f"{path}: line {r}")
        records.append(rec)
    return records
