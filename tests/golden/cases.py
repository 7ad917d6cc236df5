"""The golden set: README commands whose outputs must stay byte-identical across refactors.

Each case runs `moesim` in-process in a scratch folder (cases share it, in order: the report reads
the files the replays and the sweep wrote) and records its stdout, its exit code and a canonical
dump of every file it wrote. Parquet files are dumped as their schema, key-value metadata and rows
(the bytes depend on the pyarrow version, the content does not); other large files by sha256.

Regenerate after an intended change of results (say why in the commit):

    PYTHONPATH=$PWD python -m tests.golden.regen

tests/golden/test_golden.py re-runs every case and compares with tests/golden/expected/.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]  # written as <repo> (a profile's source_file is an absolute path)
EXPECTED = HERE / "expected"
SWEEP_SPEC = HERE / "sweep.yaml"
MAX_INLINE = 20_000  # characters of a Parquet file's rows kept inline
HEAD_ROWS = 20


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    writes: tuple[str, ...] = ()  # files (relative to the scratch folder) whose content is part of the result


CASES: tuple[Case, ...] = (
    Case("replay_count_json",
         ("replay", "--trace", "bundled:qwen", "--policy", "lru", "--capacity", "4000MiB", "--count-only", "--json",
          "--out", "count.parquet"), ("count.parquet",)),
    Case("replay_count_sequential",
         ("replay", "--trace", "bundled:qwen", "--policy", "lfu:decay=0.9", "--capacity", "1%,5%,25%",
          "--replay", "sequential", "--count-only")),
    Case("compare_count",
         ("compare", "--trace", "bundled:qwen", "--policies", "lru,least-stale,lru-ds", "--capacity", "1%,5%,25%",
          "--count-only")),
    Case("replay_timed_prefetch",
         ("replay", "--trace", "bundled:qwen", "--profile", "phone-oneplus-15r", "--model", "qwen3-30b-a3b",
          "--policy", "lru", "--capacity", "4000MiB", "--prefetch", "previous-pass", "--json", "--out", "timed.parquet"),
         ("timed.parquet",)),
    Case("replay_timed_cpu_miss",
         ("replay", "--trace", "bundled:qwen", "--profile", "rtx4090", "--policy", "least-stale", "--capacity", "5%",
          "--prefetch", "markov", "--miss", "cpu")),
    Case("compare_timed_placement",
         ("compare", "--trace", "bundled:qwen", "--profile", "phone-oneplus-15r", "--policies", "lru,lfu",
          "--capacity", "4000MiB", "--placement", "gpu,cpu-layers:8")),
    Case("sweep", ("sweep", str(SWEEP_SPEC), "--out", "sweep"), ("sweep/table.parquet",)),
    Case("sweep_table", ("sweep-table", "sweep", "--json")),
    Case("report", ("report", "count.parquet", "timed.parquet", "sweep", "--out", "report.html", "--md", "report.md"),
         ("report.md", "report.html")),
)


def dump_file(path: Path) -> str:
    """A file's content as text: Parquet as schema, metadata and rows; Markdown whole; others by hash."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
        lines = [f"schema: {table.schema.to_string(show_schema_metadata=False)}",
                 "metadata: " + json.dumps(meta, sort_keys=True)]
        rows = table.to_pandas().to_csv(index=False, float_format="%.17g")
        if len(rows) > MAX_INLINE:  # big tables: the first rows to read, a hash for the rest
            head = "".join(rows.splitlines(True)[:HEAD_ROWS])
            rows = f"{table.num_rows} rows, csv sha256 {hashlib.sha256(rows.encode()).hexdigest()}\n{head}"
        lines.append(rows)
        return "\n".join(lines)
    data = path.read_bytes()
    if path.suffix in (".md", ".txt", ".json"):
        return data.decode()
    return f"sha256 {hashlib.sha256(data).hexdigest()} ({len(data)} bytes)"


def run_case(case: Case, scratch: Path) -> str:
    """Run one case in `scratch` and return its recorded output."""
    import os

    from moesim.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(case.argv))
    finally:
        os.chdir(cwd)
    parts = [f"$ moesim {' '.join(case.argv)}".replace(str(HERE), "tests/golden"), f"exit {rc}", "--- stdout",
             out.getvalue().replace(str(HERE), "tests/golden")]
    for name in case.writes:
        parts += [f"--- {name}", dump_file(scratch / name)]
    return ("\n".join(parts) + "\n").replace(str(REPO), "<repo>")


def run_all(scratch: Path) -> dict[str, str]:
    return {case.name: run_case(case, scratch) for case in CASES}
