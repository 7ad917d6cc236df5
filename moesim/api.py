"""The Python API for notebooks and scripts (README "Python API"):

    import moesim
    df = moesim.replay("bundled:qwen", policy=["lru", "least-stale", "belady"], capacity=["2%", "5%", "10%"])
    df = moesim.sweep("study.yaml", "out/study")          # resumable; backend="ray" on a cluster
    df = moesim.load_results("out/study")                 # any result file or sweep directory
    moesim.report("out/study", "out/study.html")

Every function returns the runs table (one row per run; columns in docs/metrics.md, "Result
tables"); `replay(..., tables=True)` returns every table as a ResultSet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from moesim.reports.tables import ResultSet

PathLike = str | os.PathLike[str]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _capacity_text(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("capacity must be text such as '5%' or a number of bytes")
    if isinstance(value, int):
        return f"{value}B"
    return str(value)


def replay(trace: Any, policy: str | Sequence[str] = "lru", capacity: Any = "5%", profile: Any = None,
           prefetch: str | Sequence[str] = "none", miss: str | Sequence[str] = "stall", scope: str = "global",
           mode: str = "event", seed: int | Sequence[int] = 0, profile_set: Mapping[str, str] | None = None,
           tables: bool = False, trace_name: str | None = None) -> pd.DataFrame | ResultSet:
    """Replay `trace` (a Trace, a file or "bundled:NAME") for every policy x capacity x prefetch given.

    Count-only (hits and misses) when `profile` is None; timed (TTFT, TPOT, stalls, energy) with a
    profile name, YAML path or HardwareProfile. `capacity`: "5%", "4000MiB", "51slots" or bytes.
    `profile_set` sets profile fields first ({"links.h2d.bandwidth": "16 GB/s"}). `trace_name` names
    the trace in the table (default: the file name, or "trace"); it is part of each run's id.
    Runs in this process, writes nothing.
    """
    from moesim.sweeps.execute import execute_run
    from moesim.sweeps.plan import plan_sweep
    from moesim.sweeps.spec import parse_spec
    from moesim.traces.format.trace import Trace

    data: dict[str, Any] = {
        "traces": {trace_name or ("trace" if isinstance(trace, Trace) else Path(str(trace)).name or str(trace)):
                   trace if isinstance(trace, Trace) else str(trace)},
        "eviction": _as_list(policy), "capacities": [_capacity_text(c) for c in _as_list(capacity)],
        "prefetch": _as_list(prefetch), "miss": _as_list(miss), "scope": scope, "replay": mode,
        "seeds": _as_list(seed),
    }
    settings = {str(k): str(v) for k, v in (profile_set or {}).items()}
    profiles = None
    if profile is None:
        if settings:
            raise ValueError("profile_set needs a profile")
        data["profiles"] = ["none"]
    elif isinstance(profile, (str, os.PathLike)):
        data["profiles"] = [{"name": str(profile), "set": settings}]
    else:  # a HardwareProfile object
        from moesim.sweeps import bindings

        for path, text in settings.items():
            profile = bindings.set_profile_field(profile, path, text, "profile_set")
        data["profiles"] = [{"name": profile.name, "set": settings}]
        profiles = {(profile.name, tuple(settings.items())): profile}
    spec = parse_spec(data, "moesim.replay")
    plan = plan_sweep(spec, profiles=profiles)
    from moesim.sweeps.plan import profile_key

    outputs = [execute_run(r, plan.traces[r.trace], plan.profiles.get(profile_key(r))).results for r in plan.runs]
    results = ResultSet.from_run_tables(outputs)
    if tables:
        return results
    order = {r.run_id: i for i, r in enumerate(plan.runs)}
    runs = results.runs
    return runs.iloc[sorted(range(len(runs)), key=lambda i: order[runs["run_id"].iloc[i]])].reset_index(drop=True)


def sweep(spec_or_path: Any, out: PathLike, backend: str = "local", jobs: int | None = None,
          ray_address: str | None = None, progress: bool | None = False, allow_code: bool = False,
          max_runs: int | None = None) -> pd.DataFrame:
    """Run a sweep (a YAML path, a spec mapping, or a SweepSpec) into the dataset directory `out`.

    Re-running skips finished runs. Returns the runs table of the spec's runs, sorted by run_id.
    A YAML file may name `imports`/`factory` only with allow_code=True (README "Safety").
    """
    from moesim.sweeps.runner import run_sweep
    from moesim.sweeps.spec import SweepSpec, load_spec, parse_spec

    if isinstance(spec_or_path, SweepSpec):
        spec = spec_or_path
    elif isinstance(spec_or_path, Mapping):
        spec = parse_spec(spec_or_path, "moesim.sweep")
    else:
        spec = load_spec(spec_or_path, allow_code=allow_code)
    return run_sweep(spec, out, backend, jobs, ray_address, progress, max_runs=max_runs).table


def load_results(path: PathLike | Sequence[PathLike], tables: bool = False) -> pd.DataFrame | ResultSet:
    """The runs table of result files or sweep directories (every table with tables=True)."""
    from moesim.reports.readers import load_result_set

    results = load_result_set(path)
    return results if tables else results.runs


def report(results: Any, out: PathLike, md: PathLike | None = None, title: str = "moesim report") -> Path:
    """Write the HTML report (and Markdown) of a ResultSet, or of result files / sweep directories."""
    from moesim.reports.readers import load_result_set
    from moesim.reports.render import write_report

    if not isinstance(results, ResultSet):
        results = load_result_set(results)
    write_report(results, out, md, title=title)
    return Path(out)
