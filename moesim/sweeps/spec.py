"""The sweep spec: a YAML file (or a dict) naming the axes of a grid of runs (README "Sweeps").

    name: olmoe-vs-qwen            # optional, shown in reports
    imports: [mylab.policies]      # optional: modules to import first (your own registered policies)
    traces:                        # name: source
      qwen: bundled:qwen                                   # a trace file or bundled trace
      synth: {synthetic: {preset: olmoe, n_requests: 8}}   # moesim.traces.synth.synthetic settings
      mine: {factory: "mylab.traces:make", args: {seed: 1}}  # a function returning a Trace
    profiles: [none, rtx4090, {name: rtx4090, set: {links.h2d.bandwidth: 16 GB/s}}]
    eviction: [lru, least-stale, belady]
    prefetch: [none]               # timed runs only
    miss: [stall]                  # timed runs only
    capacities: ["1%", "5%", 4000MiB]
    scope: [global]                # global | layer
    replay: [event]                # event | sequential (count runs)
    seeds: [0]
    tables: {passes: false, timeline_passes: 0}

Every axis takes one value or a list; the runs are their cross product. Profile `none` means a
count-only run (no timing); any other profile makes a timed run, which needs the timing engine.
Mistakes are UserErrors naming the spec file and the key.

A spec file is data (README "Safety"): it is read by the strict YAML loader (moesim.yaml_io: no
duplicate keys, no Python tags, aliases within a small budget), and the two keys that run code,
`imports` and a trace's `factory`, are refused unless the user passes --allow-code
(`load_spec(path, allow_code=True)`). A relative trace file resolves against the spec's folder.
A mapping built in Python (`parse_spec`) is code already and may name both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from moesim.errors import UserError
from moesim.units import check_seed
from moesim.sim.requests import MODES
from moesim.sweeps.run_config import DEFAULT_MISS, DEFAULT_PREFETCH, canonical_policy
from moesim.traces.format.trace import Trace

SCOPES = ("global", "layer")
KEYS = ("name", "imports", "traces", "profiles", "eviction", "prefetch", "miss", "capacities", "scope", "replay",
        "seeds", "tables")
NO_PROFILE = ("none", "", None)


@dataclass(frozen=True)
class TraceSource:
    """Where a trace comes from: a file ("file"), generator settings ("synthetic"), a Python
    function ("factory") or, from the Python API only, a Trace object ("object")."""

    name: str
    kind: str
    ref: Any
    args: tuple[tuple[str, Any], ...] = ()

    def load(self, where: str) -> Trace:
        from moesim.sweeps import bindings

        if self.kind == "object":
            return self.ref
        try:
            if self.kind == "file":
                return bindings.load_trace_file(self.ref, where)
            if self.kind == "synthetic":
                return bindings.synthetic_trace(dict(self.args), where)
            return bindings.factory_trace(self.ref, dict(self.args), where)
        except UserError as exc:  # name the spec file and key, whatever the loader named
            raise (exc if (exc.where or "").startswith(where) else exc.located(where)) from None


@dataclass(frozen=True)
class ProfileChoice:
    """A hardware profile by name with fields set on it, or none (a count-only run)."""

    name: str = ""
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def timed(self) -> bool:
        return bool(self.name)

    def label(self) -> str:
        if not self.name:
            return "none"
        return self.name + "".join(f" {p}={v}" for p, v in self.settings)


@dataclass(frozen=True)
class SweepSpec:
    traces: tuple[TraceSource, ...]
    eviction: tuple[str, ...]
    capacities: tuple[str, ...]
    profiles: tuple[ProfileChoice, ...] = (ProfileChoice(),)
    prefetch: tuple[str, ...] = (DEFAULT_PREFETCH,)
    miss: tuple[str, ...] = (DEFAULT_MISS,)
    scopes: tuple[str, ...] = ("global",)
    modes: tuple[str, ...] = ("event",)
    seeds: tuple[int, ...] = (0,)
    pass_table: bool = False
    timeline_passes: int = 0
    imports: tuple[str, ...] = ()
    name: str = ""
    source: str = "sweep spec"


def load_spec(path: str | Path, allow_code: bool = False) -> SweepSpec:
    """Read and check a YAML sweep spec; `allow_code` lets it name `imports` and trace factories."""
    from moesim.yaml_io import read_yaml_mapping

    path = Path(path)
    if path.is_dir():
        raise UserError("is a folder; give the sweep spec's YAML file", str(path))
    data = read_yaml_mapping(path)
    return parse_spec(data, str(path), allow_code=allow_code, base_dir=path.parent)


CODE_KEYS_HINT = "a sweep spec is data; to let it run code (imports, trace factories) pass --allow-code"


def _list(data: Mapping[str, Any], key: str, default: Sequence[Any], where: str) -> list[Any]:
    value = data.get(key, None)
    if value is None:
        return list(default)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise UserError("is an empty list", f"{where}: {key}")
    return values


def _text_list(data: Mapping[str, Any], key: str, default: Sequence[str], where: str) -> list[str]:
    values = _list(data, key, default, where)
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise UserError(f"expected names (text), got {v!r}", f"{where}: {key}")
    return [v.strip() for v in values]


def parse_spec(data: Any, where: str = "sweep spec", allow_code: bool = True,
               base_dir: Path | None = None) -> SweepSpec:
    """Check a spec mapping and resolve its policy names; UserError naming `where` and the key.

    `allow_code=False` refuses `imports` and trace factories (a spec read from a file);
    `base_dir` is the folder relative trace files resolve against (the spec file's)."""
    if not isinstance(data, Mapping):
        raise UserError("a sweep spec must be a mapping of axis names to values", where)
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise UserError(f"unknown key {_show(unknown[0])}; known: {', '.join(KEYS)}", where)
    imports = _text_list(data, "imports", [], where)
    if imports and not allow_code:
        raise UserError(f"names modules to import ({_show(imports[0])}); {CODE_KEYS_HINT}", f"{where}: imports")
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"cannot import {module!r}: {exc}", f"{where}: imports") from None
    if "traces" not in data:
        raise UserError("names no traces (key 'traces')", where)
    traces = _traces(data["traces"], f"{where}: traces", allow_code, base_dir)
    if "eviction" not in data:
        raise UserError("names no eviction policies (key 'eviction')", where)
    eviction = [_policy(p, "eviction", where) for p in _text_list(data, "eviction", [], where)]
    prefetch = [_policy(p, "prefetch", where) for p in _text_list(data, "prefetch", [DEFAULT_PREFETCH], where)]
    miss = [_policy(p, "miss", where) for p in _text_list(data, "miss", [DEFAULT_MISS], where)]
    if "capacities" not in data:
        raise UserError("names no capacities (key 'capacities')", where)
    capacities = []
    for c in _list(data, "capacities", [], where):
        if isinstance(c, bool) or not isinstance(c, str) or not c.strip():
            raise UserError(f"capacity {c!r} needs a unit or %, e.g. '5%' or '4000MiB'", f"{where}: capacities")
        capacities.append(c.strip())
    scopes = _choices(data, "scope", SCOPES, where)
    modes = _choices(data, "replay", MODES, where)
    seeds = []
    for s in _list(data, "seeds", [0], where):
        if isinstance(s, bool) or not isinstance(s, int):
            raise UserError(f"seeds must be integers, got {_show(s)}", f"{where}: seeds")
        seeds.append(check_seed(s, f"{where}: seeds"))
    profiles = [_profile(p, f"{where}: profiles") for p in _list(data, "profiles", [None], where)]
    pass_table, timeline_passes = _tables(data.get("tables"), f"{where}: tables")
    spec = SweepSpec(
        traces=tuple(traces), eviction=_unique(eviction), capacities=_unique(capacities),
        profiles=_unique(profiles), prefetch=_unique(prefetch), miss=_unique(miss), scopes=_unique(scopes),
        modes=_unique(modes), seeds=_unique(seeds), pass_table=pass_table, timeline_passes=timeline_passes,
        imports=tuple(imports), name=str(data.get("name") or ""), source=where)
    check_combinations(spec)
    return spec


def check_combinations(spec: SweepSpec) -> None:
    """Axes that cannot meet: prefetch or miss handling without timing, sequential replay with it."""
    where = spec.source
    count = any(not p.timed for p in spec.profiles)
    timed = any(p.timed for p in spec.profiles)
    if count and (any(p != DEFAULT_PREFETCH for p in spec.prefetch) or any(m != DEFAULT_MISS for m in spec.miss)):
        raise UserError("prefetch and miss-handling policies need a timed run: give a hardware profile "
                        "(profile 'none' is a count-only run)", f"{where}: profiles")
    if timed and any(m != "event" for m in spec.modes):
        raise UserError("timed runs replay cells atomically: use replay 'event' with a profile", f"{where}: replay")


def _unique(values: Sequence[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return tuple(out)


def _policy(text: str, kind: str, where: str) -> str:
    try:
        return canonical_policy(text, kind)
    except UserError as exc:
        raise exc.located(f"{where}: {kind}") from None


def _choices(data: Mapping[str, Any], key: str, allowed: Sequence[str], where: str) -> list[str]:
    values = _text_list(data, key, [allowed[0]], where)
    for v in values:
        if v not in allowed:
            raise UserError(f"{v!r} is not one of {', '.join(allowed)}", f"{where}: {key}")
    return values


def _traces(value: Any, where: str, allow_code: bool = True, base_dir: Path | None = None) -> list[TraceSource]:
    if isinstance(value, (str, Trace)):
        value = [value]
    if isinstance(value, (list, tuple)):
        items = []
        for i, v in enumerate(value):
            if not isinstance(v, (str, Trace)):
                raise UserError("a list of traces holds file names; use a mapping name: source for others",
                                f"{where}[{i}]")
            items.append((v if isinstance(v, str) else f"trace{i}", v))
    elif isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    else:
        raise UserError("expected a mapping of trace names to sources, or a list of files", where)
    if not items:
        raise UserError("names no traces", where)
    sources = []
    for name, ref in items:
        at = f"{where}: {name}"
        if isinstance(ref, Trace):
            sources.append(TraceSource(name, "object", ref))
        elif isinstance(ref, str) and ref.strip():
            sources.append(TraceSource(name, "file", _trace_file(ref.strip(), base_dir)))
        elif isinstance(ref, Mapping) and set(ref) == {"synthetic"} and isinstance(ref["synthetic"], Mapping):
            sources.append(TraceSource(name, "synthetic", None, _frozen_args(ref["synthetic"])))
        elif isinstance(ref, Mapping) and "factory" in ref and set(ref) <= {"factory", "args"}:
            if not allow_code:
                raise UserError(f"names a Python function ({_show(ref['factory'])}); {CODE_KEYS_HINT}",
                                f"{at}: factory")
            args = ref.get("args") or {}
            target = ref["factory"]
            if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")) \
                    or not isinstance(args, Mapping):
                raise UserError("factory must look like 'package.module:function' and args be a mapping", at)
            sources.append(TraceSource(name, "factory", ref["factory"], _frozen_args(args)))
        else:
            raise UserError("a trace source is a file name, {synthetic: {...}} or {factory: 'module:function', "
                            "args: {...}}", at)
    return sources


def _trace_file(ref: str, base_dir: Path | None) -> str:
    """A trace file named in a spec file, relative to the spec's folder (bundled: names stay)."""
    from moesim.traces.format.io import BUNDLED_PREFIX

    if base_dir is None or ref.startswith(BUNDLED_PREFIX) or Path(ref).is_absolute():
        return ref
    return str(base_dir / ref)


def _show(value: Any) -> str:
    from moesim.units import show

    return show(value)


def _frozen_args(args: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((str(k), _freeze(v)) for k, v in args.items()))


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def _profile(value: Any, where: str) -> ProfileChoice:
    if value in NO_PROFILE or (isinstance(value, str) and value.strip().lower() == "none"):
        return ProfileChoice()
    if isinstance(value, str):
        return ProfileChoice(value.strip())
    if isinstance(value, Mapping) and "name" in value and set(value) <= {"name", "set"}:
        settings = value.get("set") or {}
        if not isinstance(settings, Mapping):
            raise UserError("'set' must map field paths to values, e.g. links.h2d.bandwidth: 16 GB/s", where)
        pairs = tuple((str(k), str(v)) for k, v in settings.items())
        return ProfileChoice(str(value["name"]).strip(), pairs)
    raise UserError(f"a profile is a name, none, or {{name: ..., set: {{path: value}}}}; got {value!r}", where)


def _tables(value: Any, where: str) -> tuple[bool, int]:
    if value is None:
        return False, 0
    if not isinstance(value, Mapping) or not set(value) <= {"passes", "timeline_passes"}:
        raise UserError("expected {passes: true|false, timeline_passes: N}", where)
    passes = value.get("passes", False)
    timeline = value.get("timeline_passes", 0)
    if not isinstance(passes, bool) or isinstance(timeline, bool) or not isinstance(timeline, int) or timeline < 0:
        raise UserError("passes must be true or false and timeline_passes a count >= 0", where)
    return passes, int(timeline)
