"""`moesim sweep`, `moesim sweep-table` and `moesim whatif`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.errors import UserError
from moesim.sweeps.plan import DEFAULT_MAX_RUNS

TABLE_COLUMNS = ["policy", "trace", "profile", "profile_set", "capacity", "scope", "mode", "seed", "status", "hit_rate",
                 "misses", "total_s", "tpot_mean_s", "error", "run_id"]


def _records(df: Any) -> list[dict[str, Any]]:
    import pandas as pd

    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                clean[k] = None
            elif hasattr(v, "item"):
                clean[k] = v.item()
            else:
                clean[k] = v
        out.append(clean)
    return out


def _text_table(df: Any, columns: list[str]) -> str:
    from moesim.reports.render import table_rows

    cols, rows = table_rows(df, columns)
    if not cols:
        return "(no runs)"
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    if len(df) > len(rows):
        lines.append(f"... {len(df) - len(rows)} more runs (--out FILE for all)")
    return "\n".join(lines)


def _jobs(text: str) -> int:
    from moesim.units import parse_count

    return parse_count(text, "--jobs", 1, 4096)


def _max_runs(text: str) -> int:
    from moesim.units import parse_count

    return parse_count(text, "--max-runs", 1, 10**9)


def _progress_flag(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


# ---- sweep -------------------------------------------------------------------------------------
def _cmd_sweep(args: argparse.Namespace) -> int:
    from moesim.sweeps.runner import run_sweep, summary_line
    from moesim.sweeps.spec import load_spec

    outcome = run_sweep(load_spec(args.spec, allow_code=args.allow_code), args.out, args.backend, args.jobs,
                        args.ray_address, _progress_flag(args), max_runs=args.max_runs)
    data = summary_line(outcome)
    data["table"] = str(Path(args.out) / "table.parquet")
    emit(args, data, lambda d: (f"{d['runs']} runs: {d['ran']} ran ({d['failed']} failed), {d['skipped_done']} were "
                                f"already done; table: {d['table']}"))
    return 0


def _add_execution(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: a process pool on this machine (default); ray: Ray tasks (pip install "
                             "'moesim[dist]')")
    parser.add_argument("--jobs", type=_jobs, default=None, help="worker processes / Ray CPUs (default: all cores)")
    parser.add_argument("--max-runs", type=_max_runs, default=None,
                        help=f"refuse a grid of more runs than this (default {DEFAULT_MAX_RUNS:,}; README 'Safety')")
    parser.add_argument("--ray-address", default=None,
                        help="with --backend ray: 'auto' or HOST:PORT of a running cluster (default: start a local one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---- sweep-table -------------------------------------------------------------------------------
def _cmd_table(args: argparse.Namespace) -> int:
    from moesim.sweeps import store

    if args.out:
        from moesim.atomic_io import check_output, note_input

        for name in (store.TABLE, store.MANIFEST):  # the dataset's own files are this command's inputs
            note_input(Path(args.dir) / name)
        if Path(args.out).suffix not in (".csv", ".parquet"):
            raise UserError("write .parquet or .csv", "--out")
        check_output(args.out, "--out")
    table = store.combined_table(Path(args.dir))
    if args.out:
        out = Path(args.out)
        if out.suffix == ".csv":
            from moesim.atomic_io import write_text_atomic

            write_text_atomic(out, table.to_csv(index=False), "--out")
        else:
            store.write_table(out, table, "--out")
    done, total = store.dataset_progress(Path(args.dir))
    if args.json:
        emit(args, {"runs": _records(table), "done": done, "expected": total})
    else:
        head = f"{len(table)} runs in {args.dir}" + (f" ({done} of the {total} the last spec asked for)"
                                                     if total is not None else "")
        print(head + "\n" + _text_table(table, TABLE_COLUMNS))
    return 0


# ---- whatif ------------------------------------------------------------------------------------
def _cmd_whatif(args: argparse.Namespace) -> int:
    from moesim.sweeps.whatif import parse_axis, plan_whatif, run_whatif

    axes = [parse_axis(v, args.max_runs) for v in args.vary]
    from moesim.traces.format.cli_input import load_cli_trace, trace_input

    fmt, options = trace_input(args)
    trace: Any = load_cli_trace(args, args.trace) if (fmt or options) else args.trace
    plan = plan_whatif(trace, args.profile, axes, [p for p in args.policies.split(",") if p.strip()],
                       prefetch=[p for p in args.prefetch.split(",") if p.strip()],
                       miss=[m for m in args.miss.split(",") if m.strip()], capacity=args.capacity, scope=args.scope,
                       mode=args.replay, seeds=(args.seed,), count_only=args.count_only,
                       trace_name=args.trace if not isinstance(trace, str) else None)
    data = run_whatif(plan, args.out, args.backend, args.jobs, args.ray_address, _progress_flag(args),
                      max_runs=args.max_runs)
    emit(args, data, _render_whatif)
    return 0


def _render_whatif(d: dict[str, Any]) -> str:
    lines = [f"{d['runs']} runs ({'timed' if d['timed'] else 'count-only'}): {d['ran']} ran, {d['skipped_done']} were "
             f"already done, {d['failed']} failed", f"report: {d['report']}  summary: {d['markdown']}  "
                                                      f"table: {d['table']}"]
    lines += [f"  {path}: {', '.join(values)}" for path, values in d["axes"].items()]
    lines += [f"note: {n}" for n in d["notes"]]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser("sweep", help="run a YAML sweep spec into a resumable Parquet dataset directory")
    sweep.add_argument("spec", metavar="SPEC.yaml", help="the sweep spec (README 'Sweeps')")
    sweep.add_argument("--out", required=True, help="dataset directory (re-running skips finished runs)")
    sweep.add_argument("--allow-code", action="store_true",
                       help="let the spec import modules (imports:) and call trace factories (factory:); off by "
                            "default: a spec is data (README 'Safety')")
    _add_execution(sweep)
    add_json_flag(sweep)
    sweep.set_defaults(func=_cmd_sweep)

    table = subparsers.add_parser("sweep-table", help="the combined runs table of a sweep directory")
    table.add_argument("dir", metavar="DIR", help="a directory written by moesim sweep or moesim whatif")
    table.add_argument("--out", default=None, help="also write the table to this .parquet or .csv file")
    add_json_flag(table)
    table.set_defaults(func=_cmd_table)

    whatif = subparsers.add_parser("whatif", help="vary hardware fields and capacity over a grid; report heatmaps")
    whatif.add_argument("--trace", required=True, help='trace file, or "bundled:NAME"')
    from moesim.traces.format.cli_input import add_trace_input_flags

    add_trace_input_flags(whatif)
    whatif.add_argument("--profile", default=None, help="hardware profile (name or YAML); none: count-only")
    whatif.add_argument("--vary", action="append", default=[], required=True,
                        help="PATH=LO..HI:N[:geo|:lin] or PATH=V1,V2,...; PATH a profile field "
                             "(links.h2d.bandwidth) or capacity; geometric spacing unless :lin; give 1 or 2")
    whatif.add_argument("--policies", default="lru", help="comma list of eviction policies (belady is added as the "
                                                          "bound when available)")
    whatif.add_argument("--prefetch", default="none", help="comma list of prefetch policies (timed runs)")
    whatif.add_argument("--miss", default="stall", help="comma list of miss-handling policies (timed runs)")
    whatif.add_argument("--capacity", default="5%", help="capacity when capacity is not a --vary axis")
    whatif.add_argument("--scope", choices=("global", "layer"), default="global")
    whatif.add_argument("--replay", choices=("event", "sequential"), default="event")
    whatif.add_argument("--seed", type=int, default=0)
    whatif.add_argument("--count-only", action="store_true", help="hit and miss counts only, no timing")
    whatif.add_argument("--out", required=True, help="directory for the runs, table.parquet and report.html/.md")
    _add_execution(whatif)
    add_json_flag(whatif)
    whatif.set_defaults(func=_cmd_whatif)
