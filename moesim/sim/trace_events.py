"""A timed run's timeline as Chrome trace-event JSON (open it in https://ui.perfetto.dev or chrome://tracing).

    write_trace_events(timed_result, "run.trace.json")      # also: moesim replay ... --trace-events FILE

Layout (one process per resource kind, one thread per lane; timestamps in microseconds):
- process "compute", thread "compute stream": per cell a "dense" slice (attention and other
  non-expert work), a "stall" slice (waiting at the gate for copies, cat "stall") and an "experts"
  slice (cat "compute"); each carries its pass, layer and phase in args;
- process "passes": one slice per forward pass (prefill / decode), so a step's length reads at once;
- process "copies", one thread per copy engine of the host link ("h2d engine 0") or per SSD queue
  slot ("ssd_h queue 0"): every copy that ran, cat "prefetch", "demand" or "preload" (pinned loads
  before the first cell), with its bytes, object and issuing cell.
The format is the JSON Object Format of the Trace Event Format (complete events, ph "X", and
metadata events, ph "M"); see docs/metrics.md for what each duration means.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from moesim.atomic_io import write_text_atomic
from moesim.sim.topology import ROUTE_HOST

US = 1e6
PID_COMPUTE, PID_PASSES, PID_COPIES = 1, 2, 3


def _meta(pid: int, tid: int | None, kind: str, name: str) -> dict[str, Any]:
    event: dict[str, Any] = {"ph": "M", "pid": pid, "name": kind, "args": {"name": name}}
    if tid is not None:
        event["tid"] = tid
    return event


def _slice(name: str, cat: str, start_s: float, dur_s: float, pid: int, tid: int, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "cat": cat, "ph": "X", "ts": round(start_s * US, 3), "dur": round(max(dur_s, 0.0) * US, 3),
            "pid": pid, "tid": tid, "args": args}


def trace_events(result: Any) -> dict[str, Any]:
    """The JSON object (traceEvents + metadata) of one TimedResult."""
    from moesim.reports.adapters import assign_engines

    cells = result.cells
    plan, engine = result.plan, result.engine
    trace, topo = plan.trace, plan.topology
    events: list[dict[str, Any]] = [
        _meta(PID_COMPUTE, None, "process_name", "compute"),
        _meta(PID_COMPUTE, 0, "thread_name", "compute stream"),
        _meta(PID_PASSES, None, "process_name", "passes"),
        _meta(PID_PASSES, 0, "thread_name", "forward passes"),
        _meta(PID_COPIES, None, "process_name", "copies"),
    ]
    start = cells["start_s"].to_numpy(float)
    dense = cells["dense_s"].to_numpy(float)
    stall = cells["stall_s"].to_numpy(float)
    end = cells["end_s"].to_numpy(float)
    passes = cells["pass"].to_numpy()
    layers = cells["layer"].to_numpy()
    phases = cells["phase"].to_numpy()
    for c in range(len(cells)):
        args = {"pass": int(passes[c]), "layer": int(layers[c]), "phase": str(phases[c])}
        events.append(_slice(f"dense L{layers[c]}", "compute", start[c], dense[c], PID_COMPUTE, 0, args))
        if stall[c] > 0:
            events.append(_slice(f"stall L{layers[c]}", "stall", start[c] + dense[c], stall[c], PID_COMPUTE, 0, args))
        expert_start = start[c] + dense[c] + stall[c]
        events.append(_slice(f"experts L{layers[c]}", "compute", expert_start, end[c] - expert_start,
                             PID_COMPUTE, 0, args))
    offsets = trace.pass_cell_offsets
    for p in range(trace.n_passes):
        lo, hi = int(offsets[p]), int(offsets[p + 1])
        if hi > lo:
            phase = str(phases[lo])
            events.append(_slice(f"{phase} pass {p}", phase, start[lo], end[hi - 1] - start[lo], PID_PASSES, 0,
                                 {"pass": p, "cells": hi - lo}))

    ran = ~np.asarray(engine.copy_cancelled, dtype=bool)
    c_start = np.asarray(engine.copy_start, dtype=float)
    c_end = np.asarray(engine.copy_end, dtype=float)
    host = np.asarray(plan.copy_route) == ROUTE_HOST
    lanes: dict[str, np.ndarray] = {}
    if topo.host_link is not None:
        lanes[f"{topo.host_link} engine"] = np.flatnonzero(host & ran)
    if topo.ssd_link is not None:
        lanes[f"{topo.ssd_link} queue"] = np.flatnonzero(~host & ran)
    servers = {f"{topo.host_link} engine": topo.host_engines, f"{topo.ssd_link} queue": topo.ssd_slots}
    tid = 0
    obj_layer = trace.object_layer_array()
    n_experts = trace.meta.n_experts
    for lane, idx in lanes.items():
        if idx.size == 0:
            continue
        slot = assign_engines(c_start[idx], c_end[idx], servers[lane])
        for k in range(int(slot.max()) + 1):
            events.append(_meta(PID_COPIES, tid + k, "thread_name", f"{lane} {k}"))
        for i, s in zip(idx.tolist(), slot.tolist()):
            obj = int(plan.copy_obj[i])
            cell = int(plan.copy_cell[i])
            cat = "preload" if cell < 0 else ("prefetch" if bool(plan.copy_prefetch[i]) else "demand")
            layer = int(obj_layer[obj])
            events.append(_slice(f"{cat} L{layer} E{obj - layer * n_experts}", cat, c_start[i], c_end[i] - c_start[i],
                                 PID_COPIES, tid + s, {"bytes": int(plan.copy_bytes[i]), "object": obj,
                                                       "issued_by_cell": cell}))
        tid += int(slot.max()) + 1
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"generator": "moesim", "label": result.summary.get("label"),
                          "profile": result.summary.get("profile")}}


def write_trace_events(result: Any, path: str) -> dict[str, Any]:
    data = trace_events(result)
    write_text_atomic(path, json.dumps(data, separators=(",", ":")))
    return data
