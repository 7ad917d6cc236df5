"""A HardwareProfile back to its graph-schema document: for overrides, `save_profile` and `profiles show`."""

from __future__ import annotations

from typing import Any

import yaml

from moesim.hw_profiles.profile import HardwareProfile
from moesim.hw_profiles.schema import (
    COUNT,
    JOULES_PER_BYTE,
    LINK_FIELDS,
    MEMORY_FIELDS,
    PEAK_FLOPS,
    POWER_FIELDS,
    PROCESSOR_FIELDS,
    SI_UNITS,
    TEXT,
    TOP_TEXT,
    FieldSpec,
)
from moesim.units import format_quantity

_LINK_ATTR = {k: {"from": "src", "to": "dst"}.get(k, k) for k in LINK_FIELDS}


def _entries(profile: HardwareProfile) -> list[tuple[str, FieldSpec, Any]]:
    """(path, spec, value) of every value the profile holds, in schema order (SI units; words as text)."""
    entries: list[tuple[str, FieldSpec, Any]] = []
    for name, mem in profile.tiers.items():
        for key, spec in MEMORY_FIELDS.items():
            entries.append((f"memories.{name}.{key}", spec, getattr(mem, key)))
    for name, proc in profile.processors.items():
        for key, spec in PROCESSOR_FIELDS.items():
            if key == "memory_bandwidth":
                for dtype, flops in proc.peak_flops.items():
                    entries.append((f"processors.{name}.peak_flops.{dtype}", PEAK_FLOPS, flops))
            entries.append((f"processors.{name}.{key}", spec, getattr(proc, key)))
    for name, link in profile.links.items():
        for key, spec in LINK_FIELDS.items():
            entries.append((f"links.{name}.{key}", spec, getattr(link, _LINK_ATTR[key])))
    for key, spec in POWER_FIELDS.items():
        entries.append((f"power.{key}", spec, getattr(profile.power, key)))
    for link_name, joules in profile.power.joules_per_byte.items():
        entries.append((f"power.joules_per_byte.{link_name}", JOULES_PER_BYTE, joules))
    present = []
    for path, spec, value in entries:
        if value is None:
            continue
        if spec.kind == TEXT:
            if path.endswith(".duplex") and value == "simplex":
                continue
            present.append((path, spec, value))
            continue
        if path.endswith(".read_lanes") and path not in profile.provenance:
            mem = profile.tiers[path.split(".")[1]]
            if mem.queue_depth == value:
                continue  # derived from queue_depth
        stated = path in profile.provenance or spec.kind == COUNT
        if not stated or (path.endswith(".copy_engines") and value == 1 and path not in profile.provenance):
            continue  # a default the file did not state (reserved 0, one copy engine)
        present.append((path, spec, value))
    return present


def _fallback_provenance(profile: HardwareProfile, path: str) -> str:
    return profile.provenance.get(path) or f"given in code for profile {profile.name} (no provenance recorded)"


def profile_to_document(profile: HardwareProfile) -> dict[str, Any]:
    """The profile as a YAML-ready graph-schema mapping that loads back to an equal profile."""
    doc: dict[str, Any] = {"name": profile.name, "description": profile.description}
    for key in TOP_TEXT:
        value = getattr(profile, key)
        if value is not None:
            doc[key] = value
    doc.update({"memories": {n: {} for n in profile.tiers}, "processors": {n: {} for n in profile.processors}})
    if profile.links:
        doc["links"] = {name: {} for name in profile.links}
    doc["power"] = {}
    for path, spec, value in _entries(profile):
        node, key = _slot(doc, path)
        if spec.kind == TEXT:
            node[key] = value
            continue
        provenance = _fallback_provenance(profile, path) if spec.kind != COUNT else profile.provenance.get(path)
        shown = value if spec.kind == COUNT else format_quantity(value, spec.kind)
        node[key] = {"value": shown, "provenance": provenance} if provenance else shown
    for name, mem in profile.tiers.items():
        if mem.throughput is not None and mem.read_bandwidth is None:
            doc["memories"][name]["throughput"] = {
                "provenance": _fallback_provenance(profile, f"memories.{name}.throughput"),
                "points": [[format_quantity(p.request_size, "bytes"), p.queue_depth, format_quantity(p.bandwidth, "bandwidth")]
                           for p in mem.throughput.points]}
    return doc


def profile_to_yaml(profile: HardwareProfile) -> str:
    return yaml.safe_dump(profile_to_document(profile), sort_keys=False, allow_unicode=True, width=120)


def profile_values(profile: HardwareProfile) -> dict[str, Any]:
    """Every value in SI base units with its unit and provenance (what `profiles show --json` prints)."""
    out: dict[str, Any] = {"name": profile.name, "description": profile.description}
    for key in TOP_TEXT:
        out[key] = getattr(profile, key)
    for path, spec, value in _entries(profile):
        node, key = _slot(out, path)
        if spec.kind == TEXT:
            node[key] = value
            continue
        node[key] = {
            "value": value,
            "unit": SI_UNITS[spec.kind],
            "provenance": profile.provenance.get(path, "default"),
        }
    for name, mem in profile.tiers.items():
        out["memories"][name]["usable"] = {"value": mem.usable, "unit": "B", "provenance": "derived: capacity - reserved"}
        if mem.throughput is not None:
            out["memories"][name]["throughput"] = {
                "points": [{"request_size": p.request_size, "queue_depth": p.queue_depth, "bandwidth": p.bandwidth}
                           for p in mem.throughput.points],
                "unit": "B, count, B/s",
                "provenance": profile.provenance.get(f"memories.{name}.throughput",
                                                     f"memories.{name}.read_bandwidth / queue_depth")}
    return out


def _slot(root: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The mapping a dotted path's last key lives in (made on the way) and that key."""
    *parents, key = path.split(".")
    node = root
    for part in parents:
        node = node.setdefault(part, {})
    return node, key
