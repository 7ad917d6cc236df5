"""The hardware profile as a graph: memories, processors and the links between memories, in SI units.

Profiles are YAML files (moesim/hw_profiles/data/*.yaml, README "Adding a profile") in which every
dimensioned value carries a unit ("53 GB/s") and a provenance. The loader (moesim.hw_profiles.loader)
turns them into these frozen dataclasses; the engine reads only these. `provenance` maps dotted
field paths ("links.h2d.bandwidth") to where the figure came from.

- A *memory* (`Memory`, also called a tier) holds bytes: HBM/VRAM, host DRAM, the OS page cache,
  SSD or flash, CXL memory, a peer GPU's HBM. Storage memories carry a read-throughput curve over
  request size and queue depth (`StorageCurve`), a read latency and a default number of read lanes.
- A *processor* (`Processor`) computes from one memory at `memory_bandwidth`, with peak FLOP/s per
  dtype and a per-kernel overhead under the profile's `framework`.
- A *link* (`Link`) copies bytes from `src` to `dst` memory at `bandwidth` (per direction), with a
  per-transfer `latency`; its `copy_engines` (queues) SHARE that bandwidth. `duplex` says whether it
  also carries `dst -> src` traffic on its own server ("full") or on the same one ("half").
Routes are found from this graph by moesim.sim.topology; no code names a tier or a link.

Profiles built the old way (a `compute` block, tiers named vram/dram/ssd, links named h2d, d2h,
ssd_h, ssd_d, c2c) still construct: `__post_init__` derives the graph from them (LEGACY_LINK_ENDS).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# Old link names and the memories they join (profiles written before the graph schema).
LEGACY_LINK_ENDS: dict[str, tuple[str, str]] = {
    "h2d": ("dram", "vram"),
    "d2h": ("vram", "dram"),
    "ssd_h": ("ssd", "dram"),
    "ssd_d": ("ssd", "vram"),
    "c2c": ("dram", "vram"),
}
STORAGE_KINDS = ("ssd", "flash", "nvme", "storage", "disk")
# Pre-graph value paths and where they live now ({device}: the expert processor).
LEGACY_PATHS = {
    "compute.peak_flops": "processors.{device}.peak_flops.bf16",
    "compute.memory_bandwidth": "processors.{device}.memory_bandwidth",
    "compute.launch_overhead": "processors.{device}.kernel_overhead",
    "compute.cpu_flops": "processors.cpu.peak_flops.fp32",
    "compute.cpu_memory_bandwidth": "processors.cpu.memory_bandwidth",
}


def translate_path(path: str, device: str) -> str:
    """A pre-graph path ("tiers.ssd.queue_depth", "compute.peak_flops") in the graph schema."""
    if path in LEGACY_PATHS:
        return LEGACY_PATHS[path].format(device=device)
    parts = path.split(".")
    if len(parts) == 3 and parts[0] == "tiers":
        return f"memories.{parts[1]}.{parts[2]}"
    return path
DTYPES = ("bf16", "fp16", "fp8", "int8", "int4", "fp32")


@dataclass(frozen=True)
class StoragePoint:
    request_size: float  # bytes per read request
    queue_depth: int  # requests in flight
    bandwidth: float  # bytes/s of all of them together


@dataclass(frozen=True)
class StorageCurve:
    """Read throughput of a storage device by request size and queue depth (a small measured table).

    Between table points: linear in queue depth (from (0, 0) below the first point, flat beyond the
    last), and linear in log(request size) between the two nearest request sizes (clamped outside).
    Both interpolations are convex blends of the table's columns, so a table whose throughput never
    falls with queue depth gives a curve that never falls with queue depth.
    """

    points: tuple[StoragePoint, ...]

    def _by_size(self) -> list[tuple[float, list[tuple[int, float]]]]:
        sizes: dict[float, list[tuple[int, float]]] = {}
        for p in self.points:
            sizes.setdefault(p.request_size, []).append((p.queue_depth, p.bandwidth))
        return [(s, sorted(v)) for s, v in sorted(sizes.items())]

    @staticmethod
    def _along_depth(column: list[tuple[int, float]], depth: float) -> float:
        depths = [d for d, _ in column]
        i = bisect.bisect_left(depths, depth)
        if i < len(column) and depths[i] == depth:
            return column[i][1]
        if i >= len(column):
            return column[-1][1]
        d0, b0 = (0, 0.0) if i == 0 else column[i - 1]
        d1, b1 = column[i]
        return b0 + (b1 - b0) * (depth - d0) / (d1 - d0)

    def bandwidth(self, request_size: float, queue_depth: float) -> float:
        """Aggregate bytes/s with `queue_depth` requests of `request_size` bytes in flight."""
        if queue_depth <= 0:
            return 0.0
        table = self._by_size()
        sizes = [s for s, _ in table]
        if request_size <= sizes[0] or len(sizes) == 1:
            return self._along_depth(table[0][1], queue_depth)
        if request_size >= sizes[-1]:
            return self._along_depth(table[-1][1], queue_depth)
        i = bisect.bisect_right(sizes, request_size)
        (s0, c0), (s1, c1) = table[i - 1], table[i]
        w = (math.log(request_size) - math.log(s0)) / (math.log(s1) - math.log(s0))
        return (1 - w) * self._along_depth(c0, queue_depth) + w * self._along_depth(c1, queue_depth)

    @staticmethod
    def flat(bandwidth: float, request_size: float = 1 << 20) -> StorageCurve:
        """One read alone gets the whole bandwidth."""
        return StorageCurve((StoragePoint(request_size, 1, bandwidth),))

    @staticmethod
    def shared(bandwidth: float, queue_depth: int, request_size: float = 1 << 20) -> StorageCurve:
        """The pre-graph model: each of `queue_depth` reads gets bandwidth / queue_depth."""
        q = max(int(queue_depth), 1)
        return StorageCurve(tuple(StoragePoint(request_size, n, bandwidth * n / q) for n in range(1, q + 1)))


@dataclass(frozen=True)
class Memory:
    """One memory of the graph. The positional order is the pre-graph `Tier`'s."""

    name: str
    capacity: float  # bytes
    reserved: float = 0.0  # bytes not available to the expert cache (weights, KV, runtime)
    bandwidth: float | None = None  # bytes/s of the memory itself (DRAM-like memories)
    read_bandwidth: float | None = None  # storage: flat ceiling, or the old shared model with queue_depth
    latency: float | None = None  # storage: seconds to the first byte of each read
    queue_depth: int | None = None  # pre-graph: reads in flight sharing read_bandwidth (becomes read_lanes)
    kind: str = ""  # "hbm", "dram", "page_cache", "ssd", "flash", "cxl", "peer_hbm", ...
    request_size: float | None = None  # storage: bytes per read request the device is sent
    read_lanes: int | None = None  # storage: reads in flight by default (an engine's io threads)
    throughput: StorageCurve | None = None  # storage: bytes/s by request size and queue depth
    requests_per_read: int | None = None  # storage: requests each read keeps in flight (a read split into
    # request_size pieces submitted together, e.g. an O_DIRECT pread the kernel splits); default 1

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", {"vram": "hbm", "ssd": "ssd"}.get(self.name, self.name))
        if self.throughput is None and self.read_bandwidth:
            size = self.request_size or float(1 << 20)
            curve = (StorageCurve.shared(self.read_bandwidth, self.queue_depth, size) if self.queue_depth
                     else StorageCurve.flat(self.read_bandwidth, size))
            object.__setattr__(self, "throughput", curve)
        if self.read_lanes is None and self.queue_depth:
            object.__setattr__(self, "read_lanes", int(self.queue_depth))

    @property
    def usable(self) -> float:
        return self.capacity - self.reserved

    @property
    def is_storage(self) -> bool:
        return self.kind in STORAGE_KINDS or self.throughput is not None

    @property
    def is_page_cache(self) -> bool:
        return self.kind == "page_cache"


Tier = Memory  # the pre-graph name


@dataclass(frozen=True)
class Link:
    """A copy path between two memories. Positional order is the pre-graph Link's."""

    name: str
    bandwidth: float  # bytes/s per direction, all copy engines together (pinned host memory)
    latency: float  # seconds per transfer
    copy_engines: int = 1  # transfers in flight; they share `bandwidth`
    pageable_bandwidth: float | None = None  # bytes/s from pageable host memory
    src: str = ""
    dst: str = ""
    duplex: str = "simplex"  # "simplex" (src -> dst only) | "full" (each direction its own server) | "half"
    reverse_bandwidth: float | None = None  # dst -> src bytes/s when duplex (default: bandwidth)
    request_size: float | None = None  # reads from storage over this link are split into requests of this size

    def copy_time(self, nbytes: float, pageable: bool = False) -> float:
        """One transfer alone on the link."""
        bw = self.pageable_bandwidth if pageable and self.pageable_bandwidth else self.bandwidth
        return self.latency + nbytes / bw


@dataclass(frozen=True)
class Processor:
    name: str  # "gpu", "cpu", "npu"
    kind: str  # "gpu" | "cpu" | "npu"
    memory: str  # the memory it reads weights from ("vram", "dram", ...)
    peak_flops: dict[str, float]  # FLOP/s by dtype: "bf16", "fp16", "fp8", "int8", "fp32" (at least bf16 or fp32)
    memory_bandwidth: float  # achieved bytes/s reading `memory`
    kernel_overhead: float  # seconds per kernel/op under the profile's framework
    cores: int | None = None
    active_watts: float | None = None
    idle_watts: float | None = None
    numa_nodes: int | None = None  # memory nodes (sockets) `memory_bandwidth` is spread over, equally
    numa_link_bandwidth: float | None = None  # bytes/s per direction between two nodes (UPI, Infinity Fabric)
    # FLOP/s its matrix-matrix kernels achieve (more than one token per weight read: a prefill's batched
    # matmuls), whatever the dtype; None: those run at peak_flops too (see moesim/sim/compute/processors.py)
    batched_flops: float | None = None

    def flops(self, dtype: str = "bf16") -> float:
        """Peak FLOP/s at `dtype`, else the nearest listed one (bf16 <-> fp16, then fp32)."""
        for d in (dtype, "bf16", "fp16", "fp32", *self.peak_flops):
            if d in self.peak_flops:
                return self.peak_flops[d]
        raise KeyError(dtype)


@dataclass(frozen=True)
class Compute:
    """The pre-graph view: the expert processor's roofline plus the host CPU's (derived)."""

    peak_flops: float  # dense bf16 FLOP/s of the compute device
    memory_bandwidth: float  # bytes/s the device reads its own memory (HBM) at, achieved
    launch_overhead: float  # seconds per kernel launch
    cpu_flops: float | None = None  # host CPU FLOP/s (execute-on-CPU miss handling)
    cpu_memory_bandwidth: float | None = None  # host DRAM bytes/s the CPU reads at


@dataclass(frozen=True)
class Power:
    idle_watts: float
    active_watts: float
    joules_per_byte: dict[str, float] = field(default_factory=dict)  # per link name


@dataclass(frozen=True)
class HardwareProfile:
    """Give `processors` (the graph) or, the pre-graph way, `compute`; the other is derived."""

    name: str
    description: str
    compute: Compute | None = None  # derived view when `processors` are given
    tiers: dict[str, Memory] = field(default_factory=dict)  # the memories
    links: dict[str, Link] = field(default_factory=dict)
    power: Power = field(default_factory=lambda: Power(0.0, 0.0))
    host_memory: str = "pinned"  # "pinned" | "pageable": which host-memory path expert copies use
    provenance: dict[str, str] = field(default_factory=dict)
    source_file: str | None = None
    processors: dict[str, Processor] = field(default_factory=dict)
    framework: str | None = None  # "pytorch-eager", "cuda-graphs", "llama.cpp", ...
    overlap: str = "layer"  # default overlap mode: "layer" (per-layer barrier) | "expert" (pipelined)
    expert_processor: str | None = None  # which processor runs experts (default: first gpu/npu, else first)
    storage_reads: str = "direct"  # "direct" (O_DIRECT, GPUDirect: no page cache) | "buffered" (page cache)

    def __post_init__(self) -> None:
        links = {}
        tiers = dict(self.tiers)
        for name, link in self.links.items():
            if not link.src and name in LEGACY_LINK_ENDS:
                src, dst = LEGACY_LINK_ENDS[name]
                if name == "ssd_h" and "dram" not in tiers and not {"h2d", "c2c"} & set(self.links):
                    dst = "vram"  # pre-graph unified memory: the SSD link fed the cache tier
                link = replace(link, src=src, dst=dst)
                for end in (link.src, link.dst):  # pre-graph code: host DRAM without a tier holds everything
                    tiers.setdefault(end, Memory(end, float("inf")))
            links[name] = link
        object.__setattr__(self, "links", links)
        object.__setattr__(self, "tiers", tiers)
        if not self.processors:
            if self.compute is None:
                raise ValueError(f"profile {self.name}: give processors or compute")
            object.__setattr__(self, "processors", _processors_from_compute(self.compute, self.tiers))
            object.__setattr__(self, "provenance", {translate_path(k, "gpu"): v for k, v in self.provenance.items()})
        if self.expert_processor is None:
            devices = [p.name for p in self.processors.values() if p.kind in ("gpu", "npu")]
            object.__setattr__(self, "expert_processor", (devices or list(self.processors))[0])
        if self.compute is None:
            object.__setattr__(self, "compute", self._compute_view())

    def _compute_view(self) -> Compute:
        device = self.processors[self.expert_processor]  # type: ignore[index]
        cpu = self.processors.get("cpu")
        return Compute(peak_flops=device.flops("bf16"), memory_bandwidth=device.memory_bandwidth,
                       launch_overhead=device.kernel_overhead,
                       cpu_flops=cpu.flops("fp32") if cpu else None,
                       cpu_memory_bandwidth=cpu.memory_bandwidth if cpu else None)

    @property
    def memories(self) -> dict[str, Memory]:
        return self.tiers

    @property
    def device(self) -> Processor:
        """The processor that runs experts."""
        return self.processors[self.expert_processor]  # type: ignore[index]

    def link(self, name: str) -> Link | None:
        return self.links.get(name)

    def tier(self, name: str) -> Memory | None:
        return self.tiers.get(name)

    def links_between(self, src: str, dst: str) -> list[Link]:
        """Links that carry src -> dst (simplex links forwards, duplex ones either way)."""
        return [link for link in self.links.values()
                if (link.src, link.dst) == (src, dst) or (link.duplex != "simplex" and (link.dst, link.src) == (src, dst))]

    def host_link(self) -> Link | None:
        """The widest link into the expert processor's memory from a non-storage memory."""
        mem = self.device.memory
        into = [link for link in self.links.values() for s, d in _directions(link)
                if d == mem and s in self.tiers and not self.tiers[s].is_storage]
        return max(into, key=lambda link: link.bandwidth, default=None)

    def ssd_link(self) -> Link | None:
        """The widest link out of a storage memory."""
        out = [link for link in self.links.values() for s, _ in _directions(link)
               if s in self.tiers and self.tiers[s].is_storage]
        return max(out, key=lambda link: link.bandwidth, default=None)

    @property
    def pageable(self) -> bool:
        return self.host_memory == "pageable"


def _directions(link: Link) -> list[tuple[str, str]]:
    return [(link.src, link.dst)] + ([(link.dst, link.src)] if link.duplex != "simplex" else [])


def _processors_from_compute(compute: Compute, tiers: dict[str, Memory]) -> dict[str, Processor]:
    """Pre-graph profiles: the compute device reads "vram"; the host CPU (if given) reads "dram"."""
    out = {"gpu": Processor("gpu", "gpu", "vram", {"bf16": compute.peak_flops}, compute.memory_bandwidth,
                            compute.launch_overhead)}
    if compute.cpu_flops and compute.cpu_memory_bandwidth:
        out["cpu"] = Processor("cpu", "cpu", "dram" if "dram" in tiers else "vram", {"fp32": compute.cpu_flops},
                               compute.cpu_memory_bandwidth, 0.0)
    return out


# optional processor figures added after results were first recorded: left out of a profile's record when
# absent, so the records (and the hashes sweeps resume by) of profiles without them stay as they were
OMIT_WHEN_ABSENT = ("batched_flops", "numa_nodes", "numa_link_bandwidth")


def profile_record(profile: HardwareProfile) -> dict[str, Any]:
    """Every value of the profile as plain data (dataclasses.asdict), less OMIT_WHEN_ABSENT figures that are None."""
    data = asdict(profile)
    for proc in (data.get("processors") or {}).values():
        for key in OMIT_WHEN_ABSENT:
            if proc.get(key) is None:
                proc.pop(key, None)
    return data
