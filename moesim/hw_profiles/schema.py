"""What a hardware-profile file may contain: sections, fields, their quantity kinds and limits.

One table drives the loader, the override paths (`links.h2d.bandwidth`), `profiles show` and the
README schema, so a field added here is accepted, overridable and shown everywhere at once.
The graph schema (memories, processors, links with `from`/`to`) is the current one; files in the
pre-graph schema (`compute`, `tiers`) are converted by moesim.hw_profiles.legacy.
"""

from __future__ import annotations

from dataclasses import dataclass

from moesim.hw_profiles.profile import DTYPES, LEGACY_PATHS
from moesim.hw_profiles.profile import translate_path as legacy_translate

COUNT = "count"  # a plain integer (copy engines, read lanes): no unit
TEXT = "text"  # a word or name (kinds, memory names, duplex)


@dataclass(frozen=True)
class FieldSpec:
    """One field: `kind` is a moesim.units kind, COUNT or TEXT; `positive` demands > 0 (else >= 0)."""

    kind: str
    required: bool = False
    positive: bool = True
    help: str = ""
    choices: tuple[str, ...] = ()


MEMORY_FIELDS: dict[str, FieldSpec] = {
    "kind": FieldSpec(TEXT, help="hbm, dram, page_cache, ssd, flash, cxl, peer_hbm, ... (storage kinds read via a curve)"),
    "capacity": FieldSpec("bytes", True, help="bytes of the memory"),
    "reserved": FieldSpec("bytes", positive=False, help="bytes not available to the expert cache"),
    "bandwidth": FieldSpec("bandwidth", help="bytes/s of the memory itself"),
    "read_bandwidth": FieldSpec("bandwidth", help="storage: flat read throughput (one read alone gets it all)"),
    "latency": FieldSpec("time", positive=False, help="storage: seconds to the first byte of every read"),
    "request_size": FieldSpec("bytes", help="storage: bytes per request the device is sent (where the curve is read)"),
    "read_lanes": FieldSpec(COUNT, help="storage: reads in flight by default (io threads); run option io_lanes overrides"),
    "queue_depth": FieldSpec(COUNT, help="storage, with read_bandwidth: reads in flight needed to reach it (linear below)"),
    "requests_per_read": FieldSpec(COUNT, help="storage: request_size requests each read keeps in flight (default 1); "
                                              "the device's queue depth is reads in flight x this"),
}
# `throughput` (storage curve) is read apart: points of [request size, queue depth, bandwidth].
STORAGE_POINT_KINDS = ("bytes", COUNT, "bandwidth")

PROCESSOR_KINDS = ("gpu", "cpu", "npu")
PROCESSOR_FIELDS: dict[str, FieldSpec] = {
    "kind": FieldSpec(TEXT, True, help="gpu, cpu or npu", choices=PROCESSOR_KINDS),
    "memory": FieldSpec(TEXT, True, help="the memory it reads weights from"),
    "memory_bandwidth": FieldSpec("bandwidth", True, help="bytes/s it reads its memory at (achieved)"),
    "kernel_overhead": FieldSpec("time", True, positive=False, help="seconds per kernel/op under the framework"),
    "cores": FieldSpec(COUNT, help="cores (CPU threads the engine uses)"),
    "active_watts": FieldSpec("power", help="watts while it computes"),
    "idle_watts": FieldSpec("power", positive=False, help="watts while idle"),
    "numa_nodes": FieldSpec(COUNT, help="cpu: memory nodes (sockets) memory_bandwidth is split over, one per "
                                        "socket (see moesim/sim/numa.py for the layouts a run picks)"),
    "numa_link_bandwidth": FieldSpec("bandwidth", help="cpu: bytes/s per direction between two nodes (UPI, xGMI)"),
    "batched_flops": FieldSpec("flops", help="FLOP/s of matrix-matrix work (more than one token per weight read: "
                                             "prefill's batched matmuls), any dtype; absent: peak_flops"),
}
PEAK_FLOPS = FieldSpec("flops", help="peak FLOP/s at this dtype")  # processors.X.peak_flops.<dtype>

DUPLEX = ("simplex", "full", "half")
LINK_FIELDS: dict[str, FieldSpec] = {
    "from": FieldSpec(TEXT, True, help="source memory"),
    "to": FieldSpec(TEXT, True, help="destination memory"),
    "bandwidth": FieldSpec("bandwidth", True, help="bytes/s per direction, all copy engines together (pinned)"),
    "latency": FieldSpec("time", True, positive=False, help="seconds added to every transfer"),
    "copy_engines": FieldSpec(COUNT, help="transfers in flight at once; they SHARE the bandwidth"),
    "pageable_bandwidth": FieldSpec("bandwidth", help="bytes/s from pageable host memory"),
    "duplex": FieldSpec(TEXT, help="simplex (from -> to only), full (each way its own bandwidth), half (shared)",
                        choices=DUPLEX),
    "reverse_bandwidth": FieldSpec("bandwidth", help="to -> from bytes/s of a duplex link (default: bandwidth)"),
    "request_size": FieldSpec("bytes", help="storage reads over this link use requests of this size"),
}

POWER_FIELDS: dict[str, FieldSpec] = {
    "idle_watts": FieldSpec("power", True, positive=False, help="watts drawn while idle"),
    "active_watts": FieldSpec("power", True, help="watts drawn while busy (datasheet TDP)"),
}
JOULES_PER_BYTE = FieldSpec("energy_per_byte", positive=False, help="energy per byte moved on the link")

OVERLAP_MODES = ("layer", "expert")
STORAGE_READS = ("direct", "buffered")
HOST_MEMORY = ("pinned", "pageable")
TOP_TEXT: dict[str, tuple[str, ...]] = {  # top-level words and their choices (empty: free text)
    "host_memory": HOST_MEMORY,
    "framework": (),
    "overlap": OVERLAP_MODES,
    "storage_reads": STORAGE_READS,
    "expert_processor": (),
}
TOP_LEVEL = ("name", "description", "provenance", *TOP_TEXT, "memories", "processors", "links", "power")

# The SI unit each kind is shown in by `profiles show`.
SI_UNITS = {
    "bytes": "B",
    "bandwidth": "B/s",
    "time": "s",
    "flops": "FLOP/s",
    "power": "W",
    "energy_per_byte": "J/B",
    COUNT: "count",
}

def translate_path(path: str, device: str) -> str:
    """A pre-graph path in the graph schema ("tiers.ssd.queue_depth" keeps its meaning as memories.ssd.queue_depth)."""
    return legacy_translate(path, device)


def field_spec(path: str) -> FieldSpec | None:
    """The spec of a dotted value path ("links.h2d.bandwidth"), or None if there is no such value.

    Pre-graph paths ("tiers.vram.capacity", "compute.peak_flops") have the spec of their translation.
    """
    parts = translate_path(path, "gpu").split(".")
    if len(parts) == 3 and parts[0] == "memories":
        return MEMORY_FIELDS.get(parts[2])
    if len(parts) == 3 and parts[0] == "processors":
        return PROCESSOR_FIELDS.get(parts[2])
    if len(parts) == 4 and parts[0] == "processors" and parts[2] == "peak_flops" and parts[3] in DTYPES:
        return PEAK_FLOPS
    if len(parts) == 3 and parts[0] == "links":
        return LINK_FIELDS.get(parts[2])
    if len(parts) == 2 and parts[0] == "power":
        return POWER_FIELDS.get(parts[1])
    if len(parts) == 3 and parts[:2] == ["power", "joules_per_byte"]:
        return JOULES_PER_BYTE
    return None


def value_paths(memories: tuple[str, ...] = ("vram", "dram", "ssd"), processors: tuple[str, ...] = ("gpu", "cpu"),
                links: tuple[str, ...] = ("h2d", "d2h")) -> list[str]:
    """Dotted paths a profile value can live at (the override vocabulary), for these names."""
    paths = [f"memories.{m}.{f}" for m in memories for f in MEMORY_FIELDS]
    paths += [f"processors.{p}.{f}" for p in processors for f in PROCESSOR_FIELDS]
    paths += [f"processors.{p}.peak_flops.{d}" for p in processors for d in DTYPES]
    paths += [f"links.{link}.{f}" for link in links for f in LINK_FIELDS]
    paths += [f"power.{f}" for f in POWER_FIELDS]
    paths += [f"power.joules_per_byte.{link}" for link in links]
    return paths
