"""Count-replay results as JSON-ready records and as one Parquet file (docs/metrics.md, "Replay counts").

Every record carries the full resolved configuration (policy with every parameter, capacity in
bytes per partition, scope, replay mode, seed), the moesim version and the trace's content hash,
so a number can always be traced back to what produced it.

Parquet layout: one long table, one row per (run, table, index):
    policy, capacity, capacity_bytes, scope, mode   which run the row belongs to
    table        "layer" (index = trace layer) or "pass" (index = pass number)
    index, phase phase is "prefill"/"decode" for pass rows and "all" for layer rows
    requests, hits, late_prefetch, misses, compulsory, capacity_misses, collision,
    bytes_fetched, hit_rate
The schema metadata key "moesim" holds the JSON of run_metadata() plus every run's record.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import moesim
from moesim.atomic_io import atomic_path
from moesim.errors import UserError
from moesim.sim import metrics
from moesim.sim.count_replay import CountResult

METADATA_KEY = b"moesim"
RUN_COLUMNS = ["policy", "capacity", "capacity_bytes", "scope", "mode"]


def resolved_config(result: CountResult, capacity_text: str | None = None) -> dict[str, Any]:
    """What ran, with every default filled in."""
    spec = result.spec
    cfg = result.config
    entry = spec.entry
    return {
        "policy": {
            "name": spec.name,
            "label": spec.label(),
            "kind": spec.kind,
            "params": dataclasses.asdict(spec.params) if dataclasses.is_dataclass(spec.params) else {},
            "alias_of": entry.alias_of,
            "offline": bool(getattr(entry.cls, "offline", False)),
        },
        "capacity": capacity_text if capacity_text is not None else f"{int(cfg.capacity_bytes)}B",
        "capacity_bytes": int(cfg.capacity_bytes),
        "partition_capacity_bytes": list(result.capacities or []),
        "scope": cfg.scope,
        "mode": cfg.mode,
        "seed": int(cfg.seed),
    }


def run_metadata(trace: Any, trace_source: str | None = None) -> dict[str, Any]:
    """Version and trace identity shared by every run on one trace."""
    return {
        "moesim_version": moesim.__version__,
        "trace": {
            "source": trace_source,
            "hash": trace.content_hash(),
            "model": trace.meta.model,
            "passes": trace.n_passes,
            "routed_accesses": trace.n_accesses,
            "layers": trace.meta.n_layers,
            "experts": trace.meta.n_experts,
            "total_object_bytes": trace.total_object_bytes(),
        },
    }


def result_record(result: CountResult, capacity_text: str | None = None) -> dict[str, Any]:
    """One run: its resolved config and its summary counts (metrics.summary)."""
    return {"config": resolved_config(result, capacity_text), "summary": metrics.summary(result)}


def result_tables(result: CountResult, capacity_text: str | None = None) -> pd.DataFrame:
    """The per-layer and per-pass rows of one run, in the Parquet layout above."""
    cfg = resolved_config(result, capacity_text)
    layer = metrics.by_layer(result).rename(columns={"layer": "index"})
    layer.insert(1, "phase", "all")
    layer.insert(0, "table", "layer")
    passes = metrics.by_pass(result).rename(columns={"pass": "index"})
    passes.insert(0, "table", "pass")
    df = pd.concat([layer, passes], ignore_index=True)
    df = df.rename(columns={"capacity": "capacity_misses"})
    df.insert(0, "mode", cfg["mode"])
    df.insert(0, "scope", cfg["scope"])
    df.insert(0, "capacity_bytes", cfg["capacity_bytes"])
    df.insert(0, "capacity", cfg["capacity"])
    df.insert(0, "policy", cfg["policy"]["label"])
    df["index"] = df["index"].astype("int64")
    return df


def save_count_results(results: Sequence[tuple[CountResult, str | None]], path: str | os.PathLike[str],
                       trace_source: str | None = None) -> None:
    """Write several runs (one trace) to one Parquet file, atomically."""
    if not results:
        raise ValueError("no results to save")
    trace = results[0][0].trace
    frames = [result_tables(r, text) for r, text in results]
    df = pd.concat(frames, ignore_index=True)
    meta = run_metadata(trace, trace_source)
    meta["runs"] = [result_record(r, text) for r, text in results]
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    except OSError as exc:
        raise UserError(f"cannot write the result: {exc.strerror or exc}", str(path)) from None


def save_count_result(result: CountResult, path: str | os.PathLike[str], capacity_text: str | None = None,
                      trace_source: str | None = None) -> None:
    """Write one run's per-layer and per-pass tables (and its config as metadata) to Parquet."""
    save_count_results([(result, capacity_text)], path, trace_source)


def load_count_result(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a file written by save_count_result(s): the rows and the metadata dict."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"cannot read a result Parquet file: {exc}", str(path)) from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise UserError("not a moesim count result (no 'moesim' metadata)", str(path))
    return table.to_pandas(), json.loads(raw)
