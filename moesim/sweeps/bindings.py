"""Where sweeps, what-if studies and reports call the other rooms of moesim.

Traces (moesim.traces.format.io, moesim.traces.synth.synthetic), hardware profiles (moesim.hw_profiles.loader)
and capacities (moesim.sim.capacity) are each reached through one small function here, so an
interface change in one of them is fixed in one place. Runs themselves go through the front door
(moesim/sim/run.py), from moesim/sweeps/execute.py.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping, Sequence

from moesim.errors import UserError
from moesim.traces.format.trace import Trace


# ---- traces ------------------------------------------------------------------------------------
def load_trace_file(text: str, where: str) -> Trace:
    """A trace file in any format moesim reads, or "bundled:NAME"."""
    from moesim.traces.format.io import load_trace

    return load_trace(text)


def synthetic_trace(settings: Mapping[str, Any], where: str) -> Trace:
    """A synthetic trace from generator settings; "preset" names a base preset (e.g. olmoe)."""
    from moesim.traces.synth import synthetic

    settings = dict(settings)
    base = synthetic.preset(str(settings.pop("preset"))) if "preset" in settings else None
    config = synthetic.SynthConfig.from_dict(settings, where, base=base)
    return synthetic.generate(config)


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
    from moesim.hw_profiles.loader import load_profile as load

    profile = load(name)
    for path, text in settings:
        profile = set_profile_field(profile, path, text, where)
    return profile


def set_profile_field(profile: Any, path: str, text: str, where: str) -> Any:
    """`profile` with the field at dotted `path` ("links.h2d.bandwidth") set to `text` ("16 GB/s")."""
    from moesim.hw_profiles.loader import set_field

    return set_field(profile, path, text)


def profile_field_kind(path: str) -> str | None:
    """The units kind of a profile field ("bandwidth", "bytes", ..., "count"), None if unknown."""
    from moesim.hw_profiles.schema import field_spec

    spec = field_spec(path)
    return None if spec is None else str(spec.kind)


def vram_usable_bytes(profile: Any) -> float | None:
    tier = profile.tier("vram") if profile is not None else None
    return None if tier is None else float(tier.usable)


# ---- capacities --------------------------------------------------------------------------------
def capacity_bytes(text: str, trace: Trace, where: str) -> int:
    """Capacity in bytes for `trace`: "5%" of its routed expert bytes, "4000MiB", "51slots"."""
    from moesim.sim.capacity import parse_capacity

    return int(parse_capacity(str(text), trace, where).bytes)


# ---- the timing engine -------------------------------------------------------------------------
