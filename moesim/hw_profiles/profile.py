"""The hardware profile: what the engine needs to know about a machine, in SI units, with provenance.

Profiles are YAML files (see moesim/hw_profiles/data/*.yaml and README "Adding a profile") in which
every dimensioned value carries a unit ("53 GB/s") and a provenance (datasheet URL or measurement).
The loader (moesim.hw_profiles.loader) turns them into these frozen dataclasses; the engine reads
only these. `provenance` maps dotted field paths ("links.h2d.bandwidth") to where the figure came from.

Tiers: "vram" is the memory the compute device reads (VRAM on a GPU; unified or system DRAM on Apple
silicon and phones), "dram" host memory, "ssd" storage/flash. Links are named by their ends:
"h2d" host-to-device, "d2h", "ssd_h" SSD-to-host, "ssd_d" SSD-to-device (GPUDirect Storage),
"c2c" chip-to-chip (GH200, Grace to Hopper). A copy takes latency + bytes / bandwidth on one of
the link's engines. SSD reads differ: queue_depth reads are in flight at once and share
min(tiers.ssd.read_bandwidth, the SSD link's bandwidth), each after link latency + tier latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Compute:
    peak_flops: float  # dense bf16 FLOP/s of the compute device
    memory_bandwidth: float  # bytes/s the device reads its own memory (HBM) at, achieved
    launch_overhead: float  # seconds per kernel launch
    cpu_flops: float | None = None  # host CPU FLOP/s (execute-on-CPU miss handling)
    cpu_memory_bandwidth: float | None = None  # host DRAM bytes/s the CPU reads at


@dataclass(frozen=True)
class Tier:
    name: str
    capacity: float  # bytes
    reserved: float = 0.0  # bytes not available to the expert cache (weights, KV, runtime)
    bandwidth: float | None = None  # bytes/s (DRAM tiers)
    read_bandwidth: float | None = None  # bytes/s (SSD)
    latency: float | None = None  # seconds per request (SSD)
    queue_depth: int | None = None  # concurrent reads the SSD serves (SSD)

    @property
    def usable(self) -> float:
        return self.capacity - self.reserved


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth: float  # bytes/s, pinned host memory where that matters
    latency: float  # seconds per copy
    copy_engines: int = 1
    pageable_bandwidth: float | None = None  # bytes/s from pageable host memory

    def copy_time(self, nbytes: float, pageable: bool = False) -> float:
        bw = self.pageable_bandwidth if pageable and self.pageable_bandwidth else self.bandwidth
        return self.latency + nbytes / bw


@dataclass(frozen=True)
class Power:
    idle_watts: float
    active_watts: float
    joules_per_byte: dict[str, float] = field(default_factory=dict)  # per link name


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    compute: Compute
    tiers: dict[str, Tier]
    links: dict[str, Link]
    power: Power
    host_memory: str = "pinned"  # "pinned" | "pageable": which host-memory path expert copies use
    provenance: dict[str, str] = field(default_factory=dict)
    source_file: str | None = None

    def link(self, name: str) -> Link | None:
        return self.links.get(name)

    def tier(self, name: str) -> Tier | None:
        return self.tiers.get(name)

    def host_link(self) -> Link | None:
        """The link experts take from host DRAM to the cache tier: h2d, or c2c on GH200."""
        return self.links.get("h2d") or self.links.get("c2c")

    def ssd_link(self) -> Link | None:
        """SSD straight to the cache tier (GPUDirect Storage, phones, Apple) if present, else SSD to host."""
        return self.links.get("ssd_d") or self.links.get("ssd_h")

    @property
    def pageable(self) -> bool:
        return self.host_memory == "pageable"
