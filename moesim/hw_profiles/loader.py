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
from moesim.hw_profiles import legacy
from moesim.hw_profiles.document import profile_to_document, profile_to_yaml, profile_values  # noqa: F401 (re-exported)
from moesim.hw_profiles.profile import (
    DTYPES,
    LEGACY_LINK_ENDS,
    HardwareProfile,
    Link,
    Memory,
    Power,
    Processor,
    StorageCurve,
    StoragePoint,
)
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
    LEGACY_PATHS,
    FieldSpec,
    field_spec,
    translate_path,
    value_paths,
)
from moesim.units import format_bytes, format_quantity, parse_quantity_full
from moesim.yaml_io import read_yaml_mapping

PROFILES_DIR = Path(__file__).resolve().parent / "data"
TEXT_FIELDS = ("name", "description", *TOP_TEXT)
TOP_DEFAULTS = {"host_memory": "pinned", "overlap": "layer", "storage_reads": "direct"}


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
        if spec.kind == TEXT:
            if not isinstance(raw, str) or not raw.strip():
                raise section.error(key, f"expected a word, got {raw!r}")
            if spec.choices and raw not in spec.choices:
                raise section.error(key, f"{raw!r} is not one of: {', '.join(spec.choices)}")
            return raw.strip()
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
    """Validate a parsed profile document; every error names `where` and the dotted field.

    A pre-graph document (`compute`, `tiers`) is converted first (moesim.hw_profiles.legacy).
    """
    if isinstance(data, dict) and legacy.is_legacy(data):
        data = legacy.convert(data)
    doc = Section(data, where)
    values = _Values(where)
    name = doc.string("name")
    if not name.strip():
        raise doc.error("name", "is empty")
    description = doc.string("description")
    words = {key: doc.string(key, required=False, default=TOP_DEFAULTS.get(key, ""), choices=choices) or None
             for key, choices in TOP_TEXT.items()}
    file_provenance = _section_provenance(doc, None)

    memories = _read_memories(doc, values, file_provenance)
    processors = _read_processors(doc, values, file_provenance, memories)
    links = _read_links(doc, values, file_provenance, memories)

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
    device = words["expert_processor"]
    if device is not None and device not in processors:
        raise doc.error("expert_processor", f"no processor {device!r} (processors: {', '.join(processors)})")
    doc.finish()

    return HardwareProfile(
        name=name,
        description=description,
        tiers=memories,
        links=links,
        power=Power(joules_per_byte=joules, **watts),
        host_memory=words["host_memory"] or "pinned",
        provenance=values.provenance,
        source_file=source_file or where,
        processors=processors,
        framework=words["framework"],
        overlap=words["overlap"] or "layer",
        expert_processor=device,
        storage_reads=words["storage_reads"] or "direct",
    )


def _read_memories(doc: Section, values: _Values, file_provenance: str | None) -> dict[str, Memory]:
    section = doc.section("memories")
    assert section is not None
    memories: dict[str, Memory] = {}
    for name in list(section.data):
        if name == "provenance":
            continue
        mem_section = section.section(name)
        assert mem_section is not None
        provenance = _section_provenance(mem_section, _section_provenance(section, file_provenance))
        read = values.read_all(mem_section, MEMORY_FIELDS, provenance)
        curve = _read_curve(mem_section, values, provenance)
        mem_section.finish()
        reserved = read.pop("reserved") or 0.0
        if reserved > read["capacity"]:
            raise mem_section.error(
                "reserved", f"{format_bytes(reserved)} is more than the capacity {format_bytes(read['capacity'])}"
            )
        if curve is not None and read["read_bandwidth"] is not None:
            raise mem_section.error("read_bandwidth", "give read_bandwidth or a throughput table, not both")
        if read["queue_depth"] is not None and read["read_bandwidth"] is None:
            raise mem_section.error("queue_depth", "needs read_bandwidth (the throughput it reaches)")
        memories[name] = Memory(name=name, reserved=reserved, throughput=curve, kind=read.pop("kind") or "", **read)
    if not memories:
        raise section.error(None, "no memories: a profile needs at least the memory its processor reads")
    section.finish()
    return memories


def _read_curve(section: Section, values: _Values, provenance: str | None) -> StorageCurve | None:
    """`throughput: {provenance: ..., points: [[request size, queue depth, bandwidth], ...]}`."""
    curve_section = section.section("throughput", required=False)
    if curve_section is None:
        return None
    curve_provenance = _section_provenance(curve_section, provenance)
    raw = curve_section.raw("points")
    curve_section.finish()
    path = curve_section.field_path("points")
    if not isinstance(raw, list) or not raw:
        raise UserError("expected a list of [request size, queue depth, bandwidth] rows", f"{values.where}: {path}")
    points = []
    for i, row in enumerate(raw):
        at = f"{values.where}: {path}[{i}]"
        if not isinstance(row, list) or len(row) != 3:
            raise UserError(f"expected [request size, queue depth, bandwidth], got {row!r}", at)
        size = parse_quantity_full(row[0], "bytes", at).value
        depth = row[1]
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise UserError(f"queue depth must be a plain integer >= 1, got {depth!r}", at)
        bandwidth = parse_quantity_full(row[2], "bandwidth", at).value
        if size <= 0 or bandwidth <= 0:
            raise UserError("request size and bandwidth must be positive", at)
        points.append(StoragePoint(float(size), int(depth), float(bandwidth)))
    seen = {(p.request_size, p.queue_depth) for p in points}
    if len(seen) != len(points):
        raise UserError("two rows have the same request size and queue depth", f"{values.where}: {path}")
    if not curve_provenance:
        raise curve_section.error("provenance", "missing field: say where the throughput table comes from")
    values.provenance[curve_section.path] = curve_provenance
    return StorageCurve(tuple(sorted(points, key=lambda p: (p.request_size, p.queue_depth))))


def _read_processors(doc: Section, values: _Values, file_provenance: str | None,
                     memories: dict[str, Memory]) -> dict[str, Processor]:
    section = doc.section("processors")
    assert section is not None
    processors: dict[str, Processor] = {}
    for name in list(section.data):
        if name == "provenance":
            continue
        proc = section.section(name)
        assert proc is not None
        provenance = _section_provenance(proc, _section_provenance(section, file_provenance))
        read = values.read_all(proc, PROCESSOR_FIELDS, provenance)
        if read["memory"] not in memories:
            raise proc.error("memory", f"no memory {read['memory']!r} (memories: {', '.join(memories)})")
        flops_section = proc.section("peak_flops")
        assert flops_section is not None
        flops_provenance = _section_provenance(flops_section, provenance)
        flops = {}
        for dtype in list(flops_section.data):
            if dtype == "provenance":
                continue
            if dtype not in DTYPES:
                raise flops_section.error(dtype, f"unknown dtype (known: {', '.join(DTYPES)})")
            flops[dtype] = values.read(flops_section, dtype, PEAK_FLOPS, flops_provenance)
        flops_section.finish()
        if not ({"bf16", "fp16", "fp32"} & set(flops)):
            raise proc.error("peak_flops", "needs at least bf16 (or fp16) or fp32")
        proc.finish()
        processors[name] = Processor(name=name, peak_flops=flops, **read)
    if not processors:
        raise section.error(None, "no processors: a profile needs the one that runs experts")
    section.finish()
    return processors


def _read_links(doc: Section, values: _Values, file_provenance: str | None,
                memories: dict[str, Memory]) -> dict[str, Link]:
    section = doc.section("links", required=False)
    links: dict[str, Link] = {}
    if section is None:
        return links
    for name in list(section.data):
        if name == "provenance":
            continue
        link_section = section.section(name)
        assert link_section is not None
        read = values.read_all(link_section, LINK_FIELDS, _section_provenance(link_section, file_provenance))
        link_section.finish()
        for end in ("from", "to"):
            if read[end] not in memories:
                raise link_section.error(end, f"no memory {read[end]!r} (memories: {', '.join(memories)})")
        if read["from"] == read["to"]:
            raise link_section.error("to", "a link joins two different memories")
        src, dst = read.pop("from"), read.pop("to")
        read["copy_engines"] = read["copy_engines"] or 1
        read["duplex"] = read["duplex"] or "simplex"
        links[name] = Link(name=name, src=src, dst=dst, **read)
    section.finish()
    return links


# --- overrides -------------------------------------------------------------------------------


def apply_overrides(profile: HardwareProfile, overrides: Sequence[str]) -> HardwareProfile:
    """Apply "path=value" overrides ("links.h2d.bandwidth=32GB/s") together, then validate once.

    Applying them together lets overrides add a whole link or memory (bandwidth and latency at once).
    Pre-graph paths ("tiers.vram.capacity", "compute.peak_flops") are translated (schema.LEGACY_PATHS).
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
    for given, value_text, provenance in changes:
        where = f"{source} with override {given}={value_text}"
        if given in TEXT_FIELDS:
            doc[given] = value_text
            continue
        path = translate_path(given, str(profile.expert_processor))
        spec = field_spec(path)
        if spec is None:
            raise UserError(_unknown_path_message(given, profile), where)
        parts = path.split(".")
        if parts[0] == "links" and parts[1] not in doc.setdefault("links", {}) and parts[1] in LEGACY_LINK_ENDS:
            doc["links"][parts[1]] = dict(zip(("from", "to"), LEGACY_LINK_ENDS[parts[1]]))  # a named link's ends
        node = doc
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts[0] == "memories" and parts[2] == "read_bandwidth":
            node.pop("throughput", None)  # a flat read bandwidth replaces the measured table
        provenance = provenance or f"override: {value_text}"
        if spec.kind == TEXT:
            node[parts[-1]] = value_text
        elif spec.kind == COUNT:
            if not re.fullmatch(r"\s*\d+\s*", value_text):
                raise UserError(f"expected a plain integer count, got {value_text!r}", f"{where}: {given}")
            node[parts[-1]] = {"value": int(value_text), "provenance": provenance}
        else:
            node[parts[-1]] = {"value": value_text, "provenance": provenance}
    label = ", ".join(f"{p}={v}" for p, v, _ in changes)
    return profile_from_mapping(doc, f"{source} with override {label}", source_file=profile.source_file)


def _unknown_path_message(path: str, profile: HardwareProfile) -> str:
    known = value_paths(tuple(profile.tiers), tuple(profile.processors), tuple(profile.links)) + list(TEXT_FIELDS)
    known += list(LEGACY_PATHS)
    close = difflib.get_close_matches(path, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else " (paths look like links.h2d.bandwidth, memories.vram.capacity)"
    return f"unknown profile field {path!r}{hint}"


# --- writing back (moesim.hw_profiles.document) ---------------------------------------------


def save_profile(profile: HardwareProfile, path: str | Path) -> None:
    """Write `profile` as YAML atomically (e.g. a calibrated profile), validated on the way out."""
    text = profile_to_yaml(profile)
    profile_from_mapping(yaml.safe_load(text), str(path))
    write_text_atomic(path, text)


