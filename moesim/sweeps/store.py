"""The sweep dataset: a directory with one Parquet run file per run, named by the run's hash.

    DIR/runs/<run_id>.parquet   every table of one run (moesim.reports.run_file), written atomically
    DIR/sweep.json              the spec's name and the ids of its runs (for progress and sweep-table)
    DIR/table.parquet           the combined runs table, rewritten when a sweep finishes

A run file appears whole or not at all (temporary file + rename), so a sweep killed at any
instant leaves only whole results and, at worst, a temporary file that the next start removes;
the next start skips every run whose file exists. Nothing is lost and nothing is run twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import moesim
from moesim.atomic_io import atomic_path, write_text_atomic
from moesim.errors import UserError
from moesim.reports import run_file, tables
from moesim.reports.tables import ResultSet
from moesim.sweeps.execute import RunOutput
from moesim.sweeps.run_config import RunConfig

RUNS = "runs"
MANIFEST = "sweep.json"
TABLE = "table.parquet"
SUFFIX = ".parquet"


def run_path(out: Path, run_id: str) -> Path:
    return Path(out) / RUNS / f"{run_id}{SUFFIX}"


def run_files(out: Path) -> list[Path]:
    folder = Path(out) / RUNS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == SUFFIX and not p.name.startswith("."))


def done_ids(out: Path) -> set[str]:
    return {p.stem for p in run_files(out)}


def remove_partial(out: Path) -> int:
    """Delete temporary files a killed writer left (atomic_io names them .<target>.<random>.tmp)."""
    folder = Path(out) / RUNS
    removed = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def write_run(out: Path, config: RunConfig, output: RunOutput) -> None:
    meta: dict[str, Any] = {"config": config.to_dict(), "moesim_version": moesim.__version__}
    if output.traceback:
        meta["traceback"] = output.traceback
    run_file.write_run_file(run_path(out, output.run_id), output.results, meta)


def write_manifest(out: Path, name: str, run_ids: Iterable[str], source: str) -> None:
    data = {"name": name, "spec": source, "runs": sorted(run_ids)}
    write_text_atomic(Path(out) / MANIFEST, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError("sweep manifest is not valid JSON", str(path)) from None


def is_dataset(path: Path) -> bool:
    return (Path(path) / RUNS).is_dir() or (Path(path) / MANIFEST).is_file()


def read_runs(paths: Iterable[Path]) -> ResultSet:
    """Every table of the given run files, concatenated once and sorted by run_id."""
    parts = [run_file.read_long_table(path) for path in paths]
    if not parts:
        return ResultSet()
    merged = run_file.from_long_table(pa.concat_tables(parts))
    return ResultSet.combine([merged])


def read_dataset(out: Path, run_ids: Iterable[str] | None = None) -> ResultSet:
    """The dataset's runs (all of them, or those in `run_ids` that are done)."""
    files = run_files(out)
    if run_ids is not None:
        wanted = set(run_ids)
        files = [p for p in files if p.stem in wanted]
    return read_runs(files)


def write_table(path: Path, runs: pd.DataFrame) -> None:
    """The runs table as Parquet, atomically and deterministically (sorted by run_id)."""
    table = tables.to_arrow(runs.sort_values("run_id", kind="mergesort"), "runs")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: Path) -> pd.DataFrame:
    try:
        table = pq.ParquetFile(path).read(use_threads=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"cannot read: {str(exc).splitlines()[0]}", str(path)) from None
    return tables.from_arrow(table, "runs")


def runs_table(out: Path, run_ids: Iterable[str] | None = None, fresh: Iterable[str] = ()) -> pd.DataFrame:
    """The runs table of the dataset's run files (those in `run_ids`, if given), sorted by run_id.

    DIR/table.parquet caches the rows of earlier reads: rows whose run file is gone are dropped and
    only run files the cache lacks, or named in `fresh` (just written), are read.
    """
    files = {p.stem: p for p in run_files(out)}
    wanted = set(files) if run_ids is None else set(run_ids) & set(files)
    cache_path = Path(out) / TABLE
    cached = read_table(cache_path) if cache_path.is_file() else tables.empty("runs")
    stale = set(fresh)
    cached = cached[cached["run_id"].isin(wanted - stale)]
    missing = sorted(wanted - set(cached["run_id"]))
    parts = [cached] + ([read_runs(files[i] for i in missing).runs] if missing else [])
    table = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else cached
    return tables.conform(table.sort_values("run_id", kind="mergesort").reset_index(drop=True), "runs")


def combined_table(out: Path) -> pd.DataFrame:
    """Every run in the dataset directory `out` (what `moesim sweep-table` prints)."""
    if not Path(out).is_dir():
        raise UserError("no such sweep directory", str(out))
    if not is_dataset(out):
        raise UserError(f"not a sweep directory (no {RUNS}/ folder)", str(out))
    return runs_table(out)


def dataset_progress(out: Path) -> tuple[int, int | None]:
    """(runs done, runs the last spec asked for, if known)."""
    manifest = read_manifest(out)
    done = done_ids(out)
    if manifest is None:
        return len(done), None
    ids = set(manifest.get("runs", []))
    return len(ids & done), len(ids)

