"""What-if studies: vary hardware-profile fields and the cache capacity over a grid, run every
policy at every point (a sweep), and write the report with heatmaps over the grid.

An axis is `PATH=LO..HI:N[:geo|:lin]` (N values from LO to HI, geometric spacing by default, linear
with `:lin`) or `PATH=V1,V2,...` (the values as given). PATH is a profile field
("links.h2d.bandwidth", "tiers.vram.capacity", "links.h2d.copy_engines", any field
`moesim profiles show` lists) or `capacity` (the expert cache: "1%..25%:5", "2GiB..16GiB:4",
"16slots..256slots:5"). Values carry units ("8GB/s"); LO's unit is the one the generated values
are written in. Counts (copy engines, queue depth) take plain integers and are rounded.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from moesim.errors import UserError
from moesim.policies.registry import available
from moesim.reports.frames import CAPACITY_AXIS, setting_quantity, setting_value
from moesim.sweeps import bindings
from moesim.sweeps.run_config import DEFAULT_MISS, DEFAULT_PREFETCH, canonical_policy
from moesim.sweeps.spec import ProfileChoice, SweepSpec, TraceSource, check_combinations
from moesim.traces.format.trace import Trace

BOUND_POLICY = "belady"
_RANGE = re.compile(r"^(?P<lo>.+?)\.\.(?P<hi>.+?):(?P<n>\d+)(?::(?P<spacing>geo|lin))?$")
_NUMBER_UNIT = re.compile(r"^\s*(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>.*?)\s*$")


@dataclass(frozen=True)
class Axis:
    """One varied setting: its path and the value texts of its grid points, in order."""

    path: str
    values: tuple[str, ...]

    @property
    def is_capacity(self) -> bool:
        return self.path == CAPACITY_AXIS


def _spaced(lo: float, hi: float, n: int, spacing: str, where: str) -> np.ndarray:
    if n < 1:
        raise UserError("needs at least 1 point", where)
    if n == 1:
        return np.array([lo])
    if spacing == "geo":
        if lo <= 0 or hi <= 0:
            raise UserError("geometric spacing needs positive ends (use :lin for a range from 0)", where)
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def _split(text: str, where: str) -> tuple[float, str]:
    match = _NUMBER_UNIT.match(text)
    if not match:
        raise UserError(f"cannot read {text!r} as a number with a unit", where)
    return float(match.group("num")), match.group("unit")


def parse_axis(text: str, max_points: int | None = None) -> Axis:
    """Parse one --vary argument; UserError naming the argument for any mistake. A range of more
    points than `max_points` (default: the grid cap, sweeps.plan.DEFAULT_MAX_RUNS) is refused
    before a single point is made."""
    from moesim.sweeps.plan import check_grid
    from moesim.units import parse_count

    where = f"--vary {text if len(text) <= 80 else text[:80] + '...'}"
    path, sep, spec = text.partition("=")
    path, spec = path.strip(), spec.strip()
    if not sep or not path or not spec:
        raise UserError("expected PATH=LO..HI:N or PATH=V1,V2,... (e.g. links.h2d.bandwidth=8GB/s..64GB/s:4)", where)
    match = _RANGE.match(spec)
    if not match:
        values = tuple(v.strip() for v in spec.split(",") if v.strip())
        if not values:
            raise UserError("no values given", where)
        for v in values:
            _check_value(path, v, where)
        return Axis(path, values)
    lo_text, hi_text = match.group("lo").strip(), match.group("hi").strip()
    n, spacing = parse_count(match.group("n"), where, 1, 2**40), match.group("spacing") or "geo"
    check_grid(n, max_points, where)
    lo_num, lo_unit = _split(lo_text, where)
    _, hi_unit = _split(hi_text, where)
    if path == CAPACITY_AXIS and lo_unit in ("%", "slot", "slots"):
        if hi_unit != lo_unit:
            raise UserError(f"both ends need the same unit ({lo_unit!r} vs {hi_unit!r})", where)
        lo, hi = lo_num, _split(hi_text, where)[0]
        points = _spaced(lo, hi, n, spacing, where)
        if lo_unit == "%":
            return Axis(path, _unique(f"{v:.4g}%" for v in points))
        return Axis(path, _unique(f"{int(round(v))}slots" for v in points))
    if not lo_unit and not hi_unit:  # a count
        lo, hi = lo_num, _split(hi_text, where)[0]
        return Axis(path, _unique(str(int(round(v))) for v in _spaced(lo, hi, n, spacing, where)))
    lo_si, lo_kind = setting_quantity(where, lo_text)
    hi_si, hi_kind = setting_quantity(where, hi_text)
    if lo_kind != hi_kind:
        raise UserError(f"the ends are of different kinds ({lo_kind} and {hi_kind})", where)
    kind = bindings.profile_field_kind(path)
    if kind is not None and kind != lo_kind:
        raise UserError(f"{path} is a {kind}, but {lo_text!r} is a {lo_kind}", where)
    scale = lo_si / lo_num if lo_num else 1.0
    points = _spaced(lo_si, hi_si, n, spacing, where)
    return Axis(path, _unique(f"{v / scale:.4g} {lo_unit}" for v in points))


def _check_value(path: str, text: str, where: str) -> None:
    if path == CAPACITY_AXIS:
        return  # checked against the trace when the sweep is planned
    num, unit = _split(text, where)
    if unit:
        setting_value(where, text)
    elif not math.isfinite(num):
        raise UserError(f"{text!r} is not a finite number", where)


def _unique(values: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


@dataclass
class WhatIfPlan:
    spec: SweepSpec
    axes: list[Axis]
    timed: bool
    notes: list[str] = field(default_factory=list)


def plan_whatif(trace: str | Trace, profile: str | None, axes: Sequence[Axis], policies: Sequence[str],
                prefetch: Sequence[str] = (DEFAULT_PREFETCH,), miss: Sequence[str] = (DEFAULT_MISS,),
                capacity: str = "5%", scope: str = "global", mode: str = "event", seeds: Sequence[int] = (0,),
                count_only: bool = False, timeline_passes: int = 4, trace_name: str | None = None) -> WhatIfPlan:
    """The sweep a what-if study runs: the grid of profile settings x capacities x policies."""
    if not axes:
        raise UserError("give at least one --vary axis", "whatif")
    if len(axes) > 2:
        raise UserError("at most two --vary axes (a heatmap has two dimensions)", "whatif")
    if len({a.path for a in axes}) != len(axes):
        raise UserError("an axis is given twice", "--vary")
    notes: list[str] = []
    capacity_axis = next((a for a in axes if a.is_capacity), None)
    profile_axes = [a for a in axes if not a.is_capacity]
    timed = bool(profile) and not count_only
    if profile_axes and not timed:
        notes.append("hardware settings (" + ", ".join(a.path for a in profile_axes) + ") do not change hit and "
                     "miss counts; their effect needs a timed run")
    if profile_axes and not profile:
        raise UserError("varying a profile field needs --profile", "whatif")
    if profile and profile_axes and not timed:
        for axis in profile_axes:  # catch a mistyped field or value even when it will not be timed
            for value in axis.values:
                bindings.load_profile(str(profile), ((axis.path, value),), f"--vary {axis.path}={value}")
    specs = [canonical_policy(p, "eviction") for p in policies]
    if not specs:
        raise UserError("no policy given", "--policies")
    if any(r.name == BOUND_POLICY for r in available("eviction")) and BOUND_POLICY not in specs:
        specs.append(canonical_policy(BOUND_POLICY, "eviction"))
    if timed:
        combos = itertools.product(*(a.values for a in profile_axes)) if profile_axes else [()]
        profiles = tuple(ProfileChoice(str(profile), tuple(zip((a.path for a in profile_axes), combo)))
                         for combo in combos)
        prefetch = tuple(canonical_policy(p, "prefetch") for p in prefetch)
        miss = tuple(canonical_policy(m, "miss") for m in miss)
    else:
        profiles = (ProfileChoice(),)
        if any(p != DEFAULT_PREFETCH for p in prefetch) or any(m != DEFAULT_MISS for m in miss):
            notes.append("prefetch and miss handling need a timed run: they were left out")
        prefetch, miss = (DEFAULT_PREFETCH,), (DEFAULT_MISS,)
    if isinstance(trace, Trace):
        source = TraceSource(trace_name or "trace", "object", trace)
    else:
        source = TraceSource(trace_name or Path(str(trace)).name or str(trace), "file", str(trace))
    spec = SweepSpec(
        traces=(source,), eviction=tuple(dict.fromkeys(specs)),
        capacities=capacity_axis.values if capacity_axis else (capacity,), profiles=profiles,
        prefetch=tuple(dict.fromkeys(prefetch)), miss=tuple(dict.fromkeys(miss)), scopes=(scope,), modes=(mode,),
        seeds=tuple(seeds), timeline_passes=timeline_passes if timed else 0,
        name="what-if " + " x ".join(a.path for a in axes), source="whatif")
    check_combinations(spec)
    return WhatIfPlan(spec, list(axes), timed, notes)


def run_whatif(plan: WhatIfPlan, out: str | Path, backend: str = "local", jobs: int | None = None,
               ray_address: str | None = None, progress: bool | None = None,
               max_runs: int | None = None) -> dict[str, Any]:
    """Run the study's sweep into `out` (resumable) and write out/report.html and out/report.md."""
    from moesim.reports.render import WhatIfAxes, write_report
    from moesim.sweeps import store
    from moesim.sweeps.runner import run_sweep

    out = Path(out)
    outcome = run_sweep(plan.spec, out, backend, jobs, ray_address, progress, max_runs=max_runs)
    results = store.read_dataset(out, outcome.table["run_id"].tolist())
    results.notes.extend(plan.notes)
    axes = None
    measured = [a.path for a in plan.axes if a.is_capacity or plan.timed]
    if len(measured) == 2:
        values = ("tpot_mean_s", "total_s", "hit_rate") if plan.timed else ("hit_rate",)
        axes = WhatIfAxes(measured[0], measured[1], values)
    report = write_report(results, out / "report.html", out / "report.md", title=plan.spec.name, whatif=axes)
    return {
        "out": str(out), "report": str(out / "report.html"), "markdown": str(out / "report.md"),
        "table": str(out / store.TABLE), "runs": outcome.total, "ran": outcome.ran, "skipped_done": outcome.skipped,
        "failed": int((outcome.table["status"] != "ok").sum()), "timed": plan.timed,
        "axes": {a.path: list(a.values) for a in plan.axes}, "figures": [f.title for f in report.figures],
        "notes": report.notes,
    }
