"""The ONE place a run's configuration becomes simulator options (cache, read lanes, overlap, k).

    setup = engine_setup(run.config, "phone-oneplus-15r")
    result = timed_replay(trace, setup.profile, setup.timed)

What each setting maps to in this tree's engine (moesim/sim/timed_replay.py, the hardware graph):
- cache_mib      -> TimedConfig.capacity_bytes (MiB x 2^20; 0 = every routed expert re-read)
- lanes          -> TimedConfig.io_lanes: reads in flight from storage; the storage's throughput curve
                    (memories.ssd.throughput) gives their aggregate rate, shared by the reads in flight
- overlap        -> TimedConfig.overlap: "expert" (per-expert pipelining = the engine's --overlap) or
                    "layer" (a per-layer barrier = its serial mode)
- top_k          -> the trace's own k (check_run refuses a trace whose k differs)
- prefill        -> TimedConfig.prefill_overlap="layer" whatever `overlap` says: the engine reads a
                    layer's routed experts "just before that layer's expert matmul runs", and the
                    matmul "runs only after our load returns" (BigMoeOnEdge docs/moe-streaming.md,
                    "Mechanism"); its --overlap lets a decode's expert matmul take each expert
                    as it lands, while a prefill's batched expert matmul needs all of the layer's
                    experts: a per-layer barrier
- slices         -> TimedConfig.read_slices: the engine reads a missed expert as its weight tensor slices
                    (gate, up, down; gemma4's fused gate_up and down), one request per slice, each on
                    its own lane ("Routed slices are read across N lanes", BigMoeOnEdge
                    docs/moe-streaming.md); shares by the slices' weights (SLICE_SHARES). Overlapped,
                    a layer's jobs are queued slice-major (slice_order="slice": "all gate slices,
                    then all up, then all down", its expert_stream_source.cpp load_layer_async),
                    serially expert-major
- overlap order  -> TimedConfig.expert_order="id" when overlapped: the compute threads "block per expert
                    on the readiness flags" (same file) inside ggml's mul_mat_id, one op per slice
                    kind visiting the routed experts in ascending id, so a resident expert queued
                    behind a missing one waits too (moesim/sim/read_slices.py)
- dense FFN      -> not overlapped (TimedConfig.ffn_overlap off): the log's "flash reads overlapped with
                    FFN compute" is printed for every model (qwen.log too, which has no dense FFN),
                    and llama.cpp's gemma4 graph builds the layer's dense MLP before the router, so
                    it has run before the routing callback issues the reads
- mmap           -> TimedConfig.storage_reads="buffered" through a page-cache memory, where the profile
                    has one; the phone profile has none, so a plain-mmap run is refused with the reason
Per-token overhead and cache bookkeeping per miss have no engine field yet: fit-profile fits them
(moesim/runs/fit.py) and reports them, and `Setup.approximations` lists them; `bookkeeping_per_byte` is
what check-run and `moesim advise` add beside the clock. `engine_order` is the read and compute order
above as TimedConfig fields: advise (moesim/advise/overlap.py) times the engine's modes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile
from moesim.runs.measured import RunConfig
from moesim.sim.timed_replay import TimedConfig

if TYPE_CHECKING:
    import pandas as pd

MIB = 2**20
# what this tree's engine can express; flipped as the issue-13 knobs land
ENGINE_HAS_MGMT_PER_BYTE = False
PREFILL_OVERLAP = "layer"  # see the module docstring, "prefill"
# shares of an expert's bytes and compute per weight slice, by GGUF architecture (llama.cpp tensor layout):
# gemma4's fused gate_up holds 2 x 704 x 2816 weights, its down 704 x 2816; others: gate, up, down alike
SLICE_SHARES = {"gemma4": (2 / 3, 1 / 3)}


@dataclass(frozen=True)
class Setup:
    profile: HardwareProfile
    timed: TimedConfig
    overrides: tuple[str, ...]
    approximations: tuple[str, ...] = field(default_factory=tuple)


def has_page_cache(profile: HardwareProfile) -> bool:
    return any(getattr(m, "is_page_cache", False) for m in profile.tiers.values())


def slice_shares(arch: str | None) -> tuple[float, ...]:
    """Each weight slice's share of an expert read (see SLICE_SHARES; equal shares of padding.slices_for)."""
    from moesim.runs.padding import slices_for

    n = slices_for(arch)
    return SLICE_SHARES.get((arch or "").lower(), (1.0 / n,) * n)


def engine_setup(config: RunConfig, profile_name: str, extra_overrides: tuple[str, ...] = (),
                 where: str = "run", arch: str | None = None) -> Setup:
    from moesim.sim.cli_timing import resolve_profile

    profile = resolve_profile(profile_name, tuple(extra_overrides))
    missing = config.missing(("cache_mib", "lanes", "overlap")) if not config.mmap else []
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise UserError(f"the run's files do not say its {', '.join(missing)}: pass {flags}", where)
    if config.mmap and not has_page_cache(profile):
        raise UserError(f"a plain-mmap run reads through the OS page cache, and profile {profile.name} has no "
                        "page-cache memory (kind: page_cache) to model it", where)
    approximations = []
    if not ENGINE_HAS_MGMT_PER_BYTE:
        approximations.append("cache bookkeeping is added per byte read only where the profile carries a fitted "
                              "mgmt_per_byte (a fit-profile output); no per-token overhead")
    timed = TimedConfig(eviction="lru", prefetch=_prefetch(config.prefetch),
                        capacity_bytes=int((config.cache_mib or 0) * MIB), profile=profile_name,
                        profile_overrides=tuple(extra_overrides), bounds=False,
                        io_lanes=config.lanes, storage_reads="buffered" if config.mmap else None,
                        **engine_order(config.overlap, arch or config.model))
    return Setup(profile, timed, tuple(extra_overrides), tuple(approximations))


def engine_order(overlap: bool | None, arch: str | None) -> dict[str, Any]:
    """The TimedConfig fields of the engine's read and compute order in its --overlap mode (True), its serial
    mode (False) or unsaid (None: the profile's overlap): overlap, prefill barrier, slice reads, slice and
    expert order, and the dense FFN not overlapped (the module docstring says why). engine_setup and
    `moesim advise` (moesim/advise/space.py) both take them from here, so advise prices the engine's own
    configuration as check-run does."""
    return {"overlap": None if overlap is None else ("expert" if overlap else "layer"),
            "prefill_overlap": PREFILL_OVERLAP, "read_slices": slice_shares(arch),
            "slice_order": "slice" if overlap else "expert", "expert_order": "id" if overlap else "arrival",
            "ffn_overlap": False}


def bookkeeping_per_byte(profile_arg: str) -> float:
    """Seconds of cache bookkeeping per byte read to add beside the clock: a fitted profile's mgmt_per_byte
    (its header, moesim/runs/profile_out.py), 0 for any other profile, and 0 once the clock adds it itself
    (ENGINE_HAS_MGMT_PER_BYTE), so it is never counted twice. check-run and advise both ask here."""
    from moesim.runs.profile_out import fitted_extras

    if ENGINE_HAS_MGMT_PER_BYTE:
        return 0.0
    return float(fitted_extras(profile_arg).get("mgmt_per_byte", 0.0))


def pass_bookkeeping(cells: "pd.DataFrame", n_passes: int, per_byte: float) -> np.ndarray:
    """Seconds of bookkeeping per pass: per_byte x the bytes every link copied in the pass's cells (a timed
    result's cell table). check-run adds it to each pass's wall time; advise shifts its pass ends by it."""
    columns = [c for c in cells.columns if c.startswith("bytes_")]
    copied = cells[columns].to_numpy(dtype=np.float64).sum(axis=1) if columns else np.zeros(len(cells))
    return per_byte * np.bincount(cells["pass"].to_numpy(dtype=np.int64), weights=copied, minlength=n_passes)


def _prefetch(name: str) -> str:
    if name in ("none", "", None):
        return "none"
    raise UserError(f"prefetch {name!r}: the engine's speculative prefetch has no moesim counterpart yet", "--prefetch")
