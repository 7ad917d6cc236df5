"""The fitted profile as YAML: the base profile with fitted figures and their provenance.

Fitted figures the engine has fields for replace the base values, each with a provenance naming the
run, the command, the value's 1-sigma uncertainty and the column it was fitted to. Figures the engine
has no field for yet (per-token overhead, cache bookkeeping per byte) are written as comments at the
top, so the file stays loadable by this tree and the figures are not lost.
"""

from __future__ import annotations

from typing import Any

from moesim.hw_profiles.loader import profile_from_mapping, profile_to_yaml, set_field
from moesim.hw_profiles.profile import HardwareProfile
from moesim.runs.fit import UNITS, FitResult

FIELDS = {"memory_bandwidth": ["compute.memory_bandwidth"], "peak_flops": ["compute.peak_flops"],
          "launch_overhead": ["compute.launch_overhead"],
          "ssd_bandwidth": ["tiers.ssd.read_bandwidth", "links.ssd_d.bandwidth"], "ssd_latency": ["tiers.ssd.latency"]}
TEXT_UNIT = {"B/s": "B/s", "FLOP/s": "FLOP/s", "s": "s"}
FITTED_TO = {"memory_bandwidth": "per-step compute_ms", "peak_flops": "prefill_s", "launch_overhead": "compute_ms",
             "ssd_bandwidth": "per-step io_ms", "ssd_latency": "per-step io_ms", "token_overhead": "compute_ms",
             "mgmt_per_byte": "per-step mgmt_ms"}


def fitted_profile_text(base: HardwareProfile, fit: FitResult, run: Any, trace_name: str, command: str) -> str:
    profile = base
    for name, (value, sigma) in fit.fitted.items():
        for path in FIELDS.get(name, []):
            if path.startswith("links.ssd_d") and base.link("ssd_d") is None:
                continue
            prov = (f"fitted by `{command}` on run {run.name} ({run.source}, trace {trace_name}) to its "
                    f"{FITTED_TO[name]}: {value:.6g} +- {sigma:.2g} {UNITS[name]} (1 sigma)")
            profile = set_field(profile, path, f"{value:.6g} {TEXT_UNIT[UNITS[name]]}", prov)
    profile = profile_from_mapping(_rename(profile), "fitted profile")
    header = [f"# Fitted by: {command}", f"# Run: {run.name} ({run.source}); trace {trace_name}"]
    for name, (value, sigma) in fit.fitted.items():
        if name not in FIELDS:
            header.append(f"# fitted, no profile field in this engine yet: {name} = {value:.6g} +- {sigma:.2g} "
                          f"{UNITS[name]} (to the run's {FITTED_TO[name]})")
    for name, why in fit.not_identified.items():
        header.append(f"# not identified by this run: {name}: {why}")
    return "\n".join(header) + "\n" + profile_to_yaml(profile)


def _rename(profile: HardwareProfile) -> dict[str, Any]:
    from moesim.hw_profiles.loader import profile_to_document

    doc = profile_to_document(profile)
    doc["name"] = f"{profile.name}-fitted"
    return doc
