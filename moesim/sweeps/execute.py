"""Run one configuration: a pure function of (RunConfig, trace, profile) -> result tables.

The run goes through the front door (moesim/sim/run.py `run`), as the command line's do.

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
from moesim.sim.run import RunSpec, run
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


def run_spec(config: RunConfig, trace: Trace, profile: Any | None) -> RunSpec:
    """The front door's RunSpec (moesim/sim/run.py) of a sweep run; count-only when `profile` is None."""
    return RunSpec.build(trace, config.eviction, config.capacity_bytes, capacity=config.capacity,
                         prefetch=config.prefetch, miss=config.miss, scope=config.scope, mode=config.mode,
                         seed=config.seed, profile=profile, profile_name=config.profile if profile is not None else "",
                         profile_overrides=tuple(f"{p}={v}" for p, v in config.profile_set))


def execute_run(config: RunConfig, trace: Trace, profile: Any | None = None) -> RunOutput:
    """Replay `trace` as `config` says: the count replay, or the timed one with `profile`."""
    run_id = config.run_id
    identity = _identity(config)
    try:
        if config.engine != "count" and profile is None:
            raise UserError("a timed run needs a hardware profile", "run")
        result = run(run_spec(config, trace, profile if config.engine != "count" else None))
        if config.engine == "count":
            results = adapters.count_tables(result, identity, config.pass_table)
        else:
            results = adapters.timed_tables(result, identity, config.pass_table, config.timeline_passes)
    except Exception as exc:  # a failed run is data: record it, let the sweep go on
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        return RunOutput(run_id, adapters.error_tables(identity, message), traceback.format_exc())
    return RunOutput(run_id, results)
