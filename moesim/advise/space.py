"""The configurations `moesim advise` searches: one table, one row per dimension.

A dimension is a name, its candidate values for one machine and model (a function of the
machine, the workload and the values already chosen for earlier dimensions), how each value maps
onto the run (TimedConfig fields and profile overrides) and the memory it costs. Adding a knob to
the search is adding a row to DIMENSIONS; nothing else in the search names a knob.

`bound_key` dimensions change the time bound (moesim/sim/bounds.py: it depends on the capacity and
on where objects live, not on the eviction or prefetch policy); the search computes one bound per
combination of them and prunes every configuration of a combination at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from moesim.advise.overlap import (FFN_OVERLAP, PREFETCH_CHANGE, overlap_choices,  # noqa: F401
                                   streams_from_flash, timed_field)
from moesim.advise.workload import Workload
from moesim.hw_profiles.profile import HardwareProfile
from moesim.units import format_bytes


@dataclass(frozen=True)
class Machine:
    """One profile with the memory the user says is free on it."""

    name: str
    profile: HardwareProfile
    vram_free: int  # bytes for dense weights, KV cache and the expert cache
    dram_free: int | None  # host DRAM for experts (None: the profile's own usable DRAM)
    cache_max: int | None = None  # an engine's expert-cache limit (--cache-max), else None
    notes: tuple[str, ...] = ()
    bookkeeping_per_byte: float = 0.0  # a fitted profile's cache bookkeeping, s/B read (moesim/advise/bookkeeping.py)

    @property
    def host_link(self) -> bool:
        return self.profile.link("c2c") is not None or self.profile.link("h2d") is not None

    @property
    def has_cpu(self) -> bool:
        compute = self.profile.compute
        return bool(getattr(compute, "cpu_flops", None) and getattr(compute, "cpu_memory_bandwidth", None))


@dataclass(frozen=True)
class Choice:
    """One value of one dimension and what it does to the run."""

    dimension: str
    label: str
    config: tuple[tuple[str, Any], ...] = ()  # TimedConfig fields it sets
    profile_set: tuple[str, ...] = ()  # profile overrides ("tiers.dram.capacity=... B")
    vram_bytes: int = 0
    dram_bytes: int = 0
    facts: tuple[tuple[str, Any], ...] = ()  # what engine mappings read (e.g. ("capacity_bytes", n))

    def fact(self, key: str, default: Any = None) -> Any:
        return dict(self.facts).get(key, default)


Candidates = Callable[[Machine, Workload, dict[str, Choice]], list[Choice]]


@dataclass(frozen=True)
class Dimension:
    name: str
    help: str
    candidates: Candidates
    bound_key: bool = False


def _device_experts(workload: Workload, chosen: dict[str, Choice]) -> int:
    """Bytes of the experts that run on the device (all but those a static placement keeps on the CPU)."""
    placement = chosen.get("placement")
    placed = int(placement.fact("placed_bytes", 0)) if placement is not None else 0
    return max(workload.expert_bytes - placed, 0)


def _cache_room(machine: Machine, workload: Workload, chosen: dict[str, Choice] | None = None) -> int:
    """Bytes left for the expert cache on the compute device after dense weights and KV cache."""
    vram = machine.profile.tier("vram")
    usable = int(vram.usable) if vram is not None else machine.vram_free
    room = min(machine.vram_free, usable) - workload.dense_bytes - workload.kv_bytes
    if machine.cache_max is not None:
        room = min(room, machine.cache_max)
    return max(min(room, _device_experts(workload, chosen or {})), 0)


def _layer_expert_bytes(workload: Workload) -> list[int]:
    meta = workload.trace.meta
    return [int(b) * int(meta.n_experts) for b in meta.object_bytes]


def _model_layers(workload: Workload) -> list[int]:
    """The model layer index of each trace layer (trace meta.layer_ids, else the spec's MoE layers)."""
    meta = workload.trace.meta
    if meta.layer_ids:
        return [int(x) for x in meta.layer_ids]
    spec = workload.spec
    if spec is not None and len(spec.moe_layers) == meta.n_layers:
        return list(spec.moe_layers)
    return list(range(meta.n_layers))


def _placement(machine: Machine, workload: Workload, chosen: dict[str, Choice]) -> list[Choice]:
    """Static placements: every expert on the device (through the cache), the first N layers' experts on
    the CPU (llama.cpp --n-cpu-moe N, N the fewest layers that make the rest fit, and 2N), all on the
    CPU (KTransformers), or everything on the CPU (cpu-only: llama.cpp -ngl 0) where host DRAM holds the
    experts, dense weights and KV cache. Needs a clock with CPU expert execution, a host link and a CPU in
    the profile (a phone's compute device is its CPU already: nothing to place)."""
    gpu = Choice("placement", "gpu", config=(("placement", "gpu"),) if timed_field("placement") else ())
    if not (timed_field("placement") and machine.host_link and machine.has_cpu):
        return [gpu]
    out = [gpu]
    per_layer = _layer_expert_bytes(workload)
    room = _cache_room(machine, workload)
    n_layers = len(per_layer)
    fit = next((n for n in range(n_layers + 1) if sum(per_layer[n:]) <= room), n_layers)
    model_layer = _model_layers(workload)
    for n in sorted({fit, (fit + n_layers) // 2}):
        if 0 < n < n_layers:
            placed = sum(per_layer[:n])
            first_n = model_layer[n - 1] + 1  # --n-cpu-moe counts the model's layers, dense ones included
            out.append(Choice("placement", f"cpu-layers:n={first_n}",
                              config=(("placement", f"cpu-layers:n={first_n}"),),
                              dram_bytes=0, facts=(("placed_bytes", placed), ("cpu_layers", first_n))))
    out.append(Choice("placement", "cpu-all", config=(("placement", "cpu-all"),),
                      facts=(("placed_bytes", workload.expert_bytes), ("cpu_all", True))))
    home = chosen.get("home")
    free = _dram_free(machine)
    host_side = workload.expert_bytes + workload.dense_bytes + workload.kv_bytes
    if home is not None and home.fact("home") == "dram" and (free is None or free >= host_side):
        # everything on the CPU (moesim/policies/placement.py cpu-only): the dense weights and KV cache
        # join the experts in host DRAM, and the GPU holds nothing
        out.append(Choice("placement", "cpu-only", config=(("placement", "cpu-only"),),
                          dram_bytes=workload.dense_bytes + workload.kv_bytes,
                          facts=(("placed_bytes", workload.expert_bytes), ("cpu_only", True))))
    return out


def _dram_free(machine: Machine) -> int | None:
    """Host DRAM free for the model: the user's figure, else the profile's usable DRAM (None: no DRAM tier)."""
    dram = machine.profile.tier("dram")
    return machine.dram_free if machine.dram_free is not None else (int(dram.usable) if dram is not None else None)


def _home(machine: Machine, workload: Workload, chosen: dict[str, Choice]) -> list[Choice]:
    """Where experts live off the compute device: host DRAM when it holds them all, else SSD/flash."""
    if not machine.host_link:
        return [Choice("home", "flash", facts=(("home", "ssd"),))]  # unified memory: read from flash
    dram = machine.profile.tier("dram")
    free = _dram_free(machine)
    overrides: tuple[str, ...] = ()
    if machine.dram_free is not None and dram is not None:
        overrides = (f"tiers.dram.capacity={machine.dram_free} B", "tiers.dram.reserved=0 B")
    if free is None or free >= workload.expert_bytes:
        return [Choice("home", "dram", profile_set=overrides, dram_bytes=workload.expert_bytes,
                       facts=(("home", "dram"),))]
    if machine.profile.tier("ssd") is None:
        return []
    return [Choice("home", f"ssd + {format_bytes(free)} DRAM cache", profile_set=overrides, dram_bytes=free,
                   facts=(("home", "ssd"), ("dram_cache_bytes", free)))]


CAPACITY_SHARES = (1.0, 0.5, 0.25)


def _capacity(machine: Machine, workload: Workload, chosen: dict[str, Choice]) -> list[Choice]:
    """The largest expert cache that fits, and smaller ones (a smaller cache can save energy)."""
    placement = chosen.get("placement")
    if placement is not None and placement.fact("cpu_only"):  # the GPU holds nothing
        return [Choice("capacity", "none (everything on the CPU)", config=(("capacity_bytes", 0),),
                       facts=(("capacity_bytes", 0), ("all_resident", True)))]
    vram = machine.profile.tier("vram")
    free = min(machine.vram_free, int(vram.usable) if vram is not None else machine.vram_free)
    if free < workload.dense_bytes + workload.kv_bytes:
        return []  # the dense weights and KV cache alone do not fit: nothing does
    room = _cache_room(machine, workload, chosen)
    device = _device_experts(workload, chosen)
    if device == 0:  # every expert runs on the CPU: no expert cache on the device
        return [Choice("capacity", "none (experts on the CPU)", config=(("capacity_bytes", 0),),
                       facts=(("capacity_bytes", 0), ("all_resident", True)))]
    out: list[Choice] = []
    seen: set[int] = set()
    for share in CAPACITY_SHARES:
        nbytes = int(room * share)
        if nbytes <= 0 or nbytes in seen:
            continue
        seen.add(nbytes)
        everything = nbytes >= device
        label = f"all experts ({format_bytes(nbytes)})" if everything else format_bytes(nbytes)
        out.append(Choice("capacity", label, config=(("capacity_bytes", nbytes),), vram_bytes=nbytes,
                          facts=(("capacity_bytes", nbytes), ("all_resident", everything))))
    return out


# Deployable policies only: no policy that reads the trace's future (belady, oracle, static-hot
# profiled on the whole trace). static-hot pins the hottest experts of the prompt (the prefill pass).
EVICTIONS = ("lru", "lfu", "least-stale", "lru-ds", "slru", "arc", "moe-infinity", "static-hot:profile_passes=1")
PREFETCHES = ("none", "previous-pass", "frequency", "markov", "score-budget")


def _all_resident(chosen: dict[str, Choice]) -> bool:
    cap = chosen.get("capacity")
    return bool(cap is not None and cap.fact("all_resident"))


PRELOAD_ALL = "static-hot:share=1.0"  # pins every expert the run uses before its first token


def _eviction(machine: Machine, workload: Workload, chosen: dict[str, Choice]) -> list[Choice]:
    cap = chosen.get("capacity")
    if cap is not None and cap.fact("capacity_bytes") == 0 and _all_resident(chosen):
        return [Choice("eviction", "lru", config=(("eviction", "lru"),))]  # no cache: every expert on the CPU
    if _all_resident(chosen):  # nothing is ever evicted: load on first use (LRU), or load everything first
        return [Choice("eviction", "lru", config=(("eviction", "lru"),)),
                Choice("eviction", "preload all", config=(("eviction", PRELOAD_ALL),))]
    return [Choice("eviction", n, config=(("eviction", n),)) for n in EVICTIONS]


def _prefetch(machine: Machine, workload: Workload, chosen: dict[str, Choice]) -> list[Choice]:
    if _all_resident(chosen):
        return [Choice("prefetch", "none", config=(("prefetch", "none"),))]
    names = list(PREFETCHES)
    if any(k.startswith("lookahead") for k in workload.trace.predictions):
        names.append("gate-lookahead")
    # the flash-streaming engine (moesim/runs/engine_map.py) reads an expert only once it is routed
    change = (("engine_change", (PREFETCH_CHANGE,)),) if streams_from_flash(machine) else ()
    return [Choice("prefetch", n, config=(("prefetch", n),), facts=change if n != "none" else ())
            for n in names]


def _miss(machine: Machine, workload: Workload, chosen: dict[str, Choice]) -> list[Choice]:
    out = [Choice("miss", "stall", config=(("miss", "stall"),))]
    if machine.has_cpu and machine.host_link and not _all_resident(chosen):
        out.append(Choice("miss", "cpu", config=(("miss", "cpu"),)))
    return out


def _storage_lanes(machine: Machine) -> tuple[int, list[int]]:
    """(the storage's default read lanes, the queue depths its throughput curve was measured at)."""
    ssd = machine.profile.tier("ssd")
    if ssd is None:
        return 1, []
    link = machine.profile.link("ssd_d") or machine.profile.link("ssd_h")
    default = int(ssd.read_lanes or (link.copy_engines if link is not None else 1))
    depths = sorted({int(p.queue_depth) for p in ssd.throughput.points}) if ssd.throughput is not None else []
    return default, depths


def _lanes(machine: Machine, workload: Workload, chosen: dict[str, Choice]) -> list[Choice]:
    """Reads in flight from storage (an engine's io threads): the profile's default, and every deeper queue
    depth its throughput curve was measured at. Beyond the deepest measured point the curve is flat by
    assumption (moesim/hw_profiles/profile.py StorageCurve), so no such depth is offered; nor a shallower
    one, which the curve makes no faster."""
    home = chosen.get("home")
    if home is None or home.fact("home") != "ssd":
        return [Choice("lanes", NO_STORAGE_READS)]
    default, depths = _storage_lanes(machine)
    out = [Choice("lanes", str(default), facts=(("io_lanes", default),))]
    if not timed_field("io_lanes"):
        return out
    return out + [Choice("lanes", str(d), config=(("io_lanes", d),), facts=(("io_lanes", d),))
                  for d in depths if d > default]


NO_STORAGE_READS = "no storage reads"


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("home", "where experts live off the compute device (host DRAM, or SSD/flash with a DRAM cache)",
              _home, bound_key=True),
    Dimension("lanes", "reads in flight from storage (io threads): the profile's, and deeper measured queue depths",
              _lanes, bound_key=True),
    Dimension("placement", "static expert placement: all on the device, the first N layers' experts on the CPU, all, "
              "or everything on the CPU (cpu-only)",
              _placement, bound_key=True),
    Dimension("capacity", "GPU expert cache: the largest that fits beside dense weights and KV cache, and smaller",
              _capacity, bound_key=True),
    Dimension("overlap", "an expert starts when its bytes land (expert) or when its whole layer's have (layer), "
              "in the engine's own read and compute order where it streams from flash; engine changes, "
              "labelled: expert+ffn (dense FFN while reads stream), expert+arrival (experts as they land)",
              overlap_choices, bound_key=True),
    Dimension("eviction", "which cached expert makes room", _eviction),
    Dimension("prefetch", "which experts are copied ahead of their layer", _prefetch),
    Dimension("miss", "a miss stalls for the copy, or runs the expert on the CPU", _miss),
)

BASELINE = {"eviction": "lru", "prefetch": "none", "miss": "stall"}
"""The baseline beside every answer: LRU, no prefetch, stall on a miss, at the largest cache."""


@dataclass(frozen=True)
class Candidate:
    """One full configuration: a choice per dimension, in table order."""

    choices: tuple[Choice, ...]
    index: int = 0  # position in the deterministic enumeration

    def get(self, dimension: str) -> Choice | None:
        for c in self.choices:
            if c.dimension == dimension:
                return c
        return None

    def group_key(self, dimensions: Sequence[Dimension] = DIMENSIONS) -> tuple[str, ...]:
        keys = {d.name for d in dimensions if d.bound_key}
        return tuple(c.label for c in self.choices if c.dimension in keys)

    def config_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in self.choices:
            out.update(dict(c.config))
        return out

    def profile_set(self) -> tuple[str, ...]:
        return tuple(s for c in self.choices for s in c.profile_set)

    def labels(self) -> dict[str, str]:
        return {c.dimension: c.label for c in self.choices}

    def is_baseline(self) -> bool:
        labels = self.labels()
        return all(labels.get(k, v) == v for k, v in BASELINE.items())

    def vram_bytes(self, workload: Workload) -> int:
        placement = self.get("placement")
        on_gpu = 0 if placement is not None and placement.fact("cpu_only") else workload.dense_bytes + workload.kv_bytes
        return on_gpu + sum(c.vram_bytes for c in self.choices)

    def dram_bytes(self) -> int:
        return sum(c.dram_bytes for c in self.choices)


def enumerate_space(machine: Machine, workload: Workload,
                    dimensions: Sequence[Dimension] = DIMENSIONS) -> list[Candidate]:
    """Every configuration, depth first in table order (deterministic)."""
    out: list[Candidate] = []

    def walk(i: int, chosen: dict[str, Choice], path: tuple[Choice, ...]) -> None:
        if i == len(dimensions):
            out.append(Candidate(path, len(out)))
            return
        dim = dimensions[i]
        for choice in dim.candidates(machine, workload, chosen):
            walk(i + 1, {**chosen, dim.name: choice}, path + (choice,))

    walk(0, {}, ())
    return out


def describe(dimensions: Sequence[Dimension] = DIMENSIONS) -> list[dict[str, Any]]:
    return [{"name": d.name, "help": d.help, "bound_key": d.bound_key} for d in dimensions]
