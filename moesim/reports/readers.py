"""Read results from disk, whatever wrote them, into one ResultSet.

Accepted (detected from the Parquet schema metadata, key b"moesim"):
- run files ("format": "moesim.runs/1"), alone or as a sweep dataset directory (DIR/runs/*.parquet);
- (older files) count results that `moesim replay/compare --out` wrote in moesim 0.1 (metadata with
  "runs" and "trace"); every command now writes run files (moesim/reports/run_results.py);
- (older files) timed results ("format": "moesim.timed_result/1"; per-cell rows), likewise;
- a directory of any of these files.
Reading another room's layout happens in `_from_count_file` and `_from_timed_file` alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from moesim.atomic_io import note_input
from moesim.errors import UserError
from moesim.reports import adapters, dataset, run_file, tables
from moesim.reports.tables import ResultSet, arrow_table

TIMED_FORMAT_PREFIX = "moesim.timed_result/"
DEFAULT_TIMELINE_PASSES = 4


def load_result_set(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> ResultSet:
    """Every run in `paths` (files or directories), combined and sorted by run_id."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    parts = [_load_one(Path(p)) for p in paths]
    if not parts:
        raise UserError("no result files given", "results")
    return ResultSet.combine(parts)


def _load_one(path: Path) -> ResultSet:
    if not path.exists():
        raise UserError("no such file or directory", str(path))
    if path.is_dir():
        if dataset.is_dataset(path):
            for name in (dataset.TABLE, dataset.MANIFEST):  # a dataset's own files are inputs too
                note_input(path / name)
            return dataset.read_dataset(path)
        files = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))
        if not files:
            raise UserError("holds no result files (*.parquet) and is not a sweep directory", str(path))
        return ResultSet.combine(_load_file(f) for f in files)
    return _load_file(path)


def _load_file(path: Path) -> ResultSet:
    note_input(path)
    meta = run_file.read_metadata(path)
    if meta is None:
        raise UserError("not a moesim result (its Parquet metadata has no 'moesim' entry)", str(path))
    fmt = str(meta.get("format", ""))
    if fmt == run_file.FORMAT:
        return run_file.read_run_file(path)[0]
    if fmt.startswith(TIMED_FORMAT_PREFIX):
        return _from_timed_file(path, meta)
    if "runs" in meta and "trace" in meta:
        return _from_count_file(path, meta)
    raise UserError(f"unknown moesim result format {fmt or '(none)'!r}", str(path))


def _run_id(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _policy_label(spec: Mapping[str, Any] | str | None, kind: str) -> str:
    """A policy's canonical label from {"name", "params"} (a resolved config) or a label string."""
    if spec is None:
        return {"prefetch": "none", "miss": "stall"}.get(kind, "")
    if isinstance(spec, str):
        return spec
    if spec.get("label"):
        return str(spec["label"])
    name = str(spec.get("name", ""))
    try:
        from moesim.policies.registry import PolicySpec, lookup

        ptype = lookup(name, kind).params_type()
        params = ptype(**(spec.get("params") or {})) if ptype is not None else None
        return PolicySpec(name, kind, params).label()
    except Exception:  # a policy this build does not register: show its bare name
        return name


def _read_frame(path: Path) -> pd.DataFrame:
    try:
        return pq.ParquetFile(path).read(use_threads=False).to_pandas()
    except OSError as exc:
        raise UserError(f"cannot read: {exc}", str(path)) from None


# ---- `moesim replay --out` (count results) -----------------------------------------------------
def _from_count_file(path: Path, meta: Mapping[str, Any]) -> ResultSet:
    rows = _read_frame(path)
    trace = meta.get("trace") or {}
    trace_name = Path(str(trace.get("source") or trace.get("model") or path.stem)).name
    total = trace.get("total_object_bytes") or 0
    out: list[tables.RunTables] = []
    for record in meta.get("runs") or []:
        cfg, summary = record.get("config") or {}, record.get("summary") or {}
        policy = cfg.get("policy") or {}
        label = _policy_label(policy, "eviction")
        run_id = _run_id("count-file", trace.get("hash"), cfg)
        identity = {
            "run_id": run_id, "engine": "count", "trace": trace_name, "trace_hash": trace.get("hash", ""),
            "eviction": label, "prefetch": "none", "miss": "stall", "policy": label,
            "offline": bool(policy.get("offline", False)), "capacity": cfg.get("capacity", ""),
            "capacity_bytes": cfg.get("capacity_bytes"), "scope": cfg.get("scope", ""), "mode": cfg.get("mode", ""),
            "seed": cfg.get("seed", 0), "passes": trace.get("passes"), "routed_accesses": trace.get("routed_accesses"),
            "total_object_bytes": total,
            "capacity_share": (cfg.get("capacity_bytes") or 0) / total if total else None,
        }
        identity.update(adapters.count_summary_columns(summary))
        mine = rows[(rows["policy"] == label) & (rows["capacity"] == cfg.get("capacity"))
                    & (rows["scope"] == cfg.get("scope")) & (rows["mode"] == cfg.get("mode"))]
        layers = mine[mine["table"] == "layer"].rename(columns={"index": "layer"})
        passes = mine[mine["table"] == "pass"].rename(columns={"index": "pass"})
        out.append({
            "runs": arrow_table("runs", identity, 1),
            "layers": arrow_table("layers", _columns(layers, run_id, tables.columns("layers"))),
            "passes": arrow_table("passes", _columns(passes, run_id, tables.columns("passes"))),
        })
    return ResultSet.from_run_tables(out)


def _columns(df: pd.DataFrame, run_id: str, names: list[str]) -> dict[str, Any]:
    cols: dict[str, Any] = {c: df[c].to_numpy() for c in names if c in df.columns and c != "run_id"}
    cols["run_id"] = run_id
    return cols


# ---- timing engine results ---------------------------------------------------------------------
def _from_timed_file(path: Path, meta: Mapping[str, Any]) -> ResultSet:
    cells = _read_frame(path)
    cfg = meta.get("config") or {}
    summary = meta.get("summary") or {}
    profile = meta.get("profile") or {}
    trace_hash = str(meta.get("trace_hash", ""))
    eviction = _policy_label(cfg.get("eviction"), "eviction")
    prefetch = _policy_label(cfg.get("prefetch"), "prefetch")
    miss = _policy_label(cfg.get("miss"), "miss")
    run_id = _run_id("timed-file", trace_hash, cfg)
    from moesim.policies.labels import is_offline, policy_label

    try:
        offline = is_offline(eviction, prefetch)
    except UserError:  # a policy this build does not register
        offline = False

    identity = {
        "run_id": run_id, "trace": str(meta.get("trace") or path.stem), "trace_hash": trace_hash,
        "profile": str(cfg.get("profile") or profile.get("name") or ""),
        "profile_set": ";".join(cfg.get("profile_overrides") or []),
        "eviction": eviction, "prefetch": prefetch, "miss": miss, "policy": policy_label(eviction, prefetch, miss),
        "offline": offline,
        "capacity": f"{int(cfg.get('capacity_bytes') or 0)}B", "capacity_bytes": cfg.get("capacity_bytes"),
        "scope": cfg.get("scope", "global"), "mode": "event", "seed": cfg.get("seed", 0),
        "routed_accesses": summary.get("routed_accesses"),
        "passes": int(cells["pass"].max()) + 1 if len(cells) else 0,
    }
    row = adapters.timed_run_row(summary, identity)
    layers, passes = adapters.cell_aggregates(cells, run_id)
    requests = pd.DataFrame(meta.get("requests") or {})
    parts: tables.RunTables = {
        "runs": arrow_table("runs", row, 1), "layers": layers, "passes": passes,
        "links": adapters.link_table(summary, run_id),
        "requests": arrow_table("requests", _columns(requests, run_id, tables.columns("requests"))),
    }
    if {"start_s", "gate_s", "end_s", "stall_s", "phase"} <= set(cells.columns) and len(cells):
        phase = cells.groupby("pass", sort=True)["phase"].first()
        window = adapters.timeline_window(np.where(phase.to_numpy() == "decode", 1, 0), DEFAULT_TIMELINE_PASSES)
        lane = adapters.compute_lane(cells, run_id, window)
        parts["timeline"] = arrow_table("timeline", {c: lane[c].to_numpy() for c in lane.columns})
    out = ResultSet.from_run_tables([parts])
    if len(out.timeline):
        out.notes.append(f"{path.name}: the saved timed result has no per-copy times; its timeline shows the "
                         "compute stream only")
    return out

