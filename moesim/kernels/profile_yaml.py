"""Write a measured hardware profile as YAML: every value with its unit and its provenance.

The document is the profile writer's (moesim/hw_profiles/document.py, units from its schema) with the
measured values written over it. The YAML form is the one the profile loader reads: a value is
`{value: "53 GB/s", provenance: "..."}`; counts (copy engines, queue depth) carry a plain integer
value. Measured values get a provenance naming the date, GPU, driver, torch/triton versions,
clocks, the tool and the statistics; every other value is copied from a base profile with its
original provenance, so a calibrated profile is complete and says which figures are whose.
No torch import: tested on CPU with synthetic measurements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable

import yaml

from moesim.hw_profiles.document import profile_to_document
from moesim.hw_profiles.profile import LEGACY_LINK_ENDS, HardwareProfile
from moesim.hw_profiles.schema import translate_path
from moesim.units import format_quantity


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


def calibrated_document(base: HardwareProfile, measured: Iterable[Measured], env: CalibrationEnv, name: str,
                        description: str | None = None) -> dict[str, Any]:
    """The base profile's document with measured values (and their provenance) written over it."""
    doc = profile_to_document(base)
    doc["name"] = name
    doc["description"] = description or (
        f"{env.gpu} measured by moesim calibrate on {env.date}; values not measured are copied from "
        f"profile {base.name} with their original provenance")
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
