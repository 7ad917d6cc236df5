"""Reading a sweep dataset directory (moesim/sweeps/store.py writes it; docs/metrics.md):

    DIR/runs/<run_id>.parquet   one run file per run (moesim/reports/run_file.py)
    DIR/sweep.json              the manifest: the last spec's name, source and run ids
    DIR/table.parquet           a cache of the runs table

Here, in reports, so that reading results needs nothing from the sweeps (which import reports).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from moesim.reports import run_file
from moesim.reports.tables import ResultSet

RUNS = "runs"
MANIFEST = "sweep.json"
TABLE = "table.parquet"
SUFFIX = ".parquet"


def run_files(out: Path) -> list[Path]:
    folder = Path(out) / RUNS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == SUFFIX and not p.name.startswith("."))


def reads_back(path: Path) -> bool:
    """True if the run file's footer and row groups are whole (a truncated file has no footer)."""
    try:
        meta = pq.read_metadata(path)
        return meta.num_rows > 0 and run_file.METADATA_KEY in (meta.metadata or {})
    except (OSError, pa.ArrowException, ValueError):
        return False


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
    """The dataset's runs (all of them, or those in `run_ids` that are done); a run file that does
    not read back whole is left out with a note (the next sweep start runs it again)."""
    files = run_files(out)
    if run_ids is not None:
        wanted = set(run_ids)
        files = [p for p in files if p.stem in wanted]
    whole = [p for p in files if reads_back(p)]
    if len(whole) < len(files):
        bad = [p for p in files if p not in set(whole)]
        print(f"moesim: note: {len(bad)} damaged run file(s) left out (first: {bad[0]}); run the sweep again to "
              "redo them", file=sys.stderr)
    return read_runs(whole)
