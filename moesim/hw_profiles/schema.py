"""What a hardware-profile file may contain: sections, fields, their quantity kinds and limits.

One table drives the loader, the override paths (`links.h2d.bandwidth`), `profiles show` and the
README schema, so a field added here is accepted, overridable and shown everywhere at once.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNT = "count"  # a plain integer (copy engines, queue depth): no unit


@dataclass(frozen=True)
class FieldSpec:
    """One field: `kind` is a moesim.units kind or COUNT; `positive` demands > 0 (else >= 0)."""

    kind: str
    required: bool = False
    positive: bool = True
    help: str = ""


COMPUTE_FIELDS: dict[str, FieldSpec] = {
    "peak_flops": FieldSpec("flops", True, help="dense bf16 FLOP/s of the compute device"),
    "memory_bandwidth": FieldSpec("bandwidth", True, help="bytes/s the device reads its own memory at (achieved)"),
    "launch_overhead": FieldSpec("time", True, positive=False, help="seconds per kernel launch"),
    "cpu_flops": FieldSpec("flops", help="host CPU FLOP/s (execute-on-CPU miss handling)"),
    "cpu_memory_bandwidth": FieldSpec("bandwidth", help="bytes/s the host CPU reads host DRAM at"),
}

TIER_FIELDS: dict[str, FieldSpec] = {
    "capacity": FieldSpec("bytes", True, help="bytes of the memory"),
    "reserved": FieldSpec("bytes", positive=False, help="bytes not available to the expert cache"),
    "bandwidth": FieldSpec("bandwidth", help="bytes/s of the memory (DRAM tiers)"),
    "read_bandwidth": FieldSpec("bandwidth", help="bytes/s of all reads in flight together (SSD)"),
    "latency": FieldSpec("time", positive=False, help="seconds added to every read request (SSD)"),
    "queue_depth": FieldSpec(COUNT, help="reads in flight; each gets read_bandwidth / queue_depth (SSD)"),
}

# Tier names, in order from the compute device outwards, with the fields each one needs.
TIER_REQUIRED: dict[str, tuple[str, ...]] = {
    "vram": ("capacity",),
    "dram": ("capacity",),
    "ssd": ("capacity", "read_bandwidth", "latency", "queue_depth"),
}

LINK_FIELDS: dict[str, FieldSpec] = {
    "bandwidth": FieldSpec(
        "bandwidth", True, help="bytes/s of one copy engine (pinned host memory); SSD links: of all reads together"
    ),
    "latency": FieldSpec("time", True, positive=False, help="seconds added to every copy"),
    "copy_engines": FieldSpec(COUNT, help="copies that run at once, each at `bandwidth`"),
    "pageable_bandwidth": FieldSpec("bandwidth", help="bytes/s from pageable host memory"),
}

# Link name -> (source tier, destination tier). c2c is GH200's NVLink-C2C, Grace to Hopper.
LINK_ENDS: dict[str, tuple[str, str]] = {
    "h2d": ("dram", "vram"),
    "d2h": ("vram", "dram"),
    "ssd_h": ("ssd", "dram"),
    "ssd_d": ("ssd", "vram"),
    "c2c": ("dram", "vram"),
}

POWER_FIELDS: dict[str, FieldSpec] = {
    "idle_watts": FieldSpec("power", True, positive=False, help="watts drawn while idle"),
    "active_watts": FieldSpec("power", True, help="watts drawn while busy (datasheet TDP)"),
}
JOULES_PER_BYTE = FieldSpec("energy_per_byte", positive=False, help="energy per byte moved on the link")

TOP_LEVEL = ("name", "description", "host_memory", "compute", "tiers", "links", "power")
HOST_MEMORY = ("pinned", "pageable")

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


def field_spec(path: str) -> FieldSpec | None:
    """The spec of a dotted value path ("links.h2d.bandwidth"), or None if there is no such value."""
    parts = path.split(".")
    if len(parts) == 2 and parts[0] == "compute":
        return COMPUTE_FIELDS.get(parts[1])
    if len(parts) == 3 and parts[0] == "tiers" and parts[1] in TIER_REQUIRED:
        return TIER_FIELDS.get(parts[2])
    if len(parts) == 3 and parts[0] == "links" and parts[1] in LINK_ENDS:
        return LINK_FIELDS.get(parts[2])
    if len(parts) == 2 and parts[0] == "power":
        return POWER_FIELDS.get(parts[1])
    if len(parts) == 3 and parts[:2] == ["power", "joules_per_byte"] and parts[2] in LINK_ENDS:
        return JOULES_PER_BYTE
    return None


def value_paths() -> list[str]:
    """Every dotted path a profile value can live at (the override vocabulary)."""
    paths = [f"compute.{f}" for f in COMPUTE_FIELDS]
    paths += [f"tiers.{t}.{f}" for t in TIER_REQUIRED for f in TIER_FIELDS]
    paths += [f"links.{link}.{f}" for link in LINK_ENDS for f in LINK_FIELDS]
    paths += [f"power.{f}" for f in POWER_FIELDS]
    paths += [f"power.joules_per_byte.{link}" for link in LINK_ENDS]
    return paths
