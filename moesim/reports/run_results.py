"""The runs of `moesim replay|compare --out` as one run file: the format a sweep writes per run.

Every result moesim writes is a run file (moesim/reports/run_file.py, "moesim.runs/1"): the run
tables of moesim/reports/tables.py, built by the same adapters the sweeps use
(moesim/reports/adapters.py), so reports read one format. Count runs keep their per-layer and
per-pass tables; timed runs add links, requests and a timeline of the first decode passes. The
file's metadata holds the moesim and dependency versions, the trace's identity, and per run its id
and resolved configuration (and, for timed runs, the hardware profile with every value), so a
result can be reproduced. Same inputs give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from moesim.errors import UserError
from moesim.json_values import json_ready
from moesim.policies.labels import DEFAULT_MISS, DEFAULT_PREFETCH
from moesim.reports import adapters, run_file
from moesim.reports.tables import ResultSet, RunTables

TIMELINE_PASSES = 4
"""Decode passes of a timed run whose copies and compute the timeline table keeps."""
RUN_ID_CHARS = 20


def trace_name(trace_source: str | None, trace: Any) -> str:
    """How results name a trace: the file's name, "bundled:NAME", else the model."""
    return Path(str(trace_source or trace.meta.model or "trace")).name


def run_identity(spec: Any, name: str) -> dict[str, Any]:
    """A RunSpec's (moesim/sim/run.py) identity columns of the runs table, with its run_id: the
    first 20 hex digits of SHA-256 over them (docs/metrics.md "Result tables")."""
    specs = [spec.eviction] + ([spec.prefetch] if spec.prefetch.name != DEFAULT_PREFETCH else [])
    identity: dict[str, Any] = {
        "engine": "timed" if spec.timed else "count",
        "trace": name,
        "trace_hash": spec.trace.content_hash(),
        "profile": spec.profile_name if spec.timed else "",
        "profile_set": ";".join(spec.profile_overrides) if spec.timed else "",
        "eviction": spec.eviction.label(),
        "prefetch": spec.prefetch.label() if spec.timed else DEFAULT_PREFETCH,
        "miss": spec.miss.label() if spec.timed else DEFAULT_MISS,
        "policy": spec.label,
        "offline": any(bool(getattr(s.entry.cls, "offline", False)) for s in specs),
        "capacity": spec.capacity or f"{int(spec.capacity_bytes)}B",
        "capacity_bytes": int(spec.capacity_bytes),
        "scope": spec.scope,
        "mode": spec.mode,
        "seed": int(spec.seed),
    }
    key = dict(identity, placement=spec.placement, layer_capacity=spec.layer_capacity,
               options=dataclasses.asdict(spec.options) if spec.timed else None)
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return {"run_id": hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_CHARS], **identity}


def run_tables(spec: Any, result: Any, name: str) -> RunTables:
    """Every table of one run."""
    identity = run_identity(spec, name)
    if spec.timed:
        return adapters.timed_tables(result, identity, pass_table=True, timeline_passes=TIMELINE_PASSES)
    return adapters.count_tables(result, identity, pass_table=True)


def save_runs(path: str | os.PathLike[str], runs: Sequence[tuple[Any, Any]], trace_source: str | None) -> None:
    """Write (RunSpec, result) pairs of one trace to the run file `path`, atomically."""
    from moesim.cli_version import versions
    from moesim.sim.results import resolved_config, run_metadata

    if not runs:
        return
    trace = runs[0][0].trace
    name = trace_name(trace_source, trace)
    parts, records = [], []
    profile = None
    for spec, result in runs:
        tables = run_tables(spec, result, name)
        parts.append(tables)
        run_id = tables["runs"].column("run_id")[0].as_py()
        config = result.config.to_dict() if spec.timed else resolved_config(result, spec.capacity or None)
        records.append({"run_id": run_id, "config": config})
        if spec.timed and profile is None:
            profile = _profile_record(result)
    meta: dict[str, Any] = {**run_metadata(trace, trace_source), "versions": versions(), "runs": records}
    if profile is not None:
        meta["profile"] = profile
    try:
        run_file.write_run_file(path, ResultSet.from_run_tables(parts), json_ready(meta))
    except OSError as exc:
        raise UserError(f"cannot write the result: {exc.strerror or exc}", str(path)) from None


def _profile_record(result: Any) -> dict[str, Any]:
    """The timed run's hardware profile with every value (and its model source)."""
    from moesim.hw_profiles.profile import profile_record

    return {"values": profile_record(result.profile), "model_source": result.model_source}
