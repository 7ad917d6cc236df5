"""From a sweep spec to the list of runs: load traces and profiles once, expand the cross product.

Traces and profiles are loaded here, in the driver, once; the runs name them by content hash and
the backends ship the loaded objects to their workers (once per worker, or once to Ray's object
store), never once per run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from moesim.errors import UserError
from moesim.sweeps import bindings
from moesim.sweeps.run_config import RunConfig
from moesim.sweeps.spec import ProfileChoice, SweepSpec
from moesim.traces.format.trace import Trace

ProfileKey = tuple[str, tuple[tuple[str, str], ...]]

# The largest grid a sweep or what-if runs unless --max-runs lifts it (README "Safety"): a typo in a
# range (":100000000") must fail at once, not fill the disk and memory for hours.
DEFAULT_MAX_RUNS = 10_000


def grid_size(spec: SweepSpec) -> int:
    """The number of runs `spec`'s cross product names (before equal runs collapse)."""
    n = len(spec.traces)
    for axis in (spec.profiles, spec.eviction, spec.prefetch, spec.miss, spec.capacities, spec.scopes, spec.modes,
                 spec.seeds):
        n *= len(axis)
    return n


def check_grid(n_runs: int, max_runs: int | None, where: str) -> None:
    limit = DEFAULT_MAX_RUNS if max_runs is None else max_runs
    if n_runs > limit:
        raise UserError(f"the grid has {n_runs:,} runs, more than the limit of {limit:,}; narrow it, or lift the "
                        f"limit with --max-runs {n_runs}", where)


def profile_key(config: RunConfig) -> ProfileKey:
    return (config.profile, config.profile_set)


def profile_hash(profile: Any) -> str:
    """SHA-256 of a profile's values (not the file it was read from): edits to a profile re-run its runs."""
    from moesim.hw_profiles.profile import profile_record

    data = profile_record(profile)
    data.pop("source_file", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class SweepPlan:
    spec: SweepSpec
    traces: dict[str, Trace]
    profiles: dict[ProfileKey, Any]
    runs: list[RunConfig] = field(default_factory=list)


def load_profiles(spec: SweepSpec) -> dict[ProfileKey, Any]:
    timed = [p for p in spec.profiles if p.timed]
    return {(p.name, p.settings): bindings.load_profile(p.name, p.settings, f"{spec.source}: profiles: {p.label()}")
            for p in timed}


def plan_sweep(spec: SweepSpec, traces: dict[str, Trace] | None = None,
               profiles: dict[ProfileKey, Any] | None = None, max_runs: int | None = None) -> SweepPlan:
    """Every run of `spec`, in a fixed order, each once (two spellings of one run collapse).

    A grid larger than `max_runs` (default DEFAULT_MAX_RUNS) is a UserError before anything loads."""
    check_grid(grid_size(spec), max_runs, spec.source)
    if traces is None:
        traces = {src.name: src.load(f"{spec.source}: traces: {src.name}") for src in spec.traces}
    if profiles is None:
        profiles = load_profiles(spec)
    hashes = {name: trace.content_hash() for name, trace in traces.items()}
    phashes = {key: profile_hash(p) for key, p in profiles.items()}
    plan = SweepPlan(spec, traces, profiles)
    seen: set[str] = set()
    for src in spec.traces:
        trace = traces[src.name]
        capacities = [(c, bindings.capacity_bytes(c, trace, f"{spec.source}: capacities: {c}"))
                      for c in spec.capacities]
        for choice, eviction, prefetch, miss, (cap, cap_bytes), scope, mode, seed in itertools.product(
                spec.profiles, spec.eviction, spec.prefetch, spec.miss, capacities, spec.scopes, spec.modes,
                spec.seeds):
            config = make_config(src.name, hashes[src.name], choice, phashes, eviction, prefetch, miss, cap, cap_bytes,
                                 scope, mode, seed, spec)
            if config.run_id not in seen:
                seen.add(config.run_id)
                plan.runs.append(config)
    return plan


def make_config(trace: str, trace_hash: str, choice: ProfileChoice, phashes: dict[ProfileKey, str], eviction: str,
                prefetch: str, miss: str, capacity: str, capacity_bytes: int, scope: str, mode: str, seed: int,
                spec: SweepSpec) -> RunConfig:
    key = (choice.name, choice.settings)
    return RunConfig(
        trace=trace, trace_hash=trace_hash, eviction=eviction, capacity=capacity, capacity_bytes=capacity_bytes,
        scope=scope, mode=mode, seed=seed, prefetch=prefetch, miss=miss,
        engine="timed" if choice.timed else "count", profile=choice.name, profile_set=choice.settings,
        profile_hash=phashes.get(key, ""), pass_table=spec.pass_table,
        timeline_passes=spec.timeline_passes if choice.timed else 0)
