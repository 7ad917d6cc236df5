"""moesim's prediction of a reference-harness run, and the comparison: counts exactly, step times by error.

The simulator gets only what a user would give it: the trace the harness recorded, the calibrated
profile, and the harness's configuration in moesim's terms (LRU, global scope, capacity = slots x
expert bytes, no prefetch, stall on a miss, one kernel per expert because the harness runs its
experts one by one). With a throttled harness the profile's fetch link is set to the emulated
speed with no per-fetch latency (what a pacing throttle does). Counts (hits, misses by kind, bytes)
must be equal: the harness's LRU and moesim's cache core are independent implementations of one
rule. Step times are compared pass by pass (moesim/kernels/validation_metrics.py conventions).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from moesim.harness.run import HarnessRun
from moesim.hw_profiles.profile import HardwareProfile
from moesim.kernels.validation_metrics import error_summary, step_times
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.sim.topology import build_topology


def harness_config(run: HarnessRun, profile_name: str = "") -> TimedConfig:
    return TimedConfig(eviction="lru", prefetch="none", miss="stall", capacity_bytes=run.capacity_bytes,
                       scope="global", profile=profile_name, seed=0, grouped_experts=False, bounds=False)


def throttled(profile: HardwareProfile, trace_bytes: int, rate_Bps: float) -> HardwareProfile:
    """The profile with its expert-fetch link (the last hop into the cache tier) paced to `rate_Bps`, no latency."""
    topo = build_topology(profile, trace_bytes)
    name = topo.host_link if topo.last_hop_route == 0 else topo.ssd_link
    links = dict(profile.links)
    links[name] = dataclasses.replace(links[name], bandwidth=float(rate_Bps), latency=0.0, pageable_bandwidth=None)
    tiers = dict(profile.tiers)
    if name == topo.ssd_link and "ssd" in tiers:
        tiers["ssd"] = dataclasses.replace(tiers["ssd"], read_bandwidth=float(rate_Bps), latency=0.0, queue_depth=1)
    prov = dict(profile.provenance)
    prov[f"links.{name}.bandwidth"] = f"emulated link: the harness paced every fetch to {rate_Bps:.4g} B/s"
    return dataclasses.replace(profile, links=links, tiers=tiers, provenance=prov,
                               name=f"{profile.name}+throttle{rate_Bps:.3g}")


def predict(run: HarnessRun, profile: HardwareProfile) -> Any:
    if run.throttle_Bps:
        profile = throttled(profile, run.trace.total_object_bytes(), run.throttle_Bps)
    return timed_replay(run.trace, profile, harness_config(run, profile.name))


def sim_counts(sim: Any) -> dict[str, int]:
    s = sim.summary
    plan = sim.plan
    return {"hits": int(s["hits"]), "misses": int(s["misses"]), "compulsory": int(s["compulsory"]),
            "capacity": int(s["capacity"]), "collision": int(s["collision"]),
            "bytes": int(plan.copy_bytes[~sim.engine.copy_cancelled].sum())}


def compare(runs: list[HarnessRun], profile: HardwareProfile) -> tuple[dict[str, Any], pd.DataFrame]:
    """Repeats of one harness configuration against one prediction: a summary row and per-step table.

    Every repeat must have produced the same routing (same trace hash); steps compare by their
    median over repeats; `spread` is the run-to-run spread of step times (per step (max - min) /
    median, then its median over steps) and of the total time.
    """
    first = runs[0]
    hashes = {r.trace.content_hash() for r in runs}
    if len(hashes) != 1:
        raise ValueError(f"the repeats routed differently ({len(hashes)} distinct traces): not one workload")
    sim = predict(first, profile)
    counts = sim_counts(sim)
    real_counts = {k: first.counts[k] for k in counts}
    differ = {k: (real_counts[k], counts[k]) for k in counts if real_counts[k] != counts[k]}
    stack = np.stack([r.steps["step_s"].to_numpy(dtype=np.float64) for r in runs])
    real = np.median(stack, axis=0)
    sim_steps = step_times(first.trace, sim.cells["end_s"].to_numpy())
    err = error_summary(real, sim_steps)
    totals = stack.sum(axis=1)
    spread_steps = (stack.max(axis=0) - stack.min(axis=0)) / np.where(real > 0, real, np.nan) if len(runs) > 1 else None
    decode = (first.steps["phase"] == "decode").to_numpy()
    err_decode = error_summary(real[decode], sim_steps[decode])
    row: dict[str, Any] = {
        "capacity_slots": first.capacity, "capacity_bytes": first.capacity_bytes, "repeats": len(runs),
        "throttle_Bps": first.throttle_Bps, "read_mode": first.read_mode, "counts_identical": not differ,
        "count_differences": "; ".join(f"{k} harness {a} moesim {b}" for k, (a, b) in differ.items()),
        **{f"harness_{k}": v for k, v in real_counts.items()}, **{f"sim_{k}": v for k, v in counts.items()},
        "step_mape": err["mape"], "step_mpe": err["mpe"], "step_ape_p50": err["ape_p50"], "step_ape_p99": err["ape_p99"],
        "decode_step_mape": err_decode["mape"], "decode_step_mpe": err_decode["mpe"],
        "real_step_mean_s": float(np.mean(real)), "sim_step_mean_s": float(np.nanmean(sim_steps)),
        "real_total_s": float(np.median(totals)), "sim_total_s": float(sim.summary["time"]["total_s"]),
        "step_spread_median": None if spread_steps is None else float(np.nanmedian(spread_steps)),
        "total_spread": float((totals.max() - totals.min()) / np.median(totals)) if len(runs) > 1 else None,
        "real_dense_s": float(np.median([r.steps["dense_s"].sum() for r in runs])),
        "real_fetch_s": float(np.median([r.steps["fetch_s"].sum() for r in runs])),
        "real_expert_s": float(np.median([r.steps["expert_s"].sum() for r in runs])),
        "sim_dense_s": float(sim.summary["time"]["dense_s"]), "sim_stall_s": float(sim.summary["time"]["stall_s"]),
        "sim_expert_s": float(sim.summary["time"]["expert_s"]),
        "trace_hash": first.trace.content_hash(),
    }
    steps = pd.DataFrame({"capacity_slots": first.capacity, "pass": np.arange(first.trace.n_passes),
                          "phase": first.steps["phase"].to_numpy(), "tokens": first.steps["tokens"].to_numpy(),
                          "real_s": real, "sim_s": sim_steps,
                          "real_min_s": stack.min(axis=0), "real_max_s": stack.max(axis=0)})
    steps["error"] = (steps["sim_s"] - steps["real_s"]) / steps["real_s"]
    return row, steps
