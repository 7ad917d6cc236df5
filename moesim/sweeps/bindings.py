"""Where sweeps, what-if studies and reports call the other rooms of moesim.

Traces (moesim.traces.io, moesim.traces.synthetic), hardware profiles (moesim.hw_profiles.loader),
capacities (moesim.sim.capacity) and the timing engine (moesim.sim.timed_replay) are each reached
through one small function here, so an interface change in one of them is fixed in one place.
A room that is not part of this build turns into a one-line UserError naming what is missing,
never a traceback.
"""

from __future__ import annotations

import importlib
import math
import re
from types import ModuleType
from typing import Any, Mapping, Sequence

from moesim.errors import UserError
from moesim.traces.trace import Trace


def _module(name: str, what: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
            raise UserError(f"{what} needs {name}, which this build of moesim does not include", where) from None
        raise


# ---- traces ------------------------------------------------------------------------------------
def load_trace_file(text: str, where: str) -> Trace:
    """A trace file in any format moesim reads, or "bundled:NAME"."""
    io = _module("moesim.traces.io", "reading a trace file", where)
    return io.load_trace(text)


def synthetic_trace(settings: Mapping[str, Any], where: str) -> Trace:
    """A synthetic trace from generator settings; "preset" names a base preset (e.g. olmoe)."""
    synth = _module("moesim.traces.synthetic", "a synthetic trace", where)
    settings = dict(settings)
    base = synth.preset(str(settings.pop("preset"))) if "preset" in settings else None
    config = synth.SynthConfig.from_dict(settings, where, base=base)
    return synth.generate(config)


def factory_trace(target: str, args: Mapping[str, Any], where: str) -> Trace:
    """A trace made by a Python function "package.module:function" called with `args`."""
    module_name, sep, func_name = target.partition(":")
    if not sep or not module_name or not func_name:
        raise UserError(f"factory {target!r} must look like 'package.module:function'", where)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {module_name!r}: {exc}", where) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UserError(f"{module_name!r} has no function {func_name!r}", where)
    try:
        trace = func(**dict(args))
    except TypeError as exc:
        raise UserError(f"cannot call {target} with args {dict(args)}: {exc}", where) from None
    if not isinstance(trace, Trace):
        raise UserError(f"{target} returned {type(trace).__name__}, not a Trace", where)
    trace.validate(where)
    return trace


# ---- hardware profiles -------------------------------------------------------------------------
def load_profile(name: str, settings: Sequence[tuple[str, str]], where: str) -> Any:
    """A HardwareProfile by catalog name or YAML path, with each (field path, value text) set in turn."""
    loader = _module("moesim.hw_profiles.loader", "a hardware profile", where)
    profile = loader.load_profile(name)
    for path, text in settings:
        profile = set_profile_field(profile, path, text, where)
    return profile


def set_profile_field(profile: Any, path: str, text: str, where: str) -> Any:
    """`profile` with the field at dotted `path` ("links.h2d.bandwidth") set to `text` ("16 GB/s")."""
    loader = _module("moesim.hw_profiles.loader", "setting a hardware profile field", where)
    return loader.set_field(profile, path, text)


def profile_field_kind(path: str) -> str | None:
    """The units kind of a profile field ("bandwidth", "bytes", ..., "count"), None if unknown here."""
    try:
        schema = importlib.import_module("moesim.hw_profiles.schema")
    except ModuleNotFoundError:
        return None
    spec = schema.field_spec(path)
    return None if spec is None else str(spec.kind)


def profiles_available() -> bool:
    try:
        importlib.import_module("moesim.hw_profiles.loader")
    except ModuleNotFoundError:
        return False
    return True


def vram_usable_bytes(profile: Any) -> float | None:
    tier = profile.tier("vram") if profile is not None else None
    return None if tier is None else float(tier.usable)


# ---- capacities --------------------------------------------------------------------------------
def capacity_bytes(text: str, trace: Trace, where: str) -> int:
    """Capacity in bytes for `trace`: "5%" of its routed expert bytes, "4000MiB", "51slots"."""
    try:
        capacity = importlib.import_module("moesim.sim.capacity")
    except ModuleNotFoundError:
        capacity = None
    if capacity is not None:
        return int(capacity.parse_capacity(str(text), trace, where).bytes)
    from moesim.units import parse_size_or_fraction

    stripped = str(text).strip()
    slots = re.fullmatch(r"(\d+)\s*slots?", stripped)
    if slots:
        return int(slots.group(1)) * max(int(b) for b in trace.meta.object_bytes)
    return int(math.floor(parse_size_or_fraction(stripped, float(trace.total_object_bytes()), where)))


# ---- the timing engine -------------------------------------------------------------------------
def timing_available() -> bool:
    """True when this build has the timing engine and the profile loader."""
    for name in ("moesim.sim.timed_replay", "moesim.hw_profiles.loader"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            return False
    return True


def timed_replay(trace: Trace, profile: Any, *, eviction: str, prefetch: str, miss: str, capacity_bytes: int,
                 scope: str, seed: int, profile_name: str, profile_set: Sequence[tuple[str, str]]) -> Any:
    """One timed replay (moesim.sim.timed_replay): returns its TimedResult."""
    engine = _module("moesim.sim.timed_replay", "a timed replay", "replay")
    config = engine.TimedConfig(
        eviction=eviction,
        prefetch=prefetch,
        miss=miss,
        capacity_bytes=int(capacity_bytes),
        scope=scope,
        profile=profile_name,
        profile_overrides=tuple(f"{p}={v}" for p, v in profile_set),
        seed=int(seed),
    )
    return engine.timed_replay(trace, profile, config)
