"""Write a measured hardware profile as YAML: every value with its unit and its provenance.

The YAML form is the one the profile loader reads (moesim/hw_profiles): a value is
`{value: "53 GB/s", provenance: "..."}`; counts (copy engines, queue depth) carry a plain integer
value. Measured values get a provenance naming the date, GPU, driver, torch/triton versions,
clocks, the tool and the statistics; every other value is copied from a base profile with its
original provenance, so a calibrated profile is complete and says which figures are whose.
No torch import: tested on CPU with synthetic measurements.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from moesim.hw_profiles.profile import LEGACY_LINK_ENDS, Compute, HardwareProfile, Link, Power, Tier

# Unit kind of each profile field (moesim.units kinds, or "count" for plain integers).
FIELD_KINDS: dict[type, dict[str, str]] = {
    Compute: {"peak_flops": "flops", "memory_bandwidth": "bandwidth", "launch_overhead": "time",
              "cpu_flops": "flops", "cpu_memory_bandwidth": "bandwidth"},
    Tier: {"capacity": "bytes", "reserved": "bytes", "bandwidth": "bandwidth", "read_bandwidth": "bandwidth",
           "latency": "time", "queue_depth": "count"},
    Link: {"bandwidth": "bandwidth", "latency": "time", "copy_engines": "count", "pageable_bandwidth": "bandwidth"},
    Power: {"idle_watts": "power", "active_watts": "power"},
}

_PREFIXES = (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0))
_SMALL = (("", 1.0), ("m", 1e-3), ("u", 1e-6), ("n", 1e-9), ("p", 1e-12))


def guess_kind(name: str, value: Any) -> str:
    """Kind of a field this module has no table entry for (a field added to the profile later)."""
    if isinstance(value, bool) or isinstance(value, str):
        return "plain"
    if isinstance(value, int) and not isinstance(value, bool) and ("engines" in name or "depth" in name
                                                                   or name.startswith("n_")):
        return "count"
    for needle, kind in (("bandwidth", "bandwidth"), ("flops", "flops"), ("latency", "time"),
                         ("overhead", "time"), ("joules_per_byte", "energy_per_byte"), ("watts", "power"),
                         ("capacity", "bytes"), ("bytes", "bytes"), ("reserved", "bytes")):
        if needle in name:
            return kind
    return "plain"


def _mantissa(value: float, scales: Iterable[tuple[str, float]]) -> tuple[float, str]:
    for prefix, scale in scales:
        if abs(value) >= scale:
            return value / scale, prefix
    prefix, scale = list(scales)[-1]
    return value / scale, prefix


def _num(x: float, digits: int) -> str:
    text = f"{x:.{digits}g}"
    return text if "e" not in text else repr(float(text))


def format_quantity(value: float, kind: str, digits: int = 12) -> str:
    """SI value -> text with a unit moesim.units parses back to the same number (to `digits` digits)."""
    if not math.isfinite(value):
        raise ValueError(f"cannot write a non-finite {kind}: {value}")
    if kind == "bytes":
        if float(value).is_integer():
            n = int(value)
            for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
                if n and n % scale == 0:
                    return f"{n // scale} {unit}"
            for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
                if n and n % scale == 0:
                    return f"{n // scale} {unit}"
            return f"{n} B"
        return f"{_num(value, digits)} B"
    if kind == "bandwidth":
        m, p = _mantissa(value, _PREFIXES)
        return f"{_num(m, digits)} {p}B/s"
    if kind == "flops":
        m, p = _mantissa(value, _PREFIXES)
        return f"{_num(m, digits)} {p}FLOP/s"
    if kind == "time":
        m, p = _mantissa(value, _SMALL[:4])
        return f"{_num(m, digits)} {p}s"
    if kind == "power":
        m, p = _mantissa(value, (("k", 1e3), ("", 1.0), ("m", 1e-3)))
        return f"{_num(m, digits)} {p}W"
    if kind == "energy":
        m, p = _mantissa(value, (("k", 1e3), ("", 1.0), ("m", 1e-3), ("u", 1e-6)))
        return f"{_num(m, digits)} {p}J"
    if kind == "energy_per_byte":
        m, p = _mantissa(value, _SMALL)
        return f"{_num(m, digits)} {p}J/B"
    raise ValueError(f"no unit for kind {kind!r}")


@dataclass(frozen=True)
class CalibrationEnv:
    """Where and how a calibration ran: goes into every measured value's provenance."""

    date: str
    gpu: str
    driver: str | None = None
    torch: str | None = None
    cuda: str | None = None
    triton: str | None = None
    clocks: str | None = None  # e.g. "SM 1980 MHz mem 2619 MHz (max under load)"
    pcie: str | None = None  # e.g. "gen 5 x16 (max gen 5 x16)"
    host_cpu: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def provenance(self, detail: str) -> str:
        parts = [f"measured {self.date}", self.gpu, f"driver {self.driver or '?'}", f"torch {self.torch or '?'}",
                 f"triton {self.triton or '?'}", f"clocks {self.clocks or '?'}", f"tool moesim calibrate {detail}"]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Measured:
    """One measured profile value: dotted path, SI value, unit kind, and how it was obtained."""

    path: str  # e.g. "links.h2d.bandwidth"
    value: float
    kind: str
    detail: str  # e.g. "n=5 median 52.9 GB/s p10/p90 52.1/53.3 GB/s; fit over 19 sizes"


def _entry(value: Any, kind: str, provenance: str) -> dict[str, Any]:
    if kind == "count":
        shown: Any = int(value)
    elif kind == "plain":
        shown = value
    else:
        shown = format_quantity(float(value), kind)
    return {"value": shown, "provenance": provenance}


def _section(obj: Any, prefix: str, profile: HardwareProfile, skip: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    """A dataclass section: every set field with a provenance, or required, or differing from its default."""
    kinds = FIELD_KINDS.get(type(obj), {})
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        if value is None or isinstance(value, dict):
            continue
        path = f"{prefix}.{f.name}"
        prov = profile.provenance.get(path)
        if prov is None:
            if f.default is not dataclasses.MISSING and value == f.default:
                continue  # a default the base file did not write: leave it to the loader's default
            prov = f"copied from base profile {profile.name} (no provenance recorded there)"
        out[f.name] = _entry(value, kinds.get(f.name) or guess_kind(f.name, value), prov)
    return out


def profile_document(profile: HardwareProfile) -> dict[str, Any]:
    """The YAML mapping of a profile in the graph schema, values with units and their provenance."""
    from moesim.hw_profiles.document import profile_to_document

    return profile_to_document(profile)


def calibrated_document(base: HardwareProfile, measured: Iterable[Measured], env: CalibrationEnv, name: str,
                        description: str | None = None) -> dict[str, Any]:
    """The base profile's document with measured values (and their provenance) written over it."""
    doc = profile_document(base)
    doc["name"] = name
    doc["description"] = description or (
        f"{env.gpu} measured by moesim calibrate on {env.date}; values not measured are copied from "
        f"profile {base.name} with their original provenance")
    from moesim.hw_profiles.schema import translate_path

    for m in measured:
        keys = translate_path(m.path, str(base.expert_processor)).split(".")
        if keys[0] == "links" and keys[1] not in doc.setdefault("links", {}) and keys[1] in LEGACY_LINK_ENDS:
            doc["links"][keys[1]] = dict(zip(("from", "to"), LEGACY_LINK_ENDS[keys[1]]))  # e.g. a measured d2h
        node = doc
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _entry(m.value, m.kind, env.provenance(m.detail))
    return doc


def render_yaml(doc: dict[str, Any], header: str = "") -> str:
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10_000, default_flow_style=False)
    lines = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    return lines + body
