"""Predict a measured run with the simulator and compare step by step (`moesim check-run`).

    check = check_run(run, trace, "phone-oneplus-15r")
    check.steps        # per decode step: measured and predicted wall, bytes, hits, error
    check.summary      # TPOT mean/median/p90 both ways, TTFT vs measured prefill, bytes/hits agreement

Measured step i is the trace's i-th decode pass. Bytes: the simulator's copies per pass with the
O_DIRECT padding rule (moesim/runs/padding.py) against read_bytes. Hits: the simulator's hits per
pass against the run's own (differenced from its cumulative %, moesim/runs/hits.py; within the
rounding bound counts as equal) and, where the trace carries it, the engine's residency column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.runs.engine_map import Setup, pass_bookkeeping
from moesim.runs.hits import estimate_prefill_lookups, hit_tolerance, per_step_hits
from moesim.runs.measured import MeasuredRun
from moesim.runs.padding import SLICE_SIZES, expected_read_bytes, fit_slice_padding
from moesim.sim.timed_replay import timed_replay
from moesim.traces.format.trace_meta import DECODE
from moesim.traces.format.trace import Trace


@dataclass
class CheckResult:
    run: str
    trace: str
    trace_kind: str  # "the run's own" | "same model and k" | "timing-only from the run"
    setup: dict[str, Any]
    steps: pd.DataFrame
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "trace": self.trace, "trace_kind": self.trace_kind, "setup": self.setup,
                "summary": self.summary, "notes": self.notes}


def _stats(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(x)), "median": float(np.median(x)), "p90": float(np.quantile(x, 0.9))}


def _err(pred: float, meas: float) -> float | None:
    return None if not meas else float(pred / meas - 1.0)


def _components(table: pd.DataFrame, overlap: bool) -> dict[str, dict[str, float | None]]:
    """Mean seconds per step of each part, measured beside predicted: where a miss comes from.

    Waiting for reads is the engine's stall under overlap and its read time (io) when serial; the
    simulator's is its stall either way. Cache bookkeeping: mgmt_per_byte x bytes read (0 when not given).
    """
    def mean(col: str) -> float | None:
        values = table[col].to_numpy(dtype=float) if col in table else np.array([np.nan])
        return None if not np.isfinite(values).all() else float(values.mean())

    wait = mean("stall_s_measured") if overlap else mean("io_s_measured")
    return {"compute": {"measured": mean("compute_s_measured"), "predicted": mean("compute_s_predicted")},
            "waiting for reads": {"measured": wait, "predicted": mean("stall_s_predicted")},
            "cache bookkeeping": {"measured": mean("mgmt_s_measured"), "predicted": mean("mgmt_s_predicted")}}


def decode_miss_counts(trace: Trace, miss: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """counts[layer, step, expert] of the accesses flagged in `miss` in the decode passes `dec`."""
    step_of_pass = np.full(trace.n_passes, -1)
    step_of_pass[dec] = np.arange(dec.size)
    cell = trace.access_cell()[miss]
    step = step_of_pass[trace.cell_pass()[cell]]
    keep = step >= 0
    counts = np.zeros((trace.meta.n_layers, dec.size, trace.meta.n_experts))
    np.add.at(counts, (trace.cell_layer[cell[keep]].astype(np.int64), step[keep], trace.expert[miss][keep]), 1)
    return counts


def check_run(run: MeasuredRun, trace: Trace, trace_name: str, trace_kind: str, setup: Setup, slices: int,
              prefill_lookups: int | None = None, arch: str | None = None, mgmt_per_byte: float = 0.0) -> CheckResult:
    """`mgmt_per_byte`: seconds of cache bookkeeping per byte read (the engine's mgmt_ms: copying each read
    out of its lane's bounce buffer into the expert's place, fitted by fit-profile), added to each pass's
    wall time as the fit's step model adds it (moesim/runs/step_model.py); 0 leaves it out."""
    k = run.config.top_k or trace.meta.top_k
    if run.config.top_k and trace.meta.top_k and run.config.top_k != trace.meta.top_k:
        raise UserError(f"the run used k={run.config.top_k} but the trace routes k={trace.meta.top_k}; give a trace "
                        "of the same k or --trace from-run", trace_name)
    result = timed_replay(trace, setup.profile, setup.timed)
    cells = result.cells
    per_pass = cells.groupby("pass")
    duration = (cells["end_s"] - cells["start_s"]).groupby(cells["pass"]).sum().to_numpy()
    mgmt = pass_bookkeeping(cells, trace.n_passes, mgmt_per_byte)
    duration = duration + mgmt
    decode = np.flatnonzero(trace.pass_phase == DECODE)
    n = min(decode.size, run.n_steps)
    if n == 0:
        raise UserError("the trace has no decode passes", trace_name)
    notes = list(setup.approximations)
    if trace_kind.startswith("timing-only"):
        notes.append("timing-only trace: its per-step misses and bytes were built from this run's, so bytes and hits "
                     "agree by construction; only the times are predictions")
    if decode.size != run.n_steps:
        notes.append(f"the trace has {decode.size} decode passes and the run {run.n_steps} steps: compared the first {n}")
    dec = decode[:n]
    plan = result.plan
    issued = (plan.copy_cell >= 0) & ~result.engine.copy_cancelled
    copy_pass = trace.cell_pass()[plan.copy_cell[issued]]
    layer_of_copy = trace.cell_layer[plan.copy_cell[issued]]
    padded = expected_read_bytes(plan.copy_bytes[issued], slices).astype(np.float64)
    pred_bytes = np.bincount(copy_pass, weights=padded, minlength=trace.n_passes)[dec]
    hits = per_pass["hits"].sum().to_numpy()[dec].astype(np.float64)
    requests = per_pass["requests"].sum().to_numpy()
    del layer_of_copy
    steps = run.steps.iloc[:n].reset_index(drop=True)
    meas_wall = steps["wall_s"].to_numpy(dtype=float)
    pred_wall = duration[dec]
    table = pd.DataFrame({"step": steps["step"], "wall_s_measured": meas_wall, "wall_s_predicted": pred_wall,
                          "error": pred_wall / meas_wall - 1.0,
                          "read_bytes_measured": steps["read_bytes"], "read_bytes_predicted": pred_bytes,
                          "hits_predicted": hits})
    for col in ("io_s", "compute_s", "stall_s", "mgmt_s"):
        table[f"{col}_measured"] = steps[col].to_numpy(dtype=float)
    stall = cells["stall_s"].groupby(cells["pass"]).sum().to_numpy()[dec]
    compute = cells["compute_s"].groupby(cells["pass"]).sum().to_numpy()[dec]
    table["stall_s_predicted"] = stall
    table["mgmt_s_predicted"] = mgmt[dec]
    table["compute_s_predicted"] = compute
    summary: dict[str, Any] = {"steps": int(n)}

    # hits: differenced from the cumulative %, and the engine's own residency column
    hit_pct = run.hit_pct_cumulative
    per_step = int(k * trace.meta.n_layers) if k else None
    if hit_pct is not None and (hit_pct >= 0).all() and per_step:
        if prefill_lookups is None:
            if trace_kind == "the run's own":
                prefill_lookups = int(requests[trace.pass_phase != DECODE].sum())
            else:
                upper = int((run.config.n_prompt or 64) * per_step)
                prefill_lookups = estimate_prefill_lookups(hit_pct.to_numpy(), per_step, upper)
        measured_hits = per_step_hits(hit_pct.to_numpy(), per_step, prefill_lookups)[:n]
        tol = hit_tolerance(len(hit_pct), per_step, prefill_lookups)[:n]
        table["hits_measured"] = measured_hits
        table["hits_tolerance"] = tol
        agree = np.abs(hits - measured_hits) <= tol + 1e-9
        summary["hits"] = {"prefill_lookups": int(prefill_lookups), "steps_within_rounding": int(agree.sum()),
                           "max_abs_diff": float(np.max(np.abs(hits - measured_hits)))}
    residency = trace.annotations.get("engine_residency")
    if residency is not None and trace_kind == "the run's own":
        engine_hits = np.bincount(trace.access_cell()[residency > 0], minlength=trace.n_cells)
        engine_pass = np.bincount(trace.cell_pass(), weights=engine_hits, minlength=trace.n_passes)[dec]
        table["hits_engine_residency"] = engine_pass
        summary.setdefault("hits", {})["steps_equal_to_residency"] = int((engine_pass == hits).sum())
        # the engine's own misses with the padding rule: where the rule itself is checked
        miss = residency == 0
        obj_bytes = trace.object_bytes_array()[trace.object_ids()[miss]]
        rec = np.bincount(trace.cell_pass()[trace.access_cell()[miss]],
                          weights=expected_read_bytes(obj_bytes, slices).astype(np.float64), minlength=trace.n_passes)
        table["read_bytes_engine_misses"] = rec[dec]
        meas = steps["read_bytes"].to_numpy(dtype=float)
        summary["bytes_engine_misses"] = {"steps_exact": int((rec[dec] == meas).sum()),
                                          "max_abs_diff": float(np.max(np.abs(rec[dec] - meas)))}
        if arch in SLICE_SIZES:
            counts = decode_miss_counts(trace, miss, dec)
            sizes = [SLICE_SIZES[arch](b) for b in trace.meta.object_bytes]
            _, exact = fit_slice_padding(counts, meas, sizes)
            summary["bytes_engine_misses"]["steps_exact_with_slice_offsets"] = exact

    meas_bytes = steps["read_bytes"].to_numpy(dtype=float)
    if np.isfinite(meas_bytes).all() and meas_bytes.sum() > 0:
        diff = pred_bytes - meas_bytes
        summary["bytes"] = {"steps_exact": int((diff == 0).sum()), "max_abs_diff": float(np.max(np.abs(diff))),
                            "max_rel_diff": float(np.max(np.abs(diff) / np.maximum(meas_bytes, 1))),
                            "total_measured": float(meas_bytes.sum()), "total_predicted": float(pred_bytes.sum())}
    m, p = _stats(meas_wall), _stats(pred_wall)
    summary["tpot_s"] = {"measured": m, "predicted": p, "error": {key: _err(p[key], m[key]) for key in m}}
    err = table["error"].to_numpy()
    summary["per_step_error"] = {"mean_abs": float(np.mean(np.abs(err))), "median_abs": float(np.median(np.abs(err))),
                                 "p90_abs": float(np.quantile(np.abs(err), 0.9))}
    summary["components_s"] = _components(table, bool(run.config.overlap))
    ttft = float(duration[trace.pass_phase != DECODE].sum())
    if run.config.prefill_s:
        summary["ttft_s"] = {"measured_prefill": float(run.config.prefill_s), "predicted": ttft,
                             "error": _err(ttft, float(run.config.prefill_s))}
    else:
        summary["ttft_s"] = {"measured_prefill": None, "predicted": ttft, "error": None}
    setup_info = {"profile": setup.profile.name, "overrides": list(setup.overrides),
                  "capacity_bytes": setup.timed.capacity_bytes, "config": run.config.to_dict()}
    return CheckResult(run.name, trace_name, trace_kind, setup_info, table, summary, notes)
