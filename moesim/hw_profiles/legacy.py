"""Pre-graph profile files (`compute`, `tiers`, links named h2d/d2h/ssd_h/ssd_d/c2c) in the graph schema.

The conversion is mechanical and keeps every provenance: `compute` becomes processor "gpu" (reading
"vram") and, where cpu_flops and cpu_memory_bandwidth are both given, processor "cpu"; tiers become
memories of kind hbm/dram/ssd; each link gets the ends its name implied. One meaning changes on
purpose: `copy_engines` used to give every engine the link's full bandwidth; engines now share it
(docs/metrics.md, "Tiers and routes"). A storage tier's read_bandwidth + queue_depth keep their old
meaning (each of queue_depth reads gets read_bandwidth / queue_depth).
"""

from __future__ import annotations

import copy
from typing import Any

from moesim.hw_profiles.profile import LEGACY_LINK_ENDS

MIGRATE_HINT = ("pre-graph profile schema (compute/tiers); it was converted on load: see README "
                "'Adding a profile' to write memories/processors/links")
MEMORY_KIND = {"vram": "hbm", "dram": "dram", "ssd": "ssd"}


def is_legacy(doc: dict[str, Any]) -> bool:
    return "compute" in doc or "tiers" in doc


def convert(doc: dict[str, Any]) -> dict[str, Any]:
    """The graph-schema document of a pre-graph one (unknown keys are left for the loader to reject)."""
    old = copy.deepcopy(doc)
    new: dict[str, Any] = {k: old.pop(k) for k in ("name", "description", "provenance", "host_memory") if k in old}
    compute = old.pop("compute", None)
    tiers = old.pop("tiers", None)
    links = old.pop("links", None)
    power = old.pop("power", None)
    if isinstance(tiers, dict):
        memories = {}
        for name, section in tiers.items():
            memories[name] = dict(section, kind=MEMORY_KIND.get(name, name)) if isinstance(section, dict) else section
        new["memories"] = memories
    elif tiers is not None:
        new["memories"] = tiers
    if isinstance(compute, dict):
        new["processors"] = _processors(compute, tiers if isinstance(tiers, dict) else {})
    elif compute is not None:
        new["processors"] = compute
    if isinstance(links, dict):
        converted = {}
        for name, section in links.items():
            if isinstance(section, dict) and name in LEGACY_LINK_ENDS:
                src, dst = LEGACY_LINK_ENDS[name]
                section = {"from": src, "to": dst, **section}
            converted[name] = section
        new["links"] = converted
    elif links is not None:
        new["links"] = links
    if power is not None:
        new["power"] = power
    new.update(old)  # anything else: the loader names it as unknown
    return new


def _processors(compute: dict[str, Any], tiers: dict[str, Any]) -> dict[str, Any]:
    section_prov = compute.get("provenance")
    gpu: dict[str, Any] = {"kind": "gpu", "memory": "vram"}
    if section_prov:
        gpu["provenance"] = section_prov
    if "peak_flops" in compute:
        gpu["peak_flops"] = {"bf16": compute["peak_flops"]}
    for old, new in (("memory_bandwidth", "memory_bandwidth"), ("launch_overhead", "kernel_overhead")):
        if old in compute:
            gpu[new] = compute[old]
    out = {"gpu": gpu}
    if "cpu_flops" in compute and "cpu_memory_bandwidth" in compute:
        cpu: dict[str, Any] = {"kind": "cpu", "memory": "dram" if "dram" in tiers else "vram",
                               "peak_flops": {"fp32": compute["cpu_flops"]},
                               "memory_bandwidth": compute["cpu_memory_bandwidth"],
                               "kernel_overhead": {"value": "0 s", "provenance": "pre-graph profile: none was given"}}
        if section_prov:
            cpu["provenance"] = section_prov
        out["cpu"] = cpu
    unknown = set(compute) - {"provenance", "peak_flops", "memory_bandwidth", "launch_overhead", "cpu_flops",
                              "cpu_memory_bandwidth"}
    for key in unknown:
        gpu[key] = compute[key]  # rejected by the loader with its path
    return out
