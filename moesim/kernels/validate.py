"""`moesim validate`'s engine: every configuration on the executor and in the simulator, compared.

For each (eviction policy, capacity, prefetch) the same trace runs through `execute` (real copies
and kernels) and `timed_replay` (the simpy clock) with the same calibrated profile. Decisions must
be identical (outcomes, copies, victims, in order) and the hit/miss/byte totals equal; times are
compared per step (pass): MAPE, signed bias (MPE), p50/p99, TTFT/TPOT; policies are ranked by
mean step time on both sides (Kendall tau-b, exact order); expert-fetch H2D throughput is set
against the profile's bandwidth and NVML's PCIe bytes against the bytes issued.
Runs torch only through the executor (imported when a run starts).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from moesim.hw_profiles.profile import HardwareProfile
from moesim.json_values import json_ready
from moesim.kernels.decision_log import DecisionLog
from moesim.kernels.shapes import ExpertShapes
from moesim.kernels.validation_metrics import error_summary, kendall_tau, ranking, relative_error, step_times
from moesim.sim.capacity import Capacity
from moesim.sim.timed_replay import TimedConfig
from moesim.sim.topology import build_topology
from moesim.traces.format.trace_meta import PHASE_NAMES
from moesim.traces.format.trace import Trace

FORMAT = "moesim.validate/1"
ACCEPT_MAPE = 0.10
ACCEPT_MPE = 0.05
"""Acceptance (gpu_method.md §9C): step-latency MAPE <= 10 %, |MPE| <= 5 %, Kendall tau = 1."""


@dataclass(frozen=True)
class ValidateConfig:
    """The grid to run and how to run the executor."""

    policies: tuple[str, ...] = ("lru", "lfu", "belady")  # three policies whose decisions differ
    capacities: tuple[Capacity, ...] = ()
    prefetches: tuple[str, ...] = ("none", "oracle")
    scope: str = "global"
    miss: str = "stall"
    model: str | None = None
    dtype: str = "bf16"
    device: str = "cuda"
    seed: int = 0
    backend: str = "auto"
    telemetry: bool = True
    shapes_override: ExpertShapes | None = None
    profile_source: str = ""
    repeats: int = 1  # interleaved rounds over the grid; per-step medians (gpu_method.md §1: A/B/A/B)
    ssd_dir: str | None = None  # where the expert file goes when the profile puts experts on SSD (default: temp)
    routing_sync: bool = False  # both sides: the host reads each cell's routing from the device before its copies

    def combinations(self) -> list[tuple[str, Capacity, str]]:
        return list(itertools.product(self.policies, self.capacities, self.prefetches))


@dataclass
class Validation:
    """Everything `moesim validate` writes: one row per run, per-step times, rankings, overall verdict."""

    runs: pd.DataFrame
    steps: pd.DataFrame
    rankings: pd.DataFrame
    summary: dict[str, Any]
    mismatches: list[str] = field(default_factory=list)


def run_validation(trace: Trace, profile: HardwareProfile, config: ValidateConfig,
                   progress: Callable[[str], None] | None = None) -> Validation:
    """Run every combination on both sides and compare (executor first, then the simulator)."""
    from moesim.kernels.executor import execute, shapes_for_trace
    from moesim.kernels.host_store import HostExpertStore
    from moesim.sim.run import RunSpec, run

    shapes = config.shapes_override or shapes_for_trace(trace, config.model, config.dtype)
    if progress is not None:
        progress(f"building {shapes.n_objects} random experts of {shapes.expert_bytes} bytes (once for every run)")
    store = HostExpertStore(shapes, seed=config.seed, pin=config.device.startswith("cuda"))
    ssd = None
    if build_topology(profile, trace.total_object_bytes()).far:  # the expert file, written once
        from moesim.kernels.ssd_store import SsdExpertStore

        ssd = SsdExpertStore(store, config.ssd_dir)
    combos = config.combinations()
    reals: list[list[Any]] = [[] for _ in combos]
    sims: list[Any] = [None] * len(combos)
    # one RunSpec per combination (moesim/sim/run.py): the simulator runs it through the front door,
    # the executor runs its TimedConfig view
    specs = [RunSpec.build(trace, policy, cap.bytes, capacity=cap.text, prefetch=prefetch, miss=config.miss,
                           scope=config.scope, seed=config.seed, profile=profile,
                           profile_name=config.profile_source or profile.name, model=config.model, bounds=False,
                           grouped_experts=config.backend != "cpu", routing_sync=config.routing_sync)
             for policy, cap, prefetch in combos]
    timed_of = [spec.timed_config() for spec in specs]
    try:
        for round_ in range(max(config.repeats, 1)):  # rounds outside: drift spreads over every run alike
            for i, (_, cap, _) in enumerate(combos):
                timed = timed_of[i]
                if progress is not None:
                    tag = f" (round {round_ + 1}/{config.repeats})" if config.repeats > 1 else ""
                    progress(f"{specs[i].label} @ {cap.text}{tag}")
                reals[i].append(execute(trace, profile, timed, device=config.device, model=None, dtype=config.dtype,
                                        seed=config.seed, telemetry=config.telemetry, shapes_override=shapes,
                                        backend=config.backend, store=store, ssd_store=ssd))
                if sims[i] is None:
                    sims[i] = run(specs[i])
    finally:
        if ssd is not None:
            ssd.close()
        store.close()
    rows: list[dict[str, Any]] = []
    step_frames: list[pd.DataFrame] = []
    mismatches: list[str] = []
    for i, (_, cap, _) in enumerate(combos):
        row, steps = compare_run(trace, timed_of[i], cap, reals[i], sims[i])
        if not row["identical"]:
            mismatches.append(f"{row['label']} @ {cap.text}: {row['first_difference']}")
        rows.append(row)
        step_frames.append(steps)
    runs = pd.DataFrame(rows)
    steps = pd.concat(step_frames, ignore_index=True) if step_frames else pd.DataFrame()
    rankings = rank_policies(runs)
    summary = overall(runs, rankings, trace, profile, config)
    return Validation(runs=runs, steps=steps, rankings=rankings, summary=summary, mismatches=mismatches)


def compare_run(trace: Trace, timed: TimedConfig, cap: Capacity, reals: list[Any], sim: Any) -> tuple[
        dict[str, Any], pd.DataFrame]:
    """One combination's row (counts real vs sim, errors) and its per-step table.

    `reals` are the executor's rounds: each must match the simulator; steps are compared by their
    median over rounds, totals by the round with the median total time (whose summary the row shows).
    """
    sim_log = DecisionLog.from_plan(sim.plan)
    differences = [r.decisions.first_difference(sim_log) for r in reals]
    difference = next((d for d in differences if d is not None), None)
    totals = np.asarray([r.summary["time"]["total_s"] for r in reals], dtype=np.float64)
    real = reals[int(np.argsort(totals, kind="stable")[(len(reals) - 1) // 2])]
    rc = real.decisions.counts()
    s = sim.summary
    sim_counts = {
        "hits": s["hits"] + s["late_prefetch"],
        "misses": s["misses"],
        "compulsory": s["compulsory"],
        "capacity": s["capacity"],
        "collision": s["collision"],
        "prefetch_copies": int(sim.cells["prefetch_copies"].sum()) + _setup(sim, prefetch=True),
        "demand_copies": int(sim.cells["demand_copies"].sum()) + _setup(sim, prefetch=False),
        "bytes": int(sim.plan.copy_bytes[~sim.engine.copy_cancelled].sum()),  # bytes the clock moved
    }
    totals_equal = all(rc[k] == v for k, v in sim_counts.items())
    identical = difference is None and totals_equal
    if difference is None and not totals_equal:
        difference = "totals differ: " + ", ".join(f"{k} {rc[k]} vs {v}" for k, v in sim_counts.items() if rc[k] != v)

    real_steps = np.median(np.stack([r.passes["step_s"].to_numpy(dtype=np.float64) for r in reals]), axis=0)
    device_steps = np.median(np.stack([(r.passes["step_s"] - r.passes["gap_s"]).to_numpy(dtype=np.float64)
                                       for r in reals]), axis=0)
    sim_steps = step_times(trace, sim.cells["end_s"].to_numpy())
    errors = error_summary(real_steps, sim_steps)
    device_errors = error_summary(device_steps, sim_steps)
    rs = real.summary
    h2d = rs["h2d"]
    row: dict[str, Any] = {
        "label": timed.label(),
        "eviction": timed.eviction,
        "prefetch": timed.prefetch,
        "capacity": cap.text,
        "capacity_bytes": cap.bytes,
        "identical": identical,
        "first_difference": difference or "",
        "timings_meaningful": bool(rs["timings_meaningful"]),
        "rounds": len(reals),
        "real_total_spread": float((totals.max() - totals.min()) / np.median(totals)) if len(reals) > 1 and
        np.median(totals) > 0 else None,
    }
    for key, value in sim_counts.items():
        row[f"real_{key}"] = int(rc[key])
        row[f"sim_{key}"] = int(value)
    row["real_evictions"] = int(rc["evictions"])
    row["sim_evictions"] = int(sim_log.counts()["evictions"])
    row["moved_bytes"] = int(sum(v["bytes"] for v in rs["moved"].values()))
    row["moved_equals_planned"] = bool(rs["moved_equals_planned"])
    row.update({f"step_{k}": v for k, v in errors.items()})
    # the same without host gaps: the hardware model's error apart from Python and policy overhead
    row.update({"device_step_mape": device_errors["mape"], "device_step_mpe": device_errors["mpe"]})
    pairs = {
        "total_s": (rs["time"]["total_s"], s["time"]["total_s"]),
        "step_mean_s": (_mean(real_steps), _mean(sim_steps)),
        "ttft_mean_s": (rs["ttft_s"]["mean"], s["ttft_s"]["mean"]),
        "tpot_mean_s": (rs["tpot_s"]["mean"], s["tpot_s"]["mean"]),
        "stall_s": (rs["time"]["stall_s"], s["time"]["stall_s"]),
        "expert_s": (rs["time"]["expert_s"], s["time"]["expert_s"]),
        "dense_s": (rs["time"]["dense_s"], s["time"]["dense_s"]),
    }
    for key, (r, v) in pairs.items():
        row[f"real_{key}"] = r
        row[f"sim_{key}"] = v
        row[f"err_{key}"] = relative_error(r, v)
    row["real_gap_s"] = rs["time"]["gap_s"]
    row["real_late_prefetch"] = rs["late_prefetch"]  # timing-dependent: informative, not required equal
    row["sim_late_prefetch"] = s["late_prefetch"]
    row["h2d_copies"] = h2d["copies"]
    row["h2d_throughput_Bps"] = h2d["throughput_Bps"]
    row["h2d_median_copy_Bps"] = h2d["median_copy_Bps"]
    row["calibrated_Bps"] = h2d["calibrated_Bps"]
    row["h2d_over_calibrated"] = h2d["throughput_over_calibrated"]
    row["issued_h2d_bytes"] = h2d["bytes"]
    row["nvml_rx_bytes"] = rs["nvml_rx_bytes"]
    row["nvml_over_issued"] = rs["nvml_rx_over_h2d_bytes"]
    row["real_energy_J"] = rs["energy_J"]
    row["sim_energy_J"] = s["energy_j"]["total"]
    steps = pd.DataFrame({
        "label": timed.label(),
        "capacity": cap.text,
        "pass": np.arange(trace.n_passes, dtype=np.int64),
        "phase": [PHASE_NAMES[int(p)] for p in trace.pass_phase],
        "tokens": np.diff(trace.pass_token_offsets).astype(np.int64),
        "real_s": real_steps,
        "real_device_s": device_steps,
        "sim_s": sim_steps,
    })
    steps["error"] = np.where(steps["real_s"] > 0, (steps["sim_s"] - steps["real_s"]) / steps["real_s"], np.nan)
    return row, steps


def _setup(sim: Any, prefetch: bool) -> int:
    """Setup copies (pinned loads before cell 0) are in no cell's column; they are demand copies."""
    plan = sim.plan
    n = plan.n_setup_copies
    return int((plan.copy_prefetch[:n] == prefetch).sum())


def _mean(values: np.ndarray) -> float | None:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else None


SIM_TIE = 1e-9
"""Simulated mean step times within this relative distance are a tie (the same decisions give the same time)."""


def pair_verdicts(labels: list[str], real: list[float], sim: list[float], spread: list[float | None]) -> list[dict]:
    """Every pair of policies: simulated order (or tie), real gap against the run-to-run spread, verdict.

    A pair disagrees only when the simulator orders it strictly, the real gap exceeds the larger of
    the two runs' measured spreads, and the real order is the other one. A simulated tie is a tie
    (its real gap is timing error, reported by MAPE, not a ranking error); a real gap within the
    spread says nothing; without a measured spread (one round) no real gap can be called.
    """
    out = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            a, b = labels[i], labels[j]
            s_gap = (sim[i] - sim[j]) / max(abs(sim[i]), abs(sim[j]), 1e-300)
            r_gap = (real[i] - real[j]) / max(min(real[i], real[j]), 1e-300)
            spreads = [v for v in (spread[i], spread[j]) if v is not None and np.isfinite(v)]
            limit = max(spreads) if spreads else None
            if abs(s_gap) <= SIM_TIE:
                verdict = "sim tie"
            elif limit is None:
                verdict = "spread not measured"
            elif abs(r_gap) <= limit:
                verdict = "within spread"
            elif np.sign(s_gap) == np.sign(r_gap):
                verdict = "agree"
            else:
                verdict = "disagree"
            out.append({"pair": f"{a} vs {b}", "sim_gap": s_gap, "real_gap": r_gap, "spread": limit,
                        "verdict": verdict})
    return out


def rank_policies(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (capacity, prefetch): policies from fastest to slowest mean step time, real vs simulated.

    `same_order` is exact order equality (informative); `ranking_preserved` is the acceptance
    flag: no pair disagrees in the sense of `pair_verdicts` (ties are ties; a disagreement counts
    only beyond the run-to-run spread measured with repeats).
    """
    rows = []
    columns = ["capacity", "prefetch", "policies", "real_order", "sim_order", "kendall_tau", "same_order",
               "smallest_real_gap", "run_to_run_spread", "pairs", "disagreements", "sim_ties", "undecided",
               "ranking_preserved"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    for (cap, prefetch), group in runs.groupby(["capacity", "prefetch"], sort=False):
        labels = group["eviction"].tolist()
        real = group["real_step_mean_s"].astype(float).tolist()
        sim = group["sim_step_mean_s"].astype(float).tolist()
        spread = [None if v is None or pd.isna(v) else float(v) for v in group["real_total_spread"].tolist()]
        real_order, sim_order = ranking(labels, real), ranking(labels, sim)
        ordered = sorted(real)
        gaps = [(b - a) / a for a, b in zip(ordered, ordered[1:]) if a > 0]
        measured = [v for v in spread if v is not None]
        verdicts = pair_verdicts(labels, real, sim, spread)
        kinds = [v["verdict"] for v in verdicts]
        rows.append({"capacity": cap, "prefetch": prefetch, "policies": len(labels),
                     "real_order": " < ".join(real_order), "sim_order": " < ".join(sim_order),
                     "kendall_tau": kendall_tau(real, sim), "same_order": real_order == sim_order,
                     "smallest_real_gap": min(gaps) if gaps else None,
                     "run_to_run_spread": max(measured) if measured else None,
                     "pairs": "; ".join(f"{v['pair']}: {v['verdict']}" for v in verdicts),
                     "disagreements": kinds.count("disagree"), "sim_ties": kinds.count("sim tie"),
                     "undecided": kinds.count("within spread") + kinds.count("spread not measured"),
                     "ranking_preserved": "disagree" not in kinds})
    return pd.DataFrame(rows, columns=columns)


def overall(runs: pd.DataFrame, rankings: pd.DataFrame, trace: Trace, profile: HardwareProfile,
            config: ValidateConfig) -> dict[str, Any]:
    """The verdict: counts identical everywhere, error spread, ranking, acceptance (GPU only)."""
    meaningful = bool(runs["timings_meaningful"].all()) if len(runs) else False
    mape = runs["step_mape"].dropna().astype(float) if len(runs) else pd.Series(dtype=float)
    mpe = runs["step_mpe"].dropna().astype(float) if len(runs) else pd.Series(dtype=float)
    taus = rankings["kendall_tau"].dropna().astype(float) if len(rankings) else pd.Series(dtype=float)
    mismatched_bytes = int((~runs["moved_equals_planned"].astype(bool)).sum()) if len(runs) else 0
    notes = []
    if not meaningful:
        notes.append("timings on CPU are host stamps and mean nothing: only the counts are checked")
    elif str(config.device).startswith("cpu"):
        notes.append("CPU device: step times are measured on this host's CPU (DRAM cache, experts in a file); "
                     "a shared machine's load shows in the run-to-run spread")
    if mismatched_bytes:
        notes.append(f"in {mismatched_bytes} run(s) the executor's experts are not the trace's object size, so "
                     "copies move other bytes than the simulator plans: times are not comparable")
    accept = None
    if meaningful and len(runs):
        accept = {
            "mape_le_10pct": bool((mape <= ACCEPT_MAPE).all()) if len(mape) else False,
            "abs_mpe_le_5pct": bool((mpe.abs() <= ACCEPT_MPE).all()) if len(mpe) else False,
            "ranking_preserved": bool(rankings["ranking_preserved"].all()) if len(rankings) else False,
        }
    return json_ready({
        "format": FORMAT,
        "trace_hash": trace.content_hash(),
        "trace_model": trace.meta.model,
        "profile": profile.name,
        "profile_source": config.profile_source,
        "device": config.device,
        "miss": config.miss,
        "scope": config.scope,
        "runs": int(len(runs)),
        "rounds": max(config.repeats, 1),
        "all_identical": bool(runs["identical"].all()) if len(runs) else True,
        "timings_meaningful": meaningful,
        "note": "; ".join(notes),
        "moved_bytes_match": mismatched_bytes == 0,
        "step_mape": {"mean": _f(mape.mean()), "max": _f(mape.max())},
        "device_step_mape": {"mean": _f(runs["device_step_mape"].astype(float).mean()) if len(runs) else None},
        "step_mpe": {"mean": _f(mpe.mean()), "min": _f(mpe.min()), "max": _f(mpe.max())},
        "kendall_tau_min": _f(taus.min()),
        "rankings_preserved": bool(rankings["ranking_preserved"].all()) if len(rankings) else None,
        "rankings_same_order": bool(rankings["same_order"].all()) if len(rankings) else None,
        "ranking_disagreements": int(rankings["disagreements"].sum()) if len(rankings) else 0,
        "ranking_undecided_pairs": int(rankings["undecided"].sum()) if len(rankings) else 0,
        "acceptance": accept,
    })


def _f(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None
