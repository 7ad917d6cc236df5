"""The sweep dataset: a directory with one Parquet run file per run, named by the run's hash.

    DIR/runs/<run_id>.parquet   every table of one run (moesim.reports.run_file), written atomically
    DIR/sweep.json              the spec's name and the ids of its runs (for progress and sweep-table)
    DIR/table.parquet           the combined runs table, rewritten when a sweep finishes
    DIR/.lock                   held (flock) by the one sweep writing the folder

A run file appears whole or not at all (temporary file + rename), so a sweep killed at any
instant leaves only whole results and, at worst, a temporary file that the next start removes
(under the lock, so never a live sweep's); the next start skips every run whose file reads back
whole and sets a damaged one aside (`<id>.parquet.damaged`) to run again. The table is a cache:
missing or damaged, it is rebuilt from runs/. Nothing is lost and nothing is run twice. Reading a
dataset (is_dataset, read_dataset, run_files) is moesim/reports/dataset.py's, re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import moesim
from moesim.atomic_io import TMP_SUFFIX, atomic_path, is_stale_tmp, write_text_atomic
from moesim.errors import UserError
from moesim.reports import run_file, tables
from moesim.reports.dataset import (MANIFEST, RUNS, SUFFIX, TABLE, is_dataset, read_dataset, read_runs,  # noqa: F401
                                    reads_back, run_files)
from moesim.sweeps.execute import RunOutput
from moesim.sweeps.run_config import RunConfig

LOCK = ".lock"
DAMAGED = ".damaged"
# run files read per Arrow concatenation while building the runs table: keeps the pieces' per-file
# overhead (schemas, buffers) from growing with the number of runs
TABLE_BATCH = 256


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the folder's exclusive lock for a sweep's lifetime; UserError if another sweep holds it.

    flock is released by the kernel when the holder dies, so a killed sweep never leaves it stuck.
    """
    import fcntl

    out = Path(out)
    path = out / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"cannot create the sweep lock ({exc.strerror or exc})", str(out)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(f"another sweep (process {holder}) is writing to this folder; wait for it or use "
                            "another --out", str(out)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def run_path(out: Path, run_id: str) -> Path:
    return Path(out) / RUNS / f"{run_id}{SUFFIX}"


def set_aside(path: Path) -> Path:
    """Rename a damaged run file out of the way (kept for inspection, no longer counted as done)."""
    aside = path.with_name(path.name + DAMAGED)
    os.replace(path, aside)
    return aside


def done_ids(out: Path, check: bool = False) -> set[str]:
    """Ids of the runs whose file exists; with `check` (a sweep's start, under its lock) only those
    that read back whole: a damaged one is set aside so that its run is done again."""
    done = set()
    for p in run_files(out):
        if check and not reads_back(p):
            set_aside(p)
            continue
        done.add(p.stem)
    return done


def remove_partial(out: Path) -> int:
    """Delete temporary files a killed writer left (atomic_io names them .<target>.<pid>.<random>.tmp).

    Call it holding the folder's lock: every temporary file in runs/ then belongs to a dead sweep;
    beside runs/ (a report being written into the folder) only those whose writer is gone go.
    """
    removed = 0
    runs = Path(out) / RUNS
    for folder, any_tmp in ((runs, True), (Path(out), False)):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and (any_tmp or is_stale_tmp(p)):
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def write_run(out: Path, config: RunConfig, output: RunOutput) -> None:
    meta: dict[str, Any] = {"config": config.to_dict(), "moesim_version": moesim.__version__}
    if output.traceback:
        meta["traceback"] = output.traceback
    run_file.write_run_file(run_path(out, output.run_id), output.results, meta, clean_stale=False)


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


def write_table(path: Path, runs: pd.DataFrame, where: str | None = None, replace_input: bool = False) -> None:
    """The runs table as Parquet, atomically and deterministically (sorted by run_id)."""
    table = tables.to_arrow(runs.sort_values("run_id", kind="mergesort"), "runs")
    with atomic_path(path, where, replace_input=replace_input) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: Path) -> pd.DataFrame:
    try:
        table = pq.ParquetFile(path).read(use_threads=False)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"cannot read: {str(exc).splitlines()[0]}", str(path)) from None
    return tables.from_arrow(table, "runs")


def _cached_table(path: Path) -> pd.DataFrame:
    """The table cache, or an empty one when it is missing or damaged (it is rebuilt from runs/)."""
    if not path.is_file():
        return tables.empty("runs")
    try:
        return read_table(path)
    except (UserError, KeyError, ValueError, TypeError, pa.ArrowException):
        print(f"moesim: note: {path} is damaged; rebuilding it from {RUNS}/", file=sys.stderr)
        return tables.empty("runs")


def read_runs_rows(paths: Iterable[Path], damaged: list[Path] | None = None) -> pd.DataFrame:
    """Only the "runs" rows and columns of the given run files: memory proportional to the table's
    columns, not to every table of every run. A file that does not read back is skipped and listed
    in `damaged` (or a UserError when `damaged` is None)."""
    import pyarrow.compute as pc

    columns = ["table", *tables.columns("runs")]
    pieces: list[pa.Table] = []
    batch: list[pa.Table] = []
    for path in paths:
        try:
            part = pq.read_table(path, columns=columns, use_threads=False)
            part = part.filter(pc.equal(part.column("table"), "runs")).drop(["table"])
            part = part.cast(pa.schema([part.schema.field(c) for c in part.column_names]))  # drop metadata
        except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
            if damaged is None:
                raise UserError(f"cannot read as a run file: {str(exc).splitlines()[0][:200]}", str(path)) from None
            damaged.append(path)
            continue
        batch.append(part.replace_schema_metadata(None))
        if len(batch) >= TABLE_BATCH:
            pieces.append(pa.concat_tables(batch).combine_chunks())
            batch = []
    if batch:
        pieces.append(pa.concat_tables(batch).combine_chunks())
    if not pieces:
        return tables.empty("runs")
    return tables.from_arrow(pa.concat_tables(pieces), "runs")


def runs_table(out: Path, run_ids: Iterable[str] | None = None, fresh: Iterable[str] = ()) -> pd.DataFrame:
    """The runs table of the dataset's run files (those in `run_ids`, if given), sorted by run_id.

    DIR/table.parquet caches the rows of earlier reads: rows whose run file is gone are dropped and
    only run files the cache lacks, or named in `fresh` (just written), are read. A damaged cache is
    rebuilt; a damaged run file is left out with a note (the next sweep start runs it again).
    """
    files = {p.stem: p for p in run_files(out)}
    wanted = set(files) if run_ids is None else set(run_ids) & set(files)
    cached = _cached_table(Path(out) / TABLE)
    stale = set(fresh)
    cached = cached[cached["run_id"].isin(wanted - stale)]
    missing = sorted(wanted - set(cached["run_id"]))
    damaged: list[Path] = []
    parts = [cached] + ([read_runs_rows((files[i] for i in missing), damaged)] if missing else [])
    if damaged:
        print(f"moesim: note: {len(damaged)} damaged run file(s) left out (first: {damaged[0]}); run the sweep "
              "again to redo them", file=sys.stderr)
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

