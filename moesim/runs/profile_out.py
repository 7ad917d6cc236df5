"""The fitted profile as YAML: the base profile with fitted figures and their provenance.

Fitted figures the engine has fields for replace the base values, each with a provenance naming the
run, the command, the value's 1-sigma uncertainty and the column it was fitted to. Figures the engine
has no field for yet (per-token overhead, cache bookkeeping per byte) are written as comments at the
top, so the file stays loadable by this tree and the figures are not lost.
"""

from __future__ import annotations

from typing import Any

import yaml

from moesim.hw_profiles.loader import profile_from_mapping, profile_to_document
from moesim.hw_profiles.profile import HardwareProfile
from moesim.runs.fit import UNITS, FitResult

TEXT_UNIT = {"B/s": "B/s", "FLOP/s": "FLOP/s", "s": "s"}
FITTED_TO = {"memory_bandwidth": "per-step compute_ms", "peak_flops": "prefill_s", "batched_flops": "prefill_s",
             "launch_overhead": "compute_ms",
             "ssd_bandwidth": "per-step io_ms", "ssd_bandwidth_qd1": "per-step io_ms", "ssd_latency": "per-step io_ms",
             "token_overhead": "compute_ms", "mgmt_per_byte": "per-step mgmt_ms"}
ENGINE_FIGURES = ("memory_bandwidth", "peak_flops", "batched_flops", "launch_overhead", "ssd_bandwidth",
                  "ssd_bandwidth_qd1", "ssd_latency")


def fitted_profile_text(base: HardwareProfile, fit: FitResult, run: Any, trace_name: str, command: str) -> str:
    """The base profile's document with the fitted figures (and their provenance) written in."""
    from moesim.runs.step_model import _storage, apply_figures

    profile = apply_figures(base, fit.figures)
    doc = profile_to_document(profile)
    doc["name"] = f"{base.name}-fitted"

    def prov(name: str) -> str:
        value, sigma = fit.fitted[name]
        return (f"fitted by `{command}` on run {run.name} ({run.source}, trace {trace_name}) to its {FITTED_TO[name]}: "
                f"{value:.6g} +- {sigma:.2g} {UNITS[name]} (1 sigma)")

    dev = doc["processors"][base.device.name]
    for name, key in (("memory_bandwidth", "memory_bandwidth"), ("launch_overhead", "kernel_overhead")):
        if name in fit.fitted:
            dev[key] = {"value": f"{fit.figures[name]:.6g} {UNITS[name]}", "provenance": prov(name)}
    if "peak_flops" in fit.fitted or "peak_flops" in fit.derived:
        why = prov("peak_flops") if "peak_flops" in fit.fitted else \
            f"set by `{command}` on run {run.name} ({run.source}): {fit.derived['peak_flops']}"
        for dtype in dev["peak_flops"]:
            value = profile.device.peak_flops[dtype]
            dev["peak_flops"][dtype] = {"value": f"{value:.6g} FLOP/s", "provenance": why}
    if "batched_flops" in fit.fitted:
        dev["batched_flops"] = {"value": f"{fit.figures['batched_flops']:.6g} FLOP/s", "provenance": prov("batched_flops")}
    storage = _storage(base)
    if storage is not None:
        mem = doc["memories"][storage]
        if "ssd_latency" in fit.fitted:
            mem["latency"] = {"value": f"{fit.figures['ssd_latency']:.6g} s", "provenance": prov("ssd_latency")}
        curve = [n for n in ("ssd_bandwidth", "ssd_bandwidth_qd1") if n in fit.fitted]
        if curve and isinstance(mem.get("throughput"), dict):
            mem["throughput"]["provenance"] = "; ".join(prov(n) for n in curve)
    header = [f"# Fitted by: {command}", f"# Run: {run.name} ({run.source}); trace {trace_name}"]
    for name, (value, sigma) in fit.fitted.items():
        if name not in ENGINE_FIGURES:
            header.append(f"{EXTRA_HEADER}{name} = {value:.6g} +- {sigma:.2g} "
                          f"{UNITS[name]} (to the run's {FITTED_TO[name]})")
    for name, why in fit.not_identified.items():
        header.append(f"# not identified by this run: {name}: {why}")
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120)
    profile_from_mapping(yaml.safe_load(text), "fitted profile")  # loads back, or this is a bug
    return "\n".join(header) + "\n" + text


EXTRA_HEADER = "# fitted, no profile field in this engine yet: "


def fitted_extras(profile_arg: str) -> dict[str, float]:
    """The figures a fitted profile file carries in its header (mgmt_per_byte, token_overhead), by name;
    empty for a profile name or a file without them."""
    import re
    from pathlib import Path

    path = Path(profile_arg)
    if not path.is_file():
        return {}
    out = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            m = re.match(re.escape(EXTRA_HEADER) + r"(\w+) = ([0-9.eE+-]+)", line)
            if m:
                out[m.group(1)] = float(m.group(2))
    return out
