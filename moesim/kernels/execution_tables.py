"""What an execution measured, as tables and a JSON-ready summary (moesim/kernels/executor.py).

`cells` per cell (seconds from the run's start): start, gate (after the dense part), ready (after
the stall), end, with the cell's decisions counted; `passes` the step time of every pass;
`requests` TTFT/TPOT as the simulator defines them; `copies` every copy with planned and moved
bytes and its measured span; `summary` the totals, the host-link throughput and NVML's window.
GPU path only: imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from moesim.json_values import json_ready
from moesim.kernels.decision_log import DecisionLog
from moesim.kernels.shapes import ExpertShapes
from moesim.kernels.streams import Event
from moesim.kernels.validation_metrics import step_times
from moesim.sim.timed_replay import TimedConfig
from moesim.sim.timed_result import request_table
from moesim.sim.topology import ROUTE_HOST, ROUTE_NAMES
from moesim.traces.format.trace_meta import PHASE_NAMES

FORMAT = "moesim.execution/1"
CPU_NOTE = ("device cpu with a GPU-shaped profile or prefetch: decisions, data movement and outputs are exact; "
            "timings are host stamps and mean nothing")
CPU_DEVICE_NOTE = ("device cpu with a CPU-device profile (experts in a file, DRAM cache) and no prefetch: the CPU "
                   "runs what the simulator models (reads at the gate, then the experts), so step times are measured")


@dataclass
class ExecutionResult:
    """One configuration run on a device: its decisions and what the clock measured.

    `cells` per cell (seconds from the run's start): start, gate (after the dense part), ready
    (after the stall), end; `passes` the step time of every pass; `requests` TTFT/TPOT as the
    simulator defines them; `copies` every copy with planned and moved bytes and its measured span.
    A cell's `gap_s` (and a pass's) is time the device sat idle before it because the host had not
    enqueued it yet: Python and policy overhead, which the simulator does not model.
    """

    config: TimedConfig
    profile: str
    device: str
    backend: str
    shapes: ExpertShapes
    trace_hash: str
    decisions: DecisionLog
    cells: pd.DataFrame
    passes: pd.DataFrame
    requests: pd.DataFrame
    copies: pd.DataFrame
    summary: dict[str, Any]
    outputs: list[np.ndarray] | None = field(default=None, repr=False)
    hazard_log: list[tuple] | None = field(default=None, repr=False)
    checked_cells: int = 0


def build_result(run: Any, t0: Event, nvml: dict[str, Any] | None) -> ExecutionResult:
    """The tables and summary of a finished run (moesim/kernels/executor.py's _Run)."""
    trace = run.trace
    n = trace.n_cells
    times = np.asarray([[t0.seconds_until(e) for e in ev] for ev in run.cell_events], dtype=np.float64)
    times = times.reshape(n, 4)
    start, gate, ready, end = times.T
    decisions = DecisionLog.from_steps(run.setup, run.plans)
    copies = _copy_table(run, t0)
    cells = _cell_table(run, decisions, start, gate, ready, end)
    cells["late_prefetch"] = _late_prefetches(run, copies, gate)
    steps = step_times(trace, end)
    phase = np.asarray([PHASE_NAMES[int(p)] for p in trace.pass_phase], dtype=object)
    gaps = np.bincount(trace.cell_pass(), weights=np.clip(cells["gap_s"].to_numpy(), 0.0, None),
                       minlength=trace.n_passes) if n else np.zeros(trace.n_passes)
    passes = pd.DataFrame({
        "pass": np.arange(trace.n_passes, dtype=np.int64),
        "phase": phase,
        "tokens": np.diff(trace.pass_token_offsets).astype(np.int64),
        "step_s": steps,
        "gap_s": gaps,  # device idle within the step, waiting for the host to enqueue work
    })
    requests = request_table(trace, start, end) if n else pd.DataFrame()
    summary = _summary(run, decisions, cells, copies, passes, requests, nvml)
    return ExecutionResult(
        config=run.config, profile=run.profile.name, device=str(run.dev), backend=run.backend,
        shapes=run.shapes, trace_hash=trace.content_hash(), decisions=decisions, cells=cells, passes=passes,
        requests=requests, copies=copies, summary=summary, outputs=run.outputs,
        hazard_log=run.mover.copies.log, checked_cells=run.checked,
    )

def _cell_table(run: Any, decisions: DecisionLog, start: np.ndarray, gate: np.ndarray, ready: np.ndarray,
                end: np.ndarray) -> pd.DataFrame:
    trace = run.trace
    n = trace.n_cells
    req_cell = run.planner.stream.cell
    out = decisions.outcomes

    def per_cell(mask: np.ndarray) -> np.ndarray:
        return np.bincount(req_cell[mask], minlength=n).astype(np.int64)

    in_cell = decisions.copy_cell >= 0
    cell_of = np.where(in_cell, decisions.copy_cell, 0)
    previous_end = np.concatenate(([0.0], end[:-1])) if n else end
    columns: dict[str, Any] = {
        "pass": trace.cell_pass().astype(np.int64),
        "layer": trace.cell_layer.astype(np.int64),
        "tokens": trace.cell_tokens.astype(np.int64),
        "start_s": start, "gate_s": gate, "ready_s": ready, "end_s": end,
        "dense_s": gate - start, "stall_s": ready - gate, "expert_s": end - ready,
        "cpu_s": np.asarray(run.cell_cpu_s, dtype=np.float64),
        "gap_s": start - previous_end,
        "hits": per_cell(out <= 1),
        "misses": per_cell(out >= 2),
        "compulsory": per_cell(out == 2),
        "capacity": per_cell(out == 3),
        "collision": per_cell(out == 4),
        "demand_copies": np.bincount(cell_of[in_cell & ~decisions.copy_prefetch], minlength=n).astype(np.int64),
        "prefetch_copies": np.bincount(cell_of[in_cell & decisions.copy_prefetch], minlength=n).astype(np.int64),
    }
    for r, name in enumerate(ROUTE_NAMES):
        sel = in_cell & (decisions.copy_route == r)
        if sel.any():
            columns[f"bytes_{name}"] = np.bincount(cell_of[sel], weights=decisions.copy_bytes[sel],
                                                   minlength=n).astype(np.int64)
    return pd.DataFrame(columns)

def _late_prefetches(run: Any, copies: pd.DataFrame, gate: np.ndarray) -> np.ndarray:
    """Per cell: prefetch copies it waited for that had not landed at its gate (the simulator's `late`)."""
    end = copies["end_s"].to_numpy()
    prefetch = copies["prefetch"].to_numpy(dtype=bool)
    late = np.zeros(len(run.plans), dtype=np.int64)
    for c, plan in enumerate(run.plans):
        late[c] = sum(1 for k in plan.waits if prefetch[k] and end[k] > gate[c])
    return late

def _copy_table(run: Any, t0: Event) -> pd.DataFrame:
    rows = []
    for row in run.mover.copy_rows:
        start, end = row.pop("start"), row.pop("end")
        row["start_s"] = t0.seconds_until(start) if start is not None else float("nan")
        row["end_s"] = t0.seconds_until(end) if end is not None else float("nan")
        row["copy_s"] = start.seconds_until(end) if start is not None else float("nan")
        rows.append(row)
    columns = ["copy", "cell", "obj", "route", "prefetch", "resident", "planned_bytes", "moved_bytes",
               "host_read_s", "start_s", "end_s", "copy_s"]
    return pd.DataFrame(rows, columns=columns)

def _summary(run: Any, decisions: DecisionLog, cells: pd.DataFrame, copies: pd.DataFrame, passes: pd.DataFrame,
             requests: pd.DataFrame, nvml: dict[str, Any] | None) -> dict[str, Any]:
    moved: dict[str, dict[str, int]] = {}
    for name, group in copies.groupby("route", sort=True):
        moved[str(name)] = {"copies": int(len(group)), "bytes": int(group["moved_bytes"].sum())}
    h2d = copies[(copies["route"] == ROUTE_NAMES[ROUTE_HOST]) & copies["copy_s"].notna()]
    busy = float(h2d["copy_s"].sum()) if len(h2d) else 0.0
    per_copy = (h2d["moved_bytes"] / h2d["copy_s"]).replace([np.inf, -np.inf], np.nan).dropna()
    calibrated = run.topology.host_bandwidth or None
    throughput = float(h2d["moved_bytes"].sum()) / busy if busy > 0 else None
    window = (nvml or {}).get("window") or {}
    rx = window.get("pcie_rx_bytes")
    total_s = float(cells["end_s"].iloc[-1]) if len(cells) else 0.0
    steps = passes["step_s"].dropna().to_numpy()
    summary: dict[str, Any] = {
        "format": FORMAT,
        "label": run.config.label(),
        "config": run.config.to_dict(),
        "profile": run.profile.name,
        "device": str(run.dev),
        "device_name": torch.cuda.get_device_name(run.dev) if run.cuda else "cpu",
        "backend": run.backend,
        "shapes": {**asdict(run.shapes), "expert_bytes": run.shapes.expert_bytes},
        "timings_meaningful": run.cuda or run.cpu_device_timed,
        "note": "" if run.cuda else (CPU_DEVICE_NOTE if run.cpu_device_timed else CPU_NOTE),
        "decisions": decisions.counts(),
        "late_prefetch": int(cells["late_prefetch"].sum()) if len(cells) else 0,
        "moved": moved,
        "moved_equals_planned": bool((copies["moved_bytes"] == copies["planned_bytes"]).all()),
        "time": {
            "total_s": total_s,
            "dense_s": float(cells["dense_s"].sum()),
            "stall_s": float(cells["stall_s"].sum()),
            "expert_s": float(cells["expert_s"].sum()),
            "cpu_s": float(cells["cpu_s"].sum()),
            "gap_s": float(cells["gap_s"].clip(lower=0).sum()),
        },
        "step_s": _stats(steps),
        "ttft_s": _stats(requests["ttft_s"].to_numpy() if len(requests) else np.zeros(0)),
        "tpot_s": _stats(requests["tpot_s"].to_numpy() if len(requests) else np.zeros(0)),
        "h2d": {
            "copies": int(len(h2d)),
            "bytes": int(h2d["moved_bytes"].sum()),
            "busy_s": busy,
            "throughput_Bps": throughput,
            "median_copy_Bps": float(per_copy.median()) if len(per_copy) else None,
            "calibrated_Bps": calibrated,
            "throughput_over_calibrated": throughput / calibrated if throughput and calibrated else None,
        },
        "nvml": nvml,
        "nvml_rx_bytes": rx,
        "nvml_rx_over_h2d_bytes": (rx / float(h2d["moved_bytes"].sum())) if rx and len(h2d) else None,
        "energy_J": window.get("energy_J"),
        "checked_cells": run.checked,
    }
    return json_ready(summary)


def _stats(values: np.ndarray) -> dict[str, float | None]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "max": float(v.max())}
