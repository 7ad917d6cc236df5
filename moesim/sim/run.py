"""The front door: one `RunSpec` describes a run, one `run()` runs it.

    from moesim.sim.run import RunSpec, run
    spec = RunSpec.build(trace, "lfu:decay=0.9", capacity_bytes=600 * 2**20, capacity="5%")
    result = run(spec)                       # a CountResult (no profile) or a TimedResult

The command line (moesim/sim/cli_replay.py), the sweeps (moesim/sweeps/execute.py, and through them
the Python API, moesim/api.py) and `validate` (moesim/kernels/validate.py) all build RunSpecs and
call `run()`. A RunSpec holds the trace, the hardware profile (None: count hits and misses only),
the policies parsed once (`PolicySpec`s), the capacity and the options; its `label` is derived from
the parsed specs once. The engines' own inputs (`ReplayConfig` for the count replay,
`TimedConfig` for the timing engine) are views of it (`replay_config()`, `timed_config()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from moesim.hw_profiles.profile import HardwareProfile
from moesim.policies.labels import run_label
from moesim.policies.placement import parse_placement
from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim.count_replay import CountResult, ReplayConfig, count_replay
from moesim.traces.format.trace import Trace


@dataclass(frozen=True)
class RunOptions:
    """Timing options (moesim/sim/timed_replay.py TimedConfig documents each); None: the profile's."""

    model: str | None = None
    framework: str | None = None
    kernel_table: str | None = None
    overlap: str | None = None
    io_lanes: int | None = None
    storage_reads: str | None = None
    dram_eviction: str = "lru"
    grouped_experts: bool = True
    bounds: bool = True
    cancel_unstarted: bool = False
    routing_sync: bool = False


@dataclass(frozen=True)
class RunSpec:
    """One run: trace, profile, parsed policies, capacity and options.

    `profile_name` and `profile_overrides` only say where `profile` came from (results record
    them). `engine` picks the count replay's or the planner's implementation (moesim/sim/fast;
    None: $MOESIM_ENGINE, else automatic); results do not depend on it.
    """

    trace: Trace
    eviction: PolicySpec
    capacity_bytes: int
    capacity: str = ""  # as the user wrote it ("5%", "4000MiB"); results show it beside the bytes
    prefetch: PolicySpec = field(default_factory=lambda: parse_spec("none", "prefetch"))
    miss: PolicySpec = field(default_factory=lambda: parse_spec("stall", "miss"))
    placement: str = "gpu"
    scope: str = "global"
    mode: str = "event"
    seed: int = 0
    layer_capacity: tuple[int, ...] | None = None
    profile: HardwareProfile | None = None
    profile_name: str = ""
    profile_overrides: tuple[str, ...] = ()
    options: RunOptions = RunOptions()
    engine: str | None = None

    @classmethod
    def build(cls, trace: Trace, eviction: str | PolicySpec, capacity_bytes: int, *, prefetch: str | PolicySpec = "none",
              miss: str | PolicySpec = "stall", **rest: Any) -> RunSpec:
        """A RunSpec from spec strings or parsed specs; option fields (RunOptions) may be given flat."""
        option_names = {f.name for f in fields(RunOptions)}
        options = {k: rest.pop(k) for k in list(rest) if k in option_names}
        if options:
            rest["options"] = replace(rest.get("options", RunOptions()), **options)
        return cls(trace=trace, eviction=_parsed(eviction, "eviction"), capacity_bytes=int(capacity_bytes),
                   prefetch=_parsed(prefetch, "prefetch"), miss=_parsed(miss, "miss"), **rest)

    @property
    def timed(self) -> bool:
        return self.profile is not None

    @cached_property
    def label(self) -> str:
        """Short name for tables (moesim/policies/labels.py): eviction [pf=...] [miss=...] [place=...]."""
        return run_label(self.eviction, self.prefetch, self.miss, parse_placement(self.placement))

    def replay_config(self) -> ReplayConfig:
        """The count replay's input."""
        return ReplayConfig(policy=self.eviction.label(), capacity_bytes=self.capacity_bytes, scope=self.scope,
                            mode=self.mode, seed=self.seed, layer_capacity=self.layer_capacity)

    def timed_config(self) -> Any:
        """The timing engine's input (moesim/sim/timed_replay.py TimedConfig)."""
        from moesim.sim.timed_replay import TimedConfig

        o = self.options
        return TimedConfig(
            eviction=self.eviction.label(), prefetch=self.prefetch.label(), miss=self.miss.label(),
            capacity_bytes=self.capacity_bytes, scope=self.scope, profile=self.profile_name,
            profile_overrides=self.profile_overrides, model=o.model, seed=self.seed,
            layer_capacity=self.layer_capacity, dram_eviction=o.dram_eviction, grouped_experts=o.grouped_experts,
            bounds=o.bounds, cancel_unstarted=o.cancel_unstarted, placement=self.placement, framework=o.framework,
            kernel_table=o.kernel_table, routing_sync=o.routing_sync, overlap=o.overlap, io_lanes=o.io_lanes,
            storage_reads=o.storage_reads, parsed=(self.eviction, self.prefetch, self.miss),
        )


def run(spec: RunSpec) -> Any:
    """Run `spec`: the timing engine when it has a profile (a TimedResult), else the count replay
    (a CountResult)."""
    if spec.profile is None:
        return count_replay(spec.trace, spec.replay_config(), spec=spec.eviction, engine=spec.engine)
    from moesim.sim.timed_replay import timed_replay

    return timed_replay(spec.trace, spec.profile, spec.timed_config(), engine=spec.engine)


def _parsed(value: str | PolicySpec, kind: str) -> PolicySpec:
    return value if isinstance(value, PolicySpec) else parse_spec(value, kind)


__all__ = ["CountResult", "RunOptions", "RunSpec", "run"]
