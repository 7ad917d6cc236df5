"""One Parquet file holding every table of a set of runs (the sweep dataset's unit, docs/metrics.md).

Layout: one long table. Column `table` names the table a row belongs to ("runs", "layers",
"passes", "links", "requests", "timeline"); the other columns are the union of those tables'
columns (moesim.reports.tables), empty where a table has no such column. One schema for every
file means a dataset of thousands of run files concatenates without coercion. The schema
metadata key b"moesim" holds JSON: {"format": FORMAT, ...} plus what the writer adds (the resolved
run configuration). No timestamps: the same runs give the same bytes.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moesim.atomic_io import atomic_path
from moesim.errors import UserError
from moesim.reports import tables
from moesim.reports.tables import ResultSet

FORMAT = "moesim.runs/1"
METADATA_KEY = b"moesim"


def _union_fields() -> list[pa.Field]:
    fields: dict[str, pa.DataType] = {}
    for name, table_fields in tables.TABLES.items():
        for col, typ in table_fields:
            if fields.setdefault(col, typ) != typ:
                raise TypeError(f"column {col!r} has two types across result tables")
    return [pa.field("table", pa.string())] + [pa.field(c, t) for c, t in fields.items()]


UNION_SCHEMA = pa.schema(_union_fields())


def to_long_table(results: ResultSet | tables.RunTables) -> pa.Table:
    """The long table of a ResultSet (pandas) or of one run's Arrow tables."""
    parts = []
    for name in tables.TABLES:
        if isinstance(results, ResultSet):
            df = results.table(name)
            if not len(df):
                continue
            t = tables.to_arrow(df, name)
        else:
            t = results.get(name)
            if t is None or not t.num_rows:
                continue
        n = t.num_rows
        have = set(t.column_names)
        arrays = []
        for f in UNION_SCHEMA:
            if f.name == "table":
                arrays.append(pa.array([name] * n, type=pa.string()))
            elif f.name in have:
                arrays.append(t.column(f.name))
            else:
                arrays.append(pa.nulls(n, type=f.type))
        parts.append(pa.Table.from_arrays(arrays, schema=UNION_SCHEMA))
    return pa.concat_tables(parts) if parts else UNION_SCHEMA.empty_table()


def from_long_table(table: pa.Table) -> ResultSet:
    import pyarrow.compute as pc

    out = ResultSet()
    kinds = table.column("table")
    for name in tables.TABLES:
        sub = table.filter(pc.equal(kinds, name)).select(tables.columns(name))
        if sub.num_rows:
            setattr(out, name, tables.from_arrow(sub, name))
    return out


def write_run_file(path: str | os.PathLike[str], results: ResultSet | tables.RunTables,
                   meta: dict[str, Any], clean_stale: bool = True) -> None:
    """Write `results` to `path` atomically, with `meta` (JSON-ready) in the schema metadata."""
    table = to_long_table(results)
    payload = {"format": FORMAT, **meta}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(payload, sort_keys=True).encode()})
    with atomic_path(path, clean_stale=clean_stale) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=False, write_statistics=False)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The b"moesim" metadata of any Parquet file moesim wrote, or None if it has none."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"cannot read as Parquet: {_first_line(exc)}", str(path)) from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise UserError("moesim metadata is not valid JSON", str(path)) from None


def _read(path: str | os.PathLike[str]) -> pa.Table:
    try:
        return pq.ParquetFile(path).read(use_threads=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"cannot read as Parquet: {_first_line(exc)}", str(path)) from None


def read_long_table(path: str | os.PathLike[str], table: pa.Table | None = None) -> pa.Table:
    """A run file's long table, checked and cast to the current union schema."""
    table = _read(path) if table is None else table
    if table.schema.remove_metadata().equals(UNION_SCHEMA):
        return table
    have = set(table.column_names)
    missing = [f.name for f in UNION_SCHEMA if f.name not in have]
    if missing:
        raise UserError(f"not a moesim run file (lacks columns {', '.join(missing[:5])})", str(path))
    return table.select(UNION_SCHEMA.names).cast(UNION_SCHEMA)


def read_run_file(path: str | os.PathLike[str]) -> tuple[ResultSet, dict[str, Any]]:
    table = _read(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != FORMAT:
        raise UserError(f"not a moesim run file (format {meta.get('format')!r}, expected {FORMAT!r})", str(path))
    return from_long_table(read_long_table(path, table)), meta


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
