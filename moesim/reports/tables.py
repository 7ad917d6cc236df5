"""The tidy result tables every report, sweep and what-if study reads (docs/metrics.md, "Result tables").

A run (one trace x profile x policy x capacity x scope x mode x seed) is described by a row of the
`runs` table; its finer tables (`layers`, `passes`, `links`, `requests`, `timeline`) repeat its
`run_id` in every row. A count-only run fills the count columns and leaves the timed ones empty;
a timed run fills both. Columns and their types are fixed here, once, so that every run file has
the same Parquet schema and any number of them concatenate without surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

STR, INT, FLOAT, BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()

COUNT_FIELDS: list[tuple[str, pa.DataType]] = [
    ("requests", INT),
    ("hits", INT),
    ("late_prefetch", INT),
    ("misses", INT),
    ("compulsory", INT),
    ("capacity_misses", INT),
    ("collision", INT),
    ("bytes_fetched", INT),
    ("hit_rate", FLOAT),
]

RUN_FIELDS: list[tuple[str, pa.DataType]] = [
    ("run_id", STR),
    ("status", STR),  # "ok" | "error"
    ("error", STR),  # one line; "" when ok
    ("engine", STR),  # "count" | "timed"
    ("trace", STR),
    ("trace_hash", STR),
    ("profile", STR),  # "" for count-only runs
    ("profile_set", STR),  # "path=value;path=value" fields set on the profile, "" if none
    ("eviction", STR),
    ("prefetch", STR),
    ("miss", STR),
    ("policy", STR),  # display label: eviction [+ pf=prefetch] [+ miss=...]
    ("offline", BOOL),  # a policy reads the future: a bound, not deployable
    ("lossy", BOOL),  # miss handling changes the model's output
    ("capacity", STR),  # as given ("5%", "4000MiB")
    ("capacity_bytes", INT),
    ("capacity_share", FLOAT),  # capacity_bytes / bytes of every routed object
    ("scope", STR),
    ("mode", STR),
    ("seed", INT),
    ("passes", INT),
    ("routed_accesses", INT),
    ("total_object_bytes", INT),
    *COUNT_FIELDS,
    ("miss_rate", FLOAT),
    ("evictions", INT),
    ("bypasses", INT),
    ("prefetch_issued", INT),
    ("prefetch_useful", INT),
    ("prefetch_late", INT),
    ("prefetch_wasted", INT),
    ("prefetch_bytes", INT),
    ("total_s", FLOAT),
    ("compute_s", FLOAT),
    ("stall_s", FLOAT),
    ("cpu_wait_s", FLOAT),
    ("ttft_mean_s", FLOAT),
    ("tpot_mean_s", FLOAT),
    ("tpot_p90_s", FLOAT),
    ("tokens_per_s", FLOAT),
    ("energy_j", FLOAT),
    ("bytes_moved", FLOAT),
    ("time_bound_s", FLOAT),
    ("tpot_bound_s", FLOAT),
    ("belady_misses", FLOAT),
]

LAYER_FIELDS: list[tuple[str, pa.DataType]] = [
    ("run_id", STR),
    ("layer", INT),
    *COUNT_FIELDS,
    ("compute_s", FLOAT),
    ("stall_s", FLOAT),
]

PASS_FIELDS: list[tuple[str, pa.DataType]] = [
    ("run_id", STR),
    ("pass", INT),
    ("phase", STR),
    *COUNT_FIELDS,
    ("start_s", FLOAT),
    ("end_s", FLOAT),
    ("compute_s", FLOAT),
    ("stall_s", FLOAT),
]

LINK_FIELDS: list[tuple[str, pa.DataType]] = [
    ("run_id", STR),
    ("link", STR),
    ("bytes", INT),
    ("copies", INT),
    ("busy_s", FLOAT),
    ("utilization", FLOAT),
    ("energy_j", FLOAT),
]

REQUEST_FIELDS: list[tuple[str, pa.DataType]] = [
    ("run_id", STR),
    ("request", INT),
    ("output_tokens", INT),
    ("ttft_s", FLOAT),
    ("tpot_s", FLOAT),
    ("e2e_s", FLOAT),
    ("tokens_per_s", FLOAT),
]

TIMELINE_FIELDS: list[tuple[str, pa.DataType]] = [
    ("run_id", STR),
    ("lane", STR),  # "compute", "h2d engine 0", "ssd queue", ...
    ("kind", STR),  # "dense" | "expert" | "stall" | "demand" | "prefetch"
    ("start_s", FLOAT),
    ("end_s", FLOAT),
    ("pass", INT),
    ("layer", INT),
]

TABLES: dict[str, list[tuple[str, pa.DataType]]] = {
    "runs": RUN_FIELDS,
    "layers": LAYER_FIELDS,
    "passes": PASS_FIELDS,
    "links": LINK_FIELDS,
    "requests": REQUEST_FIELDS,
    "timeline": TIMELINE_FIELDS,
}

TIMED_RUN_COLUMNS = ("total_s", "compute_s", "stall_s", "cpu_wait_s", "ttft_mean_s", "tpot_mean_s", "tpot_p90_s",
                     "tokens_per_s", "energy_j", "bytes_moved", "time_bound_s", "tpot_bound_s")


def columns(table: str) -> list[str]:
    return [name for name, _ in TABLES[table]]


def schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in TABLES[table]])


def empty(table: str) -> pd.DataFrame:
    return conform(pd.DataFrame(), table)


def _missing(typ: pa.DataType, n: int) -> Any:
    if typ == INT:
        return pd.array([None] * n, dtype="Int64")
    if typ == FLOAT:
        return np.full(n, np.nan)
    if typ == BOOL:
        return np.zeros(n, dtype=bool)
    return np.full(n, "", dtype=object)


def _column(values: pd.Series, typ: pa.DataType) -> Any:
    if typ == INT:
        if isinstance(values.dtype, pd.Int64Dtype):
            return values.array
        if values.dtype.kind in "iub":
            return pd.array(values.to_numpy(dtype=np.int64), dtype="Int64")
        return pd.array(pd.to_numeric(values, errors="coerce"), dtype="Int64")
    if typ == FLOAT:
        if values.dtype.kind in "iuf":
            return values.to_numpy(dtype=np.float64)
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if typ == BOOL:
        if values.dtype.kind == "b":
            return values.to_numpy()
        return values.fillna(False).to_numpy(dtype=bool)
    out = values.to_numpy(dtype=object, na_value=None).copy()
    for i, v in enumerate(out):
        if v is None or (isinstance(v, float) and v != v):
            out[i] = ""
        elif not isinstance(v, str):
            out[i] = str(v)
    return out


def conform(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """`df` with exactly the table's columns in order and types (missing ones empty, extras dropped).

    Integer columns use pandas' nullable Int64 so that an error row can leave counts empty;
    strings are Python str with "" for missing, booleans False for missing.
    """
    n = len(df)
    out = {name: (_column(df[name], typ) if name in df.columns else _missing(typ, n)) for name, typ in TABLES[table]}
    return pd.DataFrame(out, index=pd.RangeIndex(n), copy=False)


def to_arrow(df: pd.DataFrame, table: str) -> pa.Table:
    """A conformed frame as an Arrow table with the table's fixed schema."""
    df = conform(df, table)
    arrays = []
    for name, typ in TABLES[table]:
        col = df[name]
        if typ == INT:
            arrays.append(pa.array(col.array, type=INT))
        elif typ == STR:
            arrays.append(pa.array(col.tolist(), type=STR))
        else:
            arrays.append(pa.array(col.to_numpy(), type=typ, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema(table))


def arrow_table(table: str, cols: Mapping[str, Any], n: int | None = None) -> pa.Table:
    """An Arrow table with the table's fixed schema from column values (arrays, lists or scalars).

    Scalars are repeated `n` times (default: the length of the first array given, else 1); missing
    columns are null. This is the cheap path a run uses to record its results (no pandas).
    """
    if n is None:
        n = next((len(v) for v in cols.values() if isinstance(v, (list, tuple, np.ndarray, pd.Series,
                                                                      pd.api.extensions.ExtensionArray))), 1)
    arrays = []
    for name, typ in TABLES[table]:
        value = cols.get(name, None)
        if value is None:
            arrays.append(pa.nulls(n, type=typ))
            continue
        if isinstance(value, (pd.Series, pd.api.extensions.ExtensionArray)):
            value = value.to_numpy(dtype=object if typ == STR else None)
        if not isinstance(value, (list, tuple, np.ndarray)):
            value = [_scalar(value)] * n
        if isinstance(value, np.ndarray) and typ == INT and value.dtype.kind == "f":
            value = [None if v != v else int(v) for v in value.tolist()]
        if isinstance(value, np.ndarray) and typ == STR:
            value = value.astype(str) if value.dtype.kind in "USO" and not any(v is None for v in value) \
                else value.tolist()
        arrays.append(pa.array(value, type=typ, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema(table))


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def from_arrow(table: pa.Table, name: str) -> pd.DataFrame:
    df = table.to_pandas(types_mapper={INT: pd.Int64Dtype()}.get)
    return conform(df, name)


RunTables = dict[str, pa.Table]
"""One run's tables as Arrow (what a run produces and a run file stores), keyed by table name."""


@dataclass
class ResultSet:
    """The tables of one or many runs, plus notes a report should show (what is missing and why)."""

    runs: pd.DataFrame = field(default_factory=lambda: empty("runs"))
    layers: pd.DataFrame = field(default_factory=lambda: empty("layers"))
    passes: pd.DataFrame = field(default_factory=lambda: empty("passes"))
    links: pd.DataFrame = field(default_factory=lambda: empty("links"))
    requests: pd.DataFrame = field(default_factory=lambda: empty("requests"))
    timeline: pd.DataFrame = field(default_factory=lambda: empty("timeline"))
    notes: list[str] = field(default_factory=list)

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    @staticmethod
    def from_run_tables(runs: Iterable[RunTables]) -> "ResultSet":
        """The ResultSet of several runs' Arrow tables (concatenated once per table, sorted)."""
        runs = list(runs)
        out = ResultSet()
        for name in TABLES:
            parts = [r[name] for r in runs if name in r and r[name].num_rows]
            if parts:
                setattr(out, name, _sort(from_arrow(pa.concat_tables(parts), name), name))
        return out

    @staticmethod
    def combine(parts: Iterable["ResultSet"]) -> "ResultSet":
        """All runs of `parts`, sorted by run_id; a run found in two parts is taken from the first."""
        seen: set[str] = set()
        frames: dict[str, list[pd.DataFrame]] = {name: [] for name in TABLES}
        notes: list[str] = []
        for part in parts:
            new = [r for r in part.runs["run_id"].tolist() if r not in seen]
            seen.update(new)
            for name in TABLES:
                df = part.table(name)
                if len(df):
                    frames[name].append(df[df["run_id"].isin(new)])
            notes.extend(n for n in part.notes if n not in notes)
        out = ResultSet(notes=notes)
        for name, parts_of in frames.items():
            if parts_of:
                setattr(out, name, conform(_sort(pd.concat(parts_of, ignore_index=True), name), name))
        return out


SORT_KEYS = {
    "runs": ["run_id"],
    "layers": ["run_id", "layer"],
    "passes": ["run_id", "pass"],
    "links": ["run_id", "link"],
    "requests": ["run_id", "request"],
    "timeline": ["run_id", "start_s", "lane", "kind"],
}


def _sort(df: pd.DataFrame, name: str) -> pd.DataFrame:
    return df.sort_values(SORT_KEYS[name], kind="mergesort").reset_index(drop=True)
