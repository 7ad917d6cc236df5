"""`moesim advise`: how fast will this model run on these machines, and how should each be configured.

    moesim advise --model qwen3-30b-a3b --profile rtx4090 --profile phone-oneplus-15r \
        --vram-free 20GiB --dram-free 48GiB [--objective tpot] [--budget 60s] [--json] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.errors import UserError

DEFAULT_BUDGET = "60s"
RESERVE_SHARE = 0.15


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("advise", help="search cache/offload configurations for a model on one or more "
                                             "machines and print the best, with the baseline and the bound")
    p.add_argument("--model", default=None,
                   help="catalog name (moesim models list) or the model's own file; may be left out with --trace "
                        "(the trace's own sizes are used)")
    p.add_argument("--profile", action="append", required=True, metavar="P",
                   help="hardware profile name or YAML path (repeat for several machines)")
    p.add_argument("--trace", default=None, help="routing trace (path or bundled:NAME); default: a bundled trace "
                                                 "of the model, else a synthetic one")
    p.add_argument("--vram-free", default=None, metavar="SIZE",
                   help="memory free on the compute device for weights, KV cache and experts (default: the "
                        "profile's usable VRAM)")
    p.add_argument("--dram-free", default=None, metavar="SIZE",
                   help="host DRAM free for experts (default: the profile's usable DRAM)")
    p.add_argument("--cache-max", default=None, metavar="SIZE",
                   help="cap the expert cache at SIZE (an engine's own limit, e.g. --cache-mb 4000 -> 4000MiB)")
    p.add_argument("--prompt", type=int, default=None, help="prompt tokens (default: the trace's; synthetic 512)")
    p.add_argument("--decode", type=int, default=None, help="decoded tokens (default: the trace's; synthetic 256)")
    p.add_argument("--batch", type=int, default=None, help="sequences decoded together (default: 1)")
    p.add_argument("--objective", default="tpot", choices=("tpot", "ttft", "throughput", "energy"),
                   help="what the search minimises and prunes for (default: tpot)")
    p.add_argument("--budget", default=DEFAULT_BUDGET, help="wall-clock budget of the search (default: 60s)")
    p.add_argument("--no-prune", action="store_true", help="time every configuration (no bound pruning)")
    p.add_argument("--trace-events", default=None, metavar="FILE",
                   help="write the best configuration's timeline (first machine) as Chrome trace-event JSON")
    p.add_argument("--out", default=None, metavar="DIR", help="write advise.json, runs.csv and advise.html here")
    add_json_flag(p)
    p.set_defaults(func=cmd_advise)


def _size(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    from moesim.units import parse_quantity

    value = parse_quantity(text, "bytes", option)
    if value < 0:
        raise UserError(f"must be non-negative, got {text!r}", option)
    return int(value)


def _budget(text: str) -> float:
    from moesim.units import parse_quantity

    value = parse_quantity(text, "time", "--budget")
    if value <= 0:
        raise UserError(f"must be positive, got {text!r}", "--budget")
    return float(value)


def cmd_advise(args: argparse.Namespace) -> int:
    from moesim.advise.answer import build_answer
    from moesim.advise.render import render_text
    from moesim.advise.search import search_machine
    from moesim.advise.space import Machine, enumerate_space
    from moesim.advise.workload import resolve_workload
    from moesim.sim.cli_timing import resolve_profile

    started = time.monotonic()
    budget = _budget(args.budget)
    searchable = budget * (1 - RESERVE_SHARE)  # the rest: loading, bounds, the answer, the report
    for name, value in (("--prompt", args.prompt), ("--decode", args.decode), ("--batch", args.batch)):
        if value is not None and value < (0 if name == "--decode" else 1):
            raise UserError(f"must be {'>= 0' if name == '--decode' else '>= 1'}, got {value}", name)
    vram_free, dram_free, cache_max = (_size(args.vram_free, "--vram-free"), _size(args.dram_free, "--dram-free"),
                                       _size(args.cache_max, "--cache-max"))
    if args.out:
        _check_out(args.out)
    workload = resolve_workload(args.model, args.trace, args.prompt, args.decode, args.batch)
    prepare_s = time.monotonic() - started  # a synthetic trace's first routing fit is cached for later runs
    machines = [_machine(name, resolve_profile(name), vram_free, dram_free, cache_max) for name in args.profile]
    totals = [len(enumerate_space(m, workload)) for m in machines]
    outcomes = []
    with _Progress(sum(totals), enabled=sys.stderr.isatty() and not args.json) as progress:
        for i, machine in enumerate(machines):
            left = max(searchable - (time.monotonic() - started), 0.0)
            deadline = time.monotonic() + left / (len(machines) - i)
            progress.describe(machine.name)
            outcome = search_machine(machine, workload, args.objective,
                                     deadline=math.inf if args.no_prune else deadline, prune=not args.no_prune,
                                     on_step=progress.step)
            progress.finish_machine(totals[i])
            outcomes.append(outcome)
    answer = build_answer(workload, outcomes, args.objective, budget, time.monotonic() - started)
    answer["prepare_s"] = round(prepare_s, 2)
    if args.trace_events:
        _write_trace_events(args.trace_events, outcomes, workload)
    if args.out:
        from moesim.advise.report import write_advise_report

        write_advise_report(answer, args.out)
    emit(args, answer, render_text)
    return 0


def _machine(name: str, profile: Any, vram_free: int | None, dram_free: int | None, cache_max: int | None) -> Any:
    from moesim.runs.engine_map import bookkeeping_per_byte
    from moesim.advise.overlap import streams_from_flash_profile, timed_field
    from moesim.advise.space import Machine
    from moesim.units import format_bytes

    notes = []
    vram = profile.tier("vram")
    usable = int(vram.usable) if vram is not None else 0
    if vram_free is None:
        vram_free = usable
    elif vram is not None and vram_free > usable:
        notes.append(f"--vram-free {format_bytes(vram_free)} is more than the profile's usable "
                     f"{format_bytes(usable)}: using {format_bytes(usable)}")
        vram_free = usable
    if dram_free is not None and profile.tier("dram") is None:
        notes.append("the profile has no separate host DRAM (unified memory): --dram-free does not apply")
        dram_free = None
    if streams_from_flash_profile(profile) and timed_field("read_slices"):
        notes.append("every configuration is timed in the engine's own read and compute order (BigMoeOnEdge: "
                     "moesim/runs/engine_map.py); the engine has no prefetcher, so a prefetch policy is a change to it")
    bookkeeping = bookkeeping_per_byte(name)
    if bookkeeping:
        notes.append(f"cache bookkeeping: the profile's fitted {bookkeeping:.4g} s per byte read is added to every "
                     "pass, as check-run adds it")
    return Machine(name, profile, vram_free, dram_free, cache_max, tuple(notes), bookkeeping)


def _check_out(out: str) -> None:
    from pathlib import Path

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError("exists and is not a directory", out)


def _write_trace_events(path: str, outcomes: list[Any], workload: Any) -> None:
    from moesim.sim.trace_events import write_trace_events
    from moesim.sim.timed_replay import timed_replay
    from moesim.advise.search import resolved_profile

    for outcome in outcomes:
        best = outcome.best(outcome.objective)
        if best is None:
            continue
        result = timed_replay(workload.trace, resolved_profile(outcome.machine, best.candidate), best.config)
        write_trace_events(result, path)
        return
    raise UserError("no configuration was timed: nothing to export", "--trace-events")


class _Progress:
    """A rich progress bar over configurations (timed or pruned) on stderr, or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done = total, enabled, 0
        self._progress: Any = None
        self._task: Any = None
        self._machine_start = 0

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("advise", total=self.total)
        return self

    def describe(self, name: str) -> None:
        self._machine_start = self.done
        if self._progress is not None:
            self._progress.update(self._task, description=f"advise {name}")

    def step(self, kind: str) -> None:
        self.done += 1
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def finish_machine(self, machine_total: int) -> None:
        self.done = self._machine_start + machine_total  # configurations not reached count as done
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
