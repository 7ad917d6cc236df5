"""Run one configuration: a pure function of (RunConfig, trace, profile) -> result tables.

It never raises for a failed run: the failure becomes a run row with status "error" and the
error's first line, and the traceback travels beside it, so a sweep records it and goes on.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any

from moesim.errors import UserError
from moesim.reports import adapters
from moesim.reports.tables import RunTables
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sweeps import bindings
from moesim.sweeps.run_config import RunConfig
from moesim.traces.format.trace import Trace


@dataclass
class RunOutput:
    """A run's tables, and its traceback when it failed (kept out of the tables: it is not data)."""

    run_id: str
    results: RunTables
    traceback: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.traceback


def _identity(config: RunConfig) -> dict[str, Any]:
    try:
        return config.identity()
    except UserError:  # an unknown policy (a plugin not imported where the run executes)
        ident = {k: getattr(config, k) for k in ("engine", "trace", "trace_hash", "profile", "eviction", "prefetch",
                                                  "miss", "capacity", "capacity_bytes", "scope", "mode", "seed")}
        ident.update(run_id=config.run_id, profile_set=config.profile_set_text(), policy=config.eviction)
        return ident


def execute_run(config: RunConfig, trace: Trace, profile: Any | None = None) -> RunOutput:
    """Replay `trace` as `config` says: the count replay, or the timed one with `profile`."""
    run_id = config.run_id
    identity = _identity(config)
    try:
        if config.engine == "count":
            replay = ReplayConfig(policy=config.eviction, capacity_bytes=config.capacity_bytes, scope=config.scope,
                                  mode=config.mode, seed=config.seed)
            results = adapters.count_tables(count_replay(trace, replay), identity, config.pass_table)
        else:
            if profile is None:
                raise UserError("a timed run needs a hardware profile", "run")
            result = bindings.timed_replay(
                trace, profile, eviction=config.eviction, prefetch=config.prefetch, miss=config.miss,
                capacity_bytes=config.capacity_bytes, scope=config.scope, seed=config.seed,
                profile_name=config.profile, profile_set=config.profile_set)
            results = adapters.timed_tables(result, identity, config.pass_table, config.timeline_passes)
    except Exception as exc:  # a failed run is data: record it, let the sweep go on
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        return RunOutput(run_id, adapters.error_tables(identity, message), traceback.format_exc())
    return RunOutput(run_id, results)
