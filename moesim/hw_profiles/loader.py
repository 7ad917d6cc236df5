"""Hardware profiles from YAML: validation, the shipped catalog, overrides and writing back.

Every dimensioned value carries a unit and a provenance, either inline
(`bandwidth: {value: 53 GB/s, provenance: "measured ..."}`) or as a bare string (`bandwidth: 53 GB/s`)
that takes the `provenance:` of its section (or of the file). A bare number, a unit of the wrong
kind, a zero bandwidth or capacity, or a value without any provenance is a UserError naming the
file and the field. Overrides ("links.h2d.bandwidth=32GB/s") go through the same validation, and
the overridden value's provenance becomes "override: <value>".
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from moesim.atomic_io import write_text_atomic
from moesim.config_fields import Section
from moesim.errors import UserError
from moesim.hw_profiles.profile import Compute, HardwareProfile, Link, Power, Tier
from moesim.hw_profiles.schema import (
    COMPUTE_FIELDS,
    COUNT,
    HOST_MEMORY,
    JOULES_PER_BYTE,
    LINK_ENDS,
    LINK_FIELDS,
    POWER_FIELDS,
    SI_UNITS,
    TIER_FIELDS,
    TIER_REQUIRED,
    FieldSpec,
    field_spec,
    value_paths,
)
from moesim.units import format_bytes, format_quantity, parse_quantity_full
from moesim.yaml_io import read_yaml_mapping

PROFILES_DIR = Path(__file__).resolve().parent / "data"
TEXT_FIELDS = ("name", "description", "host_memory")


# --- the catalog -----------------------------------------------------------------------------


def list_profiles() -> list[str]:
    """Names of the profiles shipped with moesim, sorted."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(name: str) -> Path:
    path = PROFILES_DIR / f"{name.strip().lower()}.yaml"
    if path.is_file():
        return path
    raise UserError(f"unknown hardware profile {name!r}; known: {', '.join(list_profiles())} (or give a path to a YAML file)")


def load_profile(name_or_path: str, overrides: Sequence[str] = ()) -> HardwareProfile:
    """A profile by catalog name ("h100-sxm") or YAML path, with "path=value" overrides applied."""
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix in (".yaml", ".yml") or candidate.is_file() else profile_path(name_or_path)
    profile = profile_from_yaml(path)
    return apply_overrides(profile, overrides) if overrides else profile


def profile_from_yaml(path: str | Path) -> HardwareProfile:
    """Read and validate one profile file (what `moesim profiles validate` runs)."""
    return profile_from_mapping(read_yaml_mapping(path), str(path))


# --- validation ------------------------------------------------------------------------------


class _Values:
    """Collects parsed values' provenance while a document is read."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.provenance: dict[str, str] = {}

    def read(self, section: Section, key: str, spec: FieldSpec, default_provenance: str | None) -> Any:
        if not section.has(key):
            section.raw(key, required=spec.required)  # raises "missing field" when required
            return None
        raw = section.raw(key)
        path = section.field_path(key)
        provenance = default_provenance
        if isinstance(raw, dict):
            inline = Section(raw, self.where, path)
            raw = inline.raw("value")
            provenance = _provenance_text(inline, "provenance", required=spec.kind != COUNT)
            inline.finish()
        if spec.kind == COUNT:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise section.error(key, f"expected a plain integer count, got {raw!r}")
            if raw < 1:
                raise section.error(key, f"must be at least 1, got {raw}")
            if provenance:
                self.provenance[path] = provenance
            return raw
        quantity = parse_quantity_full(raw, spec.kind, f"{self.where}: {path}")
        if spec.positive and quantity.value <= 0:
            raise section.error(key, f"must be positive, got {quantity.text!r}")
        if not provenance:
            raise section.error(
                key, "missing provenance: write {value: ..., provenance: \"...\"} or give the section a provenance"
            )
        self.provenance[path] = provenance
        return quantity.value

    def read_all(self, section: Section, fields: dict[str, FieldSpec], default_provenance: str | None) -> dict[str, Any]:
        return {key: self.read(section, key, spec, default_provenance) for key, spec in fields.items()}


def _provenance_text(section: Section, key: str, required: bool) -> str | None:
    if not section.has(key):
        if required:
            raise section.error(key, "missing field: say where the figure comes from (datasheet URL, measurement, assumption)")
        section.raw(key, required=False)
        return None
    text = section.string(key)
    if not text.strip():
        raise section.error(key, "is empty: say where the figure comes from (datasheet URL, measurement, assumption)")
    return text.strip()


def _section_provenance(section: Section, inherited: str | None) -> str | None:
    own = _provenance_text(section, "provenance", required=False)
    return own or inherited


def profile_from_mapping(data: dict[str, Any], where: str, source_file: str | None = None) -> HardwareProfile:
    """Validate a parsed profile document; every error names `where` and the dotted field."""
    doc = Section(data, where)
    values = _Values(where)
    name = doc.string("name")
    if not name.strip():
        raise doc.error("name", "is empty")
    description = doc.string("description")
    host_memory = doc.string("host_memory", required=False, default="pinned", choices=HOST_MEMORY)
    file_provenance = _section_provenance(doc, None)

    compute_section = doc.section("compute")
    assert compute_section is not None
    compute = Compute(**values.read_all(compute_section, COMPUTE_FIELDS, _section_provenance(compute_section, file_provenance)))
    compute_section.finish()

    tiers = _read_tiers(doc, values, file_provenance)
    links = _read_links(doc, values, file_provenance, tiers)

    power_section = doc.section("power")
    assert power_section is not None
    power_provenance = _section_provenance(power_section, file_provenance)
    watts = values.read_all(power_section, POWER_FIELDS, power_provenance)
    if watts["active_watts"] < watts["idle_watts"]:
        raise power_section.error("active_watts", "is below idle_watts")
    joules: dict[str, float] = {}
    jpb_section = power_section.section("joules_per_byte", required=False)
    if jpb_section is not None:
        jpb_provenance = _section_provenance(jpb_section, power_provenance)
        for link_name in list(jpb_section.data):
            if link_name == "provenance":
                continue
            if link_name not in links:
                raise jpb_section.error(link_name, f"no such link in this profile (links: {', '.join(links) or 'none'})")
            joules[link_name] = values.read(jpb_section, link_name, JOULES_PER_BYTE, jpb_provenance)
        jpb_section.finish()
    power_section.finish()
    doc.finish()

    return HardwareProfile(
        name=name,
        description=description,
        compute=compute,
        tiers=tiers,
        links=links,
        power=Power(joules_per_byte=joules, **watts),
        host_memory=host_memory,
        provenance=values.provenance,
        source_file=source_file or where,
    )


def _read_tiers(doc: Section, values: _Values, file_provenance: str | None) -> dict[str, Tier]:
    section = doc.section("tiers")
    assert section is not None
    tiers: dict[str, Tier] = {}
    for name in list(section.data):
        if name not in TIER_REQUIRED:
            raise section.error(name, f"unknown tier (known: {', '.join(TIER_REQUIRED)})")
        tier_section = section.section(name)
        assert tier_section is not None
        fields = {k: FieldSpec(s.kind, k in TIER_REQUIRED[name], s.positive, s.help) for k, s in TIER_FIELDS.items()}
        read = values.read_all(tier_section, fields, _section_provenance(tier_section, file_provenance))
        tier_section.finish()
        reserved = read.pop("reserved") or 0.0
        if reserved > read["capacity"]:
            raise tier_section.error(
                "reserved", f"{format_bytes(reserved)} is more than the capacity {format_bytes(read['capacity'])}"
            )
        tiers[name] = Tier(name=name, reserved=reserved, **read)
    if "vram" not in tiers:
        raise section.error("vram", "missing field: every profile needs the cache tier the compute device reads")
    section.finish()
    return tiers


def _read_links(doc: Section, values: _Values, file_provenance: str | None, tiers: dict[str, Tier]) -> dict[str, Link]:
    section = doc.section("links", required=False)
    links: dict[str, Link] = {}
    if section is not None:
        for name in list(section.data):
            if name not in LINK_ENDS:
                raise section.error(name, f"unknown link (known: {', '.join(LINK_ENDS)})")
            link_section = section.section(name)
            assert link_section is not None
            read = values.read_all(link_section, LINK_FIELDS, _section_provenance(link_section, file_provenance))
            link_section.finish()
            if read["copy_engines"] is None:
                read["copy_engines"] = 1
            for end in LINK_ENDS[name]:
                if end not in tiers:
                    source, target = LINK_ENDS[name]
                    raise section.error(name, f"copies {source} -> {target}, but the profile has no tiers.{end}")
            links[name] = Link(name=name, **read)
        section.finish()
    reaches_cache = {"vram"}
    for source, targets in (("dram", ("h2d", "c2c")), ("ssd", ("ssd_d", "ssd_h"))):
        if source not in tiers:
            continue
        if not any(link in links and LINK_ENDS[link][1] in reaches_cache for link in targets):
            needed = " or ".join(f"links.{link}" for link in targets)
            raise UserError(f"no link reaches the cache tier from this tier: add {needed}", f"{doc.where}: tiers.{source}")
        reaches_cache.add(source)
    return links


# --- overrides -------------------------------------------------------------------------------


def apply_overrides(profile: HardwareProfile, overrides: Sequence[str]) -> HardwareProfile:
    """Apply "path=value" overrides ("links.h2d.bandwidth=32GB/s") together, then validate once.

    Applying them together lets overrides add a whole link or tier (bandwidth and latency at once).
    """
    parsed = []
    for text in overrides:
        path, sep, value = text.partition("=")
        if not sep or not path.strip() or not value.strip():
            raise UserError(f"override {text!r} is not of the form path=value (e.g. links.h2d.bandwidth=32GB/s)")
        parsed.append((path.strip(), value.strip(), None))
    return _apply(profile, parsed)


def set_field(profile: HardwareProfile, path: str, value_text: str, provenance: str | None = None) -> HardwareProfile:
    """`profile` with one value replaced, validated like a file (for what-if sweeps).

    `value_text` is what a file would hold ("32 GB/s"; a plain integer for counts; a word for
    host_memory). The value's provenance becomes `provenance`, by default "override: <value_text>".
    """
    return _apply(profile, [(path, value_text, provenance)])


def _apply(profile: HardwareProfile, changes: Sequence[tuple[str, str, str | None]]) -> HardwareProfile:
    doc = profile_to_document(profile)
    source = profile.source_file or profile.name
    for path, value_text, provenance in changes:
        where = f"{source} with override {path}={value_text}"
        if path in TEXT_FIELDS:
            doc[path] = value_text
            continue
        spec = field_spec(path)
        if spec is None:
            raise UserError(_unknown_path_message(path), where)
        parts = path.split(".")
        node = doc
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        provenance = provenance or f"override: {value_text}"
        if spec.kind == COUNT:
            if not re.fullmatch(r"\s*\d+\s*", value_text):
                raise UserError(f"expected a plain integer count, got {value_text!r}", f"{where}: {path}")
            node[parts[-1]] = {"value": int(value_text), "provenance": provenance}
        else:
            node[parts[-1]] = {"value": value_text, "provenance": provenance}
    label = ", ".join(f"{p}={v}" for p, v, _ in changes)
    return profile_from_mapping(doc, f"{source} with override {label}", source_file=profile.source_file)


def _unknown_path_message(path: str) -> str:
    known = value_paths() + list(TEXT_FIELDS)
    close = difflib.get_close_matches(path, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else " (paths look like links.h2d.bandwidth, tiers.vram.capacity)"
    return f"unknown profile field {path!r}{hint}"


# --- writing back ----------------------------------------------------------------------------


def _entries(profile: HardwareProfile) -> list[tuple[str, FieldSpec, Any]]:
    """(path, spec, SI value) of every value the profile holds, in schema order."""
    entries: list[tuple[str, FieldSpec, Any]] = []
    for key, spec in COMPUTE_FIELDS.items():
        entries.append((f"compute.{key}", spec, getattr(profile.compute, key)))
    for tier_name, tier in profile.tiers.items():
        for key, spec in TIER_FIELDS.items():
            entries.append((f"tiers.{tier_name}.{key}", spec, getattr(tier, key)))
    for link_name, link in profile.links.items():
        for key, spec in LINK_FIELDS.items():
            entries.append((f"links.{link_name}.{key}", spec, getattr(link, key)))
    for key, spec in POWER_FIELDS.items():
        entries.append((f"power.{key}", spec, getattr(profile.power, key)))
    for link_name, joules in profile.power.joules_per_byte.items():
        entries.append((f"power.joules_per_byte.{link_name}", JOULES_PER_BYTE, joules))
    present = []
    for path, spec, value in entries:
        if value is None:
            continue
        stated = path in profile.provenance or spec.kind == COUNT
        if not stated or (path.endswith(".copy_engines") and value == 1 and path not in profile.provenance):
            continue  # a default the file did not state (reserved 0, one copy engine)
        present.append((path, spec, value))
    return present


def profile_to_document(profile: HardwareProfile) -> dict[str, Any]:
    """The profile as a YAML-ready mapping that loads back to an equal profile."""
    doc: dict[str, Any] = {"name": profile.name, "description": profile.description, "host_memory": profile.host_memory}
    doc.update({"compute": {}, "tiers": {name: {} for name in profile.tiers}})
    if profile.links:
        doc["links"] = {name: {} for name in profile.links}
    doc["power"] = {}
    for path, spec, value in _entries(profile):
        parts = path.split(".")
        node = doc
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        provenance = profile.provenance.get(path)
        shown = value if spec.kind == COUNT else format_quantity(value, spec.kind)
        node[parts[-1]] = {"value": shown, "provenance": provenance} if provenance else shown
    return doc


def profile_to_yaml(profile: HardwareProfile) -> str:
    return yaml.safe_dump(profile_to_document(profile), sort_keys=False, allow_unicode=True, width=120)


def save_profile(profile: HardwareProfile, path: str | Path) -> None:
    """Write `profile` as YAML atomically (e.g. a calibrated profile), validated on the way out."""
    text = profile_to_yaml(profile)
    profile_from_mapping(yaml.safe_load(text), str(path))
    write_text_atomic(path, text)


def profile_values(profile: HardwareProfile) -> dict[str, Any]:
    """Every value in SI base units with its unit and provenance (what `profiles show --json` prints)."""
    out: dict[str, Any] = {"name": profile.name, "description": profile.description, "host_memory": profile.host_memory}
    for path, spec, value in _entries(profile):
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = {
            "value": value,
            "unit": SI_UNITS[spec.kind],
            "provenance": profile.provenance.get(path, "default"),
        }
    for tier_name, tier in profile.tiers.items():
        out["tiers"][tier_name]["usable"] = {
            "value": tier.usable,
            "unit": "B",
            "provenance": "derived: capacity - reserved",
        }
    return out
