"""The ONE place a run's configuration becomes simulator options (cache, read lanes, overlap, k).

    setup = engine_setup(run.config, "phone-oneplus-15r")
    result = timed_replay(trace, setup.profile, setup.timed)

What each setting maps to in the engine of this tree (moesim/sim/timed_replay.py + profile fields):
- cache_mib      -> TimedConfig.capacity_bytes (MiB x 2^20; 0 = every routed expert re-read)
- lanes          -> tiers.ssd.queue_depth and links.ssd_d.copy_engines (reads in flight). The engine
                    splits the storage's aggregate read bandwidth evenly over the lanes, so its
                    throughput does not rise with reads in flight; storage curves by queue depth
                    arrive with the clock rebuild (issue 13), and `LANES_CHANGE_THROUGHPUT` flips then.
- overlap        -> the engine has one mode, a per-layer barrier (every expert of a layer waits for
                    all its misses): the engine's serial mode. Per-expert pipelining (the engine's
                    --overlap) arrives with issue 13; until then an overlapped run is replayed with the
                    barrier and `Setup.approximations` says so.
- top_k          -> the trace's own k (check_run refuses a trace whose k differs).
- mmap           -> no engine counterpart (OS page cache tier: issue 13); refused with a reason.
Per-token overhead and cache bookkeeping per miss have no engine field yet either: fit-profile
fits them (moesim/runs/fit.py) and reports them, and they are listed in `approximations`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile
from moesim.runs.measured import RunConfig
from moesim.sim.timed_replay import TimedConfig

MIB = 2**20
# what this tree's engine can express; flipped as the issue-13 knobs land
ENGINE_HAS_EXPERT_OVERLAP = False
ENGINE_HAS_PAGE_CACHE_TIER = False
LANES_CHANGE_THROUGHPUT = False
ENGINE_HAS_MGMT_PER_BYTE = False


@dataclass(frozen=True)
class Setup:
    profile: HardwareProfile
    timed: TimedConfig
    overrides: tuple[str, ...]
    approximations: tuple[str, ...] = field(default_factory=tuple)


def lane_overrides(profile: HardwareProfile, lanes: int) -> list[str]:
    out = []
    if profile.tier("ssd") is not None:
        out.append(f"tiers.ssd.queue_depth={int(lanes)}")
    for name in ("ssd_d", "ssd_h"):
        if profile.link(name) is not None:
            out.append(f"links.{name}.copy_engines={int(lanes)}")
    return out


def engine_setup(config: RunConfig, profile_name: str, extra_overrides: tuple[str, ...] = (),
                 where: str = "run") -> Setup:
    from moesim.sim.cli_timing import resolve_profile

    missing = config.missing(("cache_mib", "lanes", "overlap"))
    if config.mmap:
        if not ENGINE_HAS_PAGE_CACHE_TIER:
            raise UserError("a plain-mmap run needs the OS page cache tier, which this engine does not have yet "
                            "(issue 13)", where)
        missing = []
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise UserError(f"the run's files do not say its {', '.join(missing)}: pass {flags}", where)
    base = resolve_profile(profile_name)
    overrides = lane_overrides(base, int(config.lanes)) + list(extra_overrides)  # type: ignore[arg-type]
    profile = resolve_profile(profile_name, tuple(overrides))
    approximations = []
    if config.overlap and not ENGINE_HAS_EXPERT_OVERLAP:
        approximations.append("overlap replayed as a per-layer barrier (per-expert pipelining: issue 13)")
    if not LANES_CHANGE_THROUGHPUT:
        approximations.append("storage throughput independent of lanes (queue-depth curve: issue 13)")
    if not ENGINE_HAS_MGMT_PER_BYTE:
        approximations.append("no cache bookkeeping time per miss, no per-token overhead in the engine")
    timed = TimedConfig(eviction="lru", prefetch=_prefetch(config.prefetch), capacity_bytes=int(config.cache_mib * MIB),
                        profile=profile_name, profile_overrides=tuple(overrides), bounds=False)
    return Setup(profile, timed, tuple(overrides), tuple(approximations))


def _prefetch(name: str) -> str:
    if name in ("none", "", None):
        return "none"
    raise UserError(f"prefetch {name!r}: the engine's speculative prefetch has no moesim counterpart yet", "--prefetch")
