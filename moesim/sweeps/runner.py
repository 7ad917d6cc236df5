"""Run a sweep into a dataset directory, resuming whatever an earlier start finished."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from moesim.errors import UserError
from moesim.sweeps import backends, store
from moesim.sweeps.plan import SweepPlan, plan_sweep
from moesim.sweeps.progress import SweepProgress
from moesim.sweeps.spec import SweepSpec


@dataclass
class SweepOutcome:
    """What a sweep did: its runs table (this spec's runs, sorted by run_id) and the counts."""

    table: pd.DataFrame
    total: int
    skipped: int
    ran: int
    failed: int
    out: Path


def run_plan(plan: SweepPlan, out: str | Path, backend: str = "local", jobs: int | None = None,
             ray_address: str | None = None, progress: bool | None = None) -> SweepOutcome:
    """Execute the runs of `plan` not yet in `out`, writing each result as it arrives."""
    if backend not in backends.BACKENDS:
        raise UserError(f"backend must be one of {', '.join(backends.BACKENDS)}, got {backend!r}", "--backend")
    jobs = backends.default_jobs() if jobs is None else int(jobs)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}", "--jobs")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", str(out))
    try:
        (out / store.RUNS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the sweep folder ({exc.strerror or exc})", str(out)) from None
    with store.locked(out):
        return _run_locked(plan, out, backend, jobs, ray_address, progress)


def _run_locked(plan: SweepPlan, out: Path, backend: str, jobs: int, ray_address: str | None,
                progress: bool | None) -> SweepOutcome:
    store.remove_partial(out)  # under the lock: every temporary file left is a dead sweep's
    ids = [r.run_id for r in plan.runs]
    store.write_manifest(out, plan.spec.name, ids, plan.spec.source)
    done = store.done_ids(out, check=True)
    todo = [r for r in plan.runs if r.run_id not in done]
    by_id = {r.run_id: r for r in todo}
    imports, in_main = worker_imports(plan)
    if in_main and backend == "ray":
        raise UserError("a policy of this sweep is defined in __main__ (a notebook or script); Ray workers cannot "
                        "import it: move it into a module and name that module in the spec's imports", "--backend")
    if in_main:
        jobs = 1  # worker processes cannot import __main__'s policies: run them here
    if backend == "ray":
        outputs = backends.run_ray(todo, plan.traces, plan.profiles, jobs, imports, ray_address)
    else:
        outputs = backends.run_local(todo, plan.traces, plan.profiles, jobs, imports)
    failed = 0
    written: list[str] = []
    with SweepProgress(len(ids), len(ids) - len(todo), progress, plan.spec.name or "sweep") as bar:
        for output in outputs:
            store.write_run(out, by_id[output.run_id], output)
            written.append(output.run_id)
            failed += 0 if output.ok else 1
            bar.advance(output.ok)
    everything = store.runs_table(out, fresh=written)
    store.write_table(out / store.TABLE, everything, replace_input=True)
    table = everything[everything["run_id"].isin(set(ids))].reset_index(drop=True)
    return SweepOutcome(table=table, total=len(ids), skipped=len(ids) - len(todo), ran=len(todo), failed=failed,
                        out=out)


def worker_imports(plan: SweepPlan) -> tuple[tuple[str, ...], bool]:
    """Modules a worker must import so that every policy of the plan is registered there: the spec's
    imports and the modules that define the policies used; and whether one lives in __main__."""
    from moesim.policies.registry import parse_spec

    modules = list(plan.spec.imports)
    specs = {(r.eviction, "eviction") for r in plan.runs} | {(r.prefetch, "prefetch") for r in plan.runs if
                                                              r.engine == "timed"}
    for text, kind in sorted(specs):
        modules.append(parse_spec(text, kind).entry.cls.__module__)
    in_main = "__main__" in modules
    return tuple(m for m in dict.fromkeys(modules) if m != "__main__"), in_main


def run_sweep(spec: SweepSpec, out: str | Path, backend: str = "local", jobs: int | None = None,
              ray_address: str | None = None, progress: bool | None = None,
              max_runs: int | None = None) -> SweepOutcome:
    """Plan `spec` (load its traces and profiles once) and run it into `out`."""
    return run_plan(plan_sweep(spec, max_runs=max_runs), out, backend, jobs, ray_address, progress)


def summary_line(outcome: SweepOutcome) -> dict[str, Any]:
    return {"out": str(outcome.out), "runs": outcome.total, "skipped_done": outcome.skipped, "ran": outcome.ran,
            "failed": outcome.failed}
