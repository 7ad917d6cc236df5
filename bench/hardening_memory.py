"""Issue #16's memory targets: a one-pass trace file, and a 10,000-run sweep table.

Targets:
  one-pass file       a moesim Parquet file that holds ONE pass of N accesses (a long prefill; the
                      issue's file was 60 M rows): `moesim traces validate`, a count replay
                      (`moesim replay --policy lru --capacity 25%`) and a timed one (the same with
                      `--profile a100-80gb`) each peak at <= 4 bytes per access + 200 MB over the
                      RSS before the command, in a fresh subprocess that first ran the same command
                      on a small file (so module imports, constant, are not counted; the absolute
                      peak RSS is printed beside). Two layouts: 16 layers (cells of N/16 rows) and
                      1 layer (the whole pass is ONE cell, the case a reader cutting at cells could
                      not split).
  sweep table         building the runs table of a 10,000-run sweep folder (store.runs_table, what
                      `moesim sweep` and `moesim sweep-table` do when the table cache is missing)
                      peaks at < 1 GB over the RSS before it. Beside it, for the ratio, the old way
                      (every table of every run file read, then the runs table taken from them).

Run: python -m bench.hardening_memory [--accesses 60M] [--runs 10000] [--skip-table]
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

_COMMAND = _RSS_HELPERS + """
import contextlib, io, json, sys, time
from moesim.cli import main
small, big, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with contextlib.redirect_stdout(io.StringIO()):  # warm-up: the command's imports and caches
    assert main([a.replace("{trace}", small) for a in argv]) == 0
base = reset_peak()
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    rc = main([a.replace("{trace}", big) for a in argv])
print(json.dumps({"rc": rc, "peak_delta": peak() - base, "peak_rss": peak(), "seconds": time.perf_counter() - start}))
"""

COMMANDS = {
    "validate": ["traces", "validate", "{trace}"],
    "count replay": ["replay", "--trace", "{trace}", "--policy", "lru", "--capacity", "25%"],
    "timed replay": ["replay", "--trace", "{trace}", "--policy", "lru", "--capacity", "25%",
                     "--profile", "a100-80gb"],
}

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


def one_pass_file(folder: Path, accesses: int, n_layers: int = 16, name: str = "one-pass") -> Path:
    """A trace of one request whose whole prompt is one prefill pass of about `accesses` accesses
    (top-8 of 64 experts at each of `n_layers` layers: one cell per layer)."""
    from moesim.traces.format.io import save_trace
    from moesim.traces.synth.synthetic import SynthConfig, generate

    tokens = max(1, accesses // (n_layers * 8))
    config = SynthConfig(n_layers=n_layers, n_experts=64, top_k=8).with_settings(
        [f"prefill=fixed:{tokens}", "decode=fixed:0", "n_requests=1"])
    trace = generate(config)
    path = folder / f"{name}-{n_layers}.parquet"
    save_trace(trace, path)
    assert trace.n_passes == 1 and trace.n_cells == n_layers
    return path


def one_pass_targets(folder: Path, accesses: int, layouts: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each command's peak on each layout's one-pass file, against 4 B per access + 200 MB."""
    targets: dict[str, Any] = {}
    context: dict[str, Any] = {}
    for n_layers in layouts:
        start = time.perf_counter()
        big = one_pass_file(folder, accesses, n_layers)
        small = one_pass_file(folder, 20_000, n_layers, "small")
        context[f"{n_layers} layers: writing the file (s)"] = round(time.perf_counter() - start, 1)
        context[f"{n_layers} layers: file size (MB)"] = round(big.stat().st_size / 1e6, 1)
        goal = BYTES_PER_ACCESS_GOAL * accesses + PEAK_ALLOWANCE_BYTES
        for label, argv in COMMANDS.items():
            got = _subprocess(_COMMAND, str(small), str(big), *argv)
            targets[f"{label}, one pass of {accesses / 1e6:g} M accesses in {n_layers} cell(s): "
                    "peak RSS delta (MB)"] = {
                "value": round(got["peak_delta"] / 1e6, 1), "goal": f"<= {goal / 1e6:.0f}",
                "ratio_to_bound": round(got["peak_delta"] / goal, 2),
                "pass": got["rc"] == 0 and got["peak_delta"] <= goal}
            context[f"{n_layers} layers, {label}: seconds, absolute peak RSS (MB)"] = [
                round(got["seconds"], 1), round(got["peak_rss"] / 1e6, 1)]
    return targets, context


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
    parser.add_argument("--accesses", default="60M")
    parser.add_argument("--layouts", default="16,1", help="layers of the one-pass files (comma list)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--skip-table", action="store_true", help="measure the one-pass file only")
    args = parser.parse_args(argv)
    accesses = parse_count(args.accesses)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        targets, context = one_pass_targets(folder, accesses, [int(v) for v in args.layouts.split(",")])
        result: dict[str, Any] = {"targets": targets, "one_pass": context}
        if args.skip_table:
            return result
        start = time.perf_counter()
        out = sweep_folder(folder, args.runs)
        write_s = time.perf_counter() - start
        columns = _subprocess(_TABLE, str(out), "columns")
        old = _subprocess(_TABLE, str(out), "all-tables")
    targets[f"{args.runs:,}-run sweep table: peak RSS delta (MB)"] = {
        "value": round(columns["peak_delta"] / 1e6, 1), "goal": f"< {TABLE_GOAL_BYTES / 1e6:.0f}",
        "ratio_to_bound": round(columns["peak_delta"] / TABLE_GOAL_BYTES, 2),
        "pass": columns["peak_delta"] < TABLE_GOAL_BYTES and columns["rows"] == args.runs}
    result.update({
        "table_seconds": round(columns["seconds"], 2),
        "table_old_way_peak_MB": round(old["peak_delta"] / 1e6, 1),
        "table_old_way_seconds": round(old["seconds"], 2),
        "table_memory_ratio_old_over_new": round(old["peak_delta"] / max(columns["peak_delta"], 1), 1),
        "writing_run_files_seconds": round(write_s, 1),
    })
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
