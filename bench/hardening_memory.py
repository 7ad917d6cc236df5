"""Issue #16's memory targets: a one-pass trace file, and a 10,000-run sweep table.

Targets:
  one-pass file       loading (= validating) a moesim Parquet file that holds ONE pass of N accesses
                      (a long prefill) peaks at <= 4 bytes per access + 200 MB over the RSS before
                      the load, in a fresh subprocess (the same measure as bench.trace_memory).
  sweep table         building the runs table of a 10,000-run sweep folder (store.runs_table, what
                      `moesim sweep` and `moesim sweep-table` do when the table cache is missing)
                      peaks at < 1 GB over the RSS before it. Beside it, for the ratio, the old way
                      (every table of every run file read, then the runs table taken from them).

Run: python -m bench.hardening_memory [--accesses 8M] [--runs 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.trace_memory import _RSS_HELPERS

PEAK_ALLOWANCE_BYTES = 200_000_000
BYTES_PER_ACCESS_GOAL = 4.0
TABLE_GOAL_BYTES = 1_000_000_000

_LOAD = _RSS_HELPERS + """
import sys, json
from moesim.traces.format.io import load_trace
import numpy, pyarrow.parquet
base = reset_peak()
t = load_trace(sys.argv[1])
print(json.dumps({"peak_delta": peak() - base, "accesses": t.n_accesses, "passes": t.n_passes}))
"""

_TABLE = _RSS_HELPERS + """
import sys, json, time
from pathlib import Path
from moesim.sweeps import store
import pandas, pyarrow.parquet
out = Path(sys.argv[1])
base = reset_peak()
start = time.perf_counter()
if sys.argv[2] == "columns":
    table = store.runs_table(out)
else:  # the way before issue #16: every table of every run file, then the runs table
    table = store.read_runs(store.run_files(out)).runs
print(json.dumps({"peak_delta": peak() - base, "rows": len(table), "seconds": time.perf_counter() - start}))
"""


def _subprocess(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_pass_file(folder: Path, accesses: int) -> Path:
    """A trace of one request whose whole prompt is one prefill pass of about `accesses` accesses."""
    from moesim.traces.format.io import save_trace
    from moesim.traces.synth.synthetic import SynthConfig, generate

    tokens = max(1, accesses // (16 * 8))
    config = SynthConfig(n_layers=16, n_experts=64, top_k=8).with_settings(
        [f"prefill=fixed:{tokens}", "decode=fixed:0", "n_requests=1"])
    trace = generate(config)
    path = folder / "one-pass.parquet"
    save_trace(trace, path)
    assert trace.n_passes == 1
    return path


def sweep_folder(folder: Path, runs: int) -> Path:
    """A sweep folder of `runs` run files: one real count run's tables under `runs` run ids."""
    import pyarrow as pa

    from moesim.reports import run_file
    from moesim.sweeps import store
    from moesim.sweeps.plan import plan_sweep
    from moesim.sweeps.execute import execute_run
    from moesim.sweeps.spec import parse_spec
    from moesim.traces.synth.synthetic import SynthConfig, generate

    trace = generate(SynthConfig(n_layers=16, n_experts=64, top_k=8, n_requests=2))
    plan = plan_sweep(parse_spec({"traces": {"t": trace}, "eviction": ["lru"], "capacities": ["5%"]}))
    output = execute_run(plan.runs[0], trace)
    out = folder / "sweep"
    (out / store.RUNS).mkdir(parents=True)
    for i in range(runs):
        run_id = f"{i:020x}"
        tables = {}
        for name, table in output.results.items():
            if "run_id" in table.column_names:
                idx = table.column_names.index("run_id")
                table = table.set_column(idx, "run_id", pa.array([run_id] * table.num_rows, type=pa.string()))
            tables[name] = table
        run_file.write_run_file(store.run_path(out, run_id), tables, {"config": {"i": i}}, clean_stale=False)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from moesim.traces.synth.synth_config import parse_count

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", default="8M")
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args(argv)
    accesses = parse_count(args.accesses)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        path = one_pass_file(folder, accesses)
        load = _subprocess(_LOAD, str(path))
        goal = BYTES_PER_ACCESS_GOAL * load["accesses"] + PEAK_ALLOWANCE_BYTES
        start = time.perf_counter()
        out = sweep_folder(folder, args.runs)
        write_s = time.perf_counter() - start
        columns = _subprocess(_TABLE, str(out), "columns")
        old = _subprocess(_TABLE, str(out), "all-tables")
    return {
        "targets": {
            "one-pass file: load peak RSS delta (MB)": {
                "value": round(load["peak_delta"] / 1e6, 1), "goal": f"<= {goal / 1e6:.0f}",
                "pass": load["peak_delta"] <= goal},
            f"{args.runs:,}-run sweep table: peak RSS delta (MB)": {
                "value": round(columns["peak_delta"] / 1e6, 1), "goal": f"< {TABLE_GOAL_BYTES / 1e6:.0f}",
                "pass": columns["peak_delta"] < TABLE_GOAL_BYTES and columns["rows"] == args.runs},
        },
        "one_pass_accesses": load["accesses"],
        "one_pass_bytes_per_access_at_peak": round(load["peak_delta"] / max(load["accesses"], 1), 1),
        "table_seconds": round(columns["seconds"], 2),
        "table_old_way_peak_MB": round(old["peak_delta"] / 1e6, 1),
        "table_old_way_seconds": round(old["seconds"], 2),
        "table_memory_ratio_old_over_new": round(old["peak_delta"] / max(columns["peak_delta"], 1), 1),
        "writing_run_files_seconds": round(write_s, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
