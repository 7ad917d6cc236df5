"""The timing engine's result file: the per-cell table as Parquet with the run in its metadata.

`moesim replay --out` writes it (moesim/sim/cli_replay.py); moesim/reports/readers.py reads it
back into the runs tables.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from moesim.atomic_io import atomic_path
from moesim.sim.timed_result import FORMAT, TimedResult, _clean


def save_timed_result(result: TimedResult, path: str) -> None:
    """Write the per-cell table as Parquet, atomically, with everything needed to reproduce it.

    Schema metadata key b"moesim" holds JSON: format, resolved config, profile (all fields),
    model source, trace hash, versions, the run summary and the per-request table. No timestamps:
    identical runs write identical bytes.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moesim.cli_version import versions

    meta = {
        "format": FORMAT,
        "config": result.config.to_dict(),
        "profile": _clean(dataclasses.asdict(result.profile)),
        "model_source": result.model_source,
        "trace_hash": result.trace_hash,
        "versions": versions(),
        "summary": result.summary,
        "requests": _clean(result.requests.to_dict(orient="list")),
    }
    arrays = {name: pa.array(result.cells[name].to_numpy()) for name in result.cells.columns}
    table = pa.table(arrays).replace_schema_metadata(
        {b"moesim": json.dumps(meta, sort_keys=True, allow_nan=False).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def load_timed_metadata(path: str) -> dict[str, Any]:
    """The metadata a saved timed result carries (config, versions, summary, requests)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    return json.loads(schema.metadata[b"moesim"].decode())
