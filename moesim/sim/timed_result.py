"""Timed results: per cell (pass x layer), per request and per run, with both bounds beside them.

Definitions are in docs/metrics.md ("Timing"). In short:
- a cell's time = dense + stall (waiting at its gate for copies) + max(device experts, CPU path);
  `cpu_wait_s` is the part of the expert phase the device spends waiting for the CPU path;
- TTFT of a request = end of the pass that makes its first token (its last prefill pass, else its
  first decode pass) - start of its first pass (the trace has no arrival times: a request arrives
  when the engine first serves it, which is t = 0 for requests of the first pass);
- TPOT = (end of its last decode pass - end of its first-token pass) / its later decode passes;
- hit_rate = on-time hits / cell lookups (a late prefetch is reported beside it, never inside it);
  hit_rate_per_access weighs each lookup by the routed accesses (tokens) it served;
- energy = sum over links of bytes x J/byte + each processor's active_watts x its compute time +
  its idle_watts x the rest of [0, total_s] (a copy alone does not make a processor active).
Results are written as run files (moesim/reports/run_results.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from moesim.json_values import json_ready
from moesim.hw_profiles.profile import HardwareProfile
from moesim.sim.bounds import Bounds
from moesim.sim.cache_core import HIT, MISS_CAPACITY, MISS_COLLISION, MISS_COMPULSORY
from moesim.sim.engine import EngineOutput
from moesim.sim.plan import Plan
from moesim.traces.format.trace_meta import DECODE, PHASE_NAMES, PREFILL

FORMAT = "moesim.timed_result/1"


@dataclass
class TimedResult:
    """One timed replay: tables, totals, bounds and everything needed to reproduce it."""

    config: Any  # moesim.sim.timed_replay.TimedConfig
    profile: HardwareProfile
    trace_hash: str
    model_source: str
    cells: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    plan: Plan = field(repr=False)
    engine: EngineOutput = field(repr=False)
    bounds: Bounds | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CellTimes:
    """Static compute figures per cell (seconds), from the cost model."""

    dense: np.ndarray
    expert: np.ndarray  # device experts actually run
    cpu_path: np.ndarray  # host-CPU path incl. activation transfers (0 where none)
    cpu_compute: np.ndarray  # CPU expert time alone
    activation_bytes: np.ndarray  # bytes moved each way for the CPU path


def build_result(
    config: Any,
    profile: HardwareProfile,
    plan: Plan,
    times: CellTimes,
    engine: EngineOutput,
    copy_duration: np.ndarray,
    bounds: Bounds | None,
    model_source: str,
) -> TimedResult:
    trace = plan.trace
    topo = plan.topology
    n_cells = trace.n_cells
    stream = plan.stream
    expert_eff = np.maximum(times.expert, times.cpu_path)
    cell_time = times.dense + engine.stall + expert_eff
    end = np.cumsum(cell_time)
    start = end - cell_time
    gate = start + times.dense
    cpu_wait = expert_eff - times.expert

    # outcomes per cell
    def per_cell(mask: np.ndarray) -> np.ndarray:
        return np.bincount(stream.cell[mask], minlength=n_cells).astype(np.int64)

    out = plan.outcomes
    hits_all = per_cell(out == HIT)
    compulsory = per_cell(out == MISS_COMPULSORY)
    capacity = per_cell(out == MISS_CAPACITY)
    collision = per_cell(out == MISS_COLLISION)
    bypasses = per_cell(plan.bypassed)
    late = engine.late

    # copies per cell and link
    ran = ~engine.copy_cancelled
    issued_in = plan.copy_cell >= 0
    cell_of_copy = np.where(issued_in, plan.copy_cell, 0)
    links = _links_used(plan)
    columns: dict[str, np.ndarray] = {
        "pass": trace.cell_pass().astype(np.int64),
        "layer": trace.cell_layer.astype(np.int64),
        "phase": np.asarray([PHASE_NAMES[int(x)] for x in trace.pass_phase])[trace.cell_pass()]
        if n_cells else np.zeros(0, dtype=object),
        "tokens": trace.cell_tokens.astype(np.int64),
        "start_s": start,
        "gate_s": gate,
        "end_s": end,
        "dense_s": times.dense,
        "expert_s": times.expert,
        "cpu_s": times.cpu_path,
        "compute_s": times.dense + times.expert,
        "stall_s": engine.stall,
        "cpu_wait_s": cpu_wait,
        "requests": np.diff(stream.cell_offsets).astype(np.int64),
        "hits": hits_all - late,
        "late_prefetch": late,
        "misses": compulsory + capacity + collision,
        "compulsory": compulsory,
        "capacity": capacity,
        "collision": collision,
        "bypasses": bypasses,
        "prefetch_copies": np.bincount(cell_of_copy[issued_in & plan.copy_prefetch], minlength=n_cells).astype(np.int64),
        "demand_copies": np.bincount(cell_of_copy[issued_in & ~plan.copy_prefetch], minlength=n_cells).astype(np.int64),
        "altered": plan.altered,
    }
    link_totals: dict[str, dict[str, float]] = {}
    for name, mask in links.items():
        sel = mask & ran & issued_in
        columns[f"bytes_{name}"] = np.bincount(cell_of_copy[sel], weights=plan.copy_bytes[sel], minlength=n_cells).astype(np.int64)
        columns[f"copy_s_{name}"] = np.bincount(cell_of_copy[sel], weights=copy_duration[sel], minlength=n_cells)
        all_sel = mask & ran
        link_totals[name] = {"bytes": int(plan.copy_bytes[all_sel].sum()), "copies": int(all_sel.sum()),
                             "busy_s": _busy_union(engine.copy_start[all_sel], engine.copy_end[all_sel])}
    act = times.activation_bytes
    if act.any():
        for name in sorted({link.name for link in topo.cpu_links if link is not None}):
            key = f"bytes_{name}"
            columns[key] = columns.get(key, np.zeros(n_cells, dtype=np.int64)) + act.astype(np.int64)
            entry = link_totals.setdefault(name, {"bytes": 0, "copies": 0, "busy_s": 0.0})
            entry["bytes"] += int(act.sum())
    cells = pd.DataFrame(columns)

    total_s = float(end[-1]) if n_cells else 0.0
    requests = _request_table(trace, start, end, bounds)
    late_request = _late_requests(plan, engine)
    summary = _summary(config, profile, plan, cells, requests, engine, link_totals, total_s, late_request, bounds,
                       model_source)
    return TimedResult(config=config, profile=profile, trace_hash=trace.content_hash(), model_source=model_source,
                       cells=cells, requests=requests, summary=summary, plan=plan, engine=engine, bounds=bounds)


def _links_used(plan: Plan) -> dict[str, np.ndarray]:
    """Copy mask per link name (the links the plan's route roles take), in route order."""
    out: dict[str, np.ndarray] = {}
    for route, name in plan.topology.link_names().items():
        mask = plan.copy_route == route
        out[name] = out[name] | mask if name in out else mask
    return out


def _busy_union(start: np.ndarray, end: np.ndarray) -> float:
    """Seconds during which at least one of the intervals is open (a link is busy)."""
    if start.size == 0:
        return 0.0
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    reach = np.maximum.accumulate(e)
    gaps = np.maximum(s[1:] - reach[:-1], 0.0)
    return float(reach[-1] - s[0] - gaps.sum())


def request_table(trace: Any, cell_start: np.ndarray, cell_end: np.ndarray) -> pd.DataFrame:
    """TTFT, TPOT and tokens/s of every request from per-cell start and end times (no bounds).

    The real-GPU executor uses it on measured times, so both layers define the metrics alike.
    """
    return _request_table(trace, cell_start, cell_end, None)


def _request_table(trace: Any, cell_start: np.ndarray, cell_end: np.ndarray, bounds: Bounds | None) -> pd.DataFrame:
    """TTFT, TPOT and tokens/s of every request (sequence) in the trace."""
    n_p = trace.n_passes
    offsets = trace.pass_cell_offsets
    has_cells = np.diff(offsets) > 0
    # pass start/end from its cells (an empty pass takes no time)
    pass_end = np.zeros(n_p)
    pass_start = np.zeros(n_p)
    if trace.n_cells:
        last = np.maximum(offsets[1:] - 1, 0)
        first = np.minimum(offsets[:-1], trace.n_cells - 1)
        pass_end = np.where(has_cells, cell_end[last], 0.0)
        pass_start = np.where(has_cells, cell_start[first], 0.0)
        # empty passes sit at the end of the previous one
        filled = np.maximum.accumulate(np.where(has_cells, np.arange(n_p), -1))
        pass_end = np.where(filled >= 0, pass_end[np.maximum(filled, 0)], 0.0)
        pass_start = np.where(has_cells, pass_start, pass_end)
    pairs = request_passes(trace)
    ideal_pass_end = None
    if bounds is not None and trace.n_cells:
        last = np.maximum(offsets[1:] - 1, 0)
        ideal_pass_end = np.where(has_cells, bounds.ideal_cell_end[last], 0.0)
    rows = []
    phase = trace.pass_phase
    boundaries = np.flatnonzero(np.diff(pairs[:, 0])) + 1 if len(pairs) else np.zeros(0, np.int64)
    for group in np.split(pairs, boundaries) if len(pairs) else []:
        r = int(group[0, 0])
        passes = group[:, 1]
        prefill = passes[phase[passes] == PREFILL]
        decode = passes[phase[passes] == DECODE]
        first_pass = int(passes[0])
        tt = int(prefill[-1]) if prefill.size else int(decode[0])
        later = decode[decode > tt]
        last_pass = int(passes[-1])
        ttft = float(pass_end[tt] - pass_start[first_pass])
        tpot = float((pass_end[int(later[-1])] - pass_end[tt]) / later.size) if later.size else float("nan")
        e2e = float(pass_end[last_pass] - pass_start[first_pass])
        out_tokens = 1 + int(later.size)
        row = {
            "request": r,
            "first_pass": first_pass,
            "first_token_pass": tt,
            "decode_passes": int(later.size),
            "output_tokens": out_tokens,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "tokens_per_s": out_tokens / e2e if e2e > 0 else float("nan"),
        }
        if bounds is not None:
            ttft_b = bounds.interval_bound(first_pass, tt)
            if first_pass == 0 and ideal_pass_end is not None:
                ttft_b = max(ttft_b, float(ideal_pass_end[tt]))
            row["ttft_bound_s"] = ttft_b
            row["tpot_bound_s"] = (bounds.interval_bound(tt + 1, int(later[-1])) / later.size
                                   if later.size else float("nan"))
        rows.append(row)
    columns = ["request", "first_pass", "first_token_pass", "decode_passes", "output_tokens", "ttft_s", "tpot_s",
               "e2e_s", "tokens_per_s"] + (["ttft_bound_s", "tpot_bound_s"] if bounds is not None else [])
    return pd.DataFrame(rows, columns=columns)


TOKEN_CHUNK = 1 << 19
"""Pass-tokens read at a time by request_passes (about 20 MB of temporaries)."""


def request_passes(trace: Any, chunk_tokens: int = TOKEN_CHUNK) -> np.ndarray:
    """Every distinct (request, pass) pair of the trace's pass-tokens, sorted, as an int64 [n, 2]
    array; built a chunk of tokens at a time (a long prompt's pass holds millions of tokens, and a
    pair table per token would cost 16 bytes each before its sort)."""
    n_p, offsets = trace.n_passes, np.asarray(trace.pass_token_offsets, dtype=np.int64)
    keys = []
    for lo in range(0, trace.n_tokens, max(int(chunk_tokens), 1)):
        hi = min(lo + max(int(chunk_tokens), 1), trace.n_tokens)
        token_pass = np.searchsorted(offsets, np.arange(lo, hi, dtype=np.int64), side="right") - 1
        # request-major key: ordered as (request, pass) since 0 <= pass < n_p
        keys.append(np.unique(trace.token_request[lo:hi].astype(np.int64) * n_p + token_pass))
    if not keys:
        return np.zeros((0, 2), np.int64)
    key = np.unique(np.concatenate(keys))
    request = np.floor_divide(key, n_p)
    return np.stack([request, key - request * n_p], axis=1)


def _late_requests(plan: Plan, engine: EngineOutput) -> np.ndarray:
    """Per request: a hit whose prefetch copy the cell stalled for (a late prefetch, not an on-time hit)."""
    stream = plan.stream
    late = np.zeros(stream.n_requests, dtype=bool)
    w = np.flatnonzero(engine.late_wait)
    if w.size == 0:
        return late
    wait_cell = np.repeat(np.arange(plan.trace.n_cells, dtype=np.int64), np.diff(plan.wait_offsets))
    n_obj = int(max(stream.obj.max(initial=0), plan.copy_obj.max(initial=0))) + 1
    late_keys = wait_cell[w] * n_obj + plan.copy_obj[plan.waits[w]].astype(np.int64)
    keys = stream.cell.astype(np.int64) * n_obj + stream.obj.astype(np.int64)
    return np.isin(keys, late_keys) & (plan.outcomes == HIT)


def _dense_on_cpu(config: Any) -> bool:
    """Whether the run's placement put the non-expert work on the CPU (cpu-only)."""
    from moesim.policies.placement import non_expert_on_cpu, parse_placement

    return non_expert_on_cpu(parse_placement(getattr(config, "placement", None) or "gpu"))


def _energy(profile: HardwareProfile, cells: pd.DataFrame, link_energy: dict[str, float],
            total_s: float, dense_on_cpu: bool = False) -> dict[str, Any]:
    """Each processor's active power while it computes, its idle power for the rest, plus J/B per link.

    The expert processor falls back to the profile's `power` figures; another processor without a
    figure draws nothing (listed under `unpowered`, so the total is not mistaken for complete).
    """
    device = profile.device
    busy = {device.name: float(cells["compute_s"].sum())}
    cpu = profile.processors.get("cpu")
    if cpu is not None and cpu.name != device.name:
        busy[cpu.name] = float(cells["cpu_s"].sum())
        if dense_on_cpu:  # cpu-only: the non-expert work ran on the CPU, not the device
            busy[device.name] -= float(cells["dense_s"].sum())
            busy[cpu.name] += float(cells["dense_s"].sum())
    processors: dict[str, dict[str, float]] = {}
    unpowered = []
    for name, busy_s in busy.items():
        proc = profile.processors[name]
        own = name == device.name
        active_w = proc.active_watts if proc.active_watts is not None else (profile.power.active_watts if own else None)
        idle_w = proc.idle_watts if proc.idle_watts is not None else (profile.power.idle_watts if own else None)
        if active_w is None or idle_w is None:
            unpowered.append(name)
        idle_s = max(total_s - busy_s, 0.0)
        processors[name] = {"busy_s": busy_s, "active_j": (active_w or 0.0) * busy_s, "idle_j": (idle_w or 0.0) * idle_s}
    active = sum(p["active_j"] for p in processors.values())
    idle = sum(p["idle_j"] for p in processors.values())
    return {"total": float(sum(link_energy.values()) + active + idle), "links": link_energy, "active": active,
            "idle": idle, "processors": processors, "unpowered": unpowered}


def _merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals as sorted disjoint (starts, ends)."""
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new = np.ones(s.size, dtype=bool)
    new[1:] = s[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    return s[idx], np.maximum.reduceat(reach, idx) if idx.size else reach


def _stats(values: pd.Series) -> dict[str, float | None]:
    v = values.to_numpy(dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": None, "p50": None, "p90": None, "max": None}
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "max": float(v.max())}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def _summary(config: Any, profile: HardwareProfile, plan: Plan, cells: pd.DataFrame, requests: pd.DataFrame,
             engine: EngineOutput, link_totals: dict[str, dict[str, float]], total_s: float,
             late_request: np.ndarray, bounds: Bounds | None, model_source: str) -> dict[str, Any]:
    counters = plan.counters
    topo = plan.topology
    n_req = int(plan.outcomes.size)
    misses = int(cells["misses"].sum())
    late = int(cells["late_prefetch"].sum())
    hits = int(cells["hits"].sum())
    links = {}
    link_energy = {}
    for name, tot in sorted(link_totals.items()):  # busy_s: time with at least one transfer on the link
        links[name] = dict(tot, utilization=(tot["busy_s"] / total_s) if total_s > 0 else None)
        link_energy[name] = tot["bytes"] * profile.power.joules_per_byte.get(name, 0.0)
    energy = _energy(profile, cells, link_energy, total_s, _dense_on_cpu(config))
    on_time = (plan.outcomes == HIT) & ~late_request
    accesses = plan.req_tokens.astype(np.int64)
    ttft = _stats(requests["ttft_s"]) if len(requests) else _stats(pd.Series([], dtype=float))
    tpot = _stats(requests["tpot_s"]) if len(requests) else _stats(pd.Series([], dtype=float))
    decode = cells["phase"] == "decode"
    summary: dict[str, Any] = {
        "format": FORMAT,
        "label": config.label(),
        "config": config.to_dict(),
        "profile": profile.name,
        "model_source": model_source,
        "topology": {"home": topo.home, "target": topo.target, "stage": topo.stage,
                     "host_link": topo.host_link, "ssd_link": topo.ssd_link,
                     "routes": {str(r): name for r, name in topo.link_names().items()},
                     "dram_cache_bytes": topo.dram_cache_bytes},
        "lossy": plan.lossy,
        "altered_applications": int(cells["altered"].sum()),
        "routed_accesses": int(plan.trace.n_accesses),
        "requests": n_req,
        "hits": hits,
        "late_prefetch": late,
        "misses": misses,
        "compulsory": int(cells["compulsory"].sum()),
        "capacity": int(cells["capacity"].sum()),
        "collision": int(cells["collision"].sum()),
        # on-time hits only; a late prefetch stalled its cell (docs/metrics.md "Hit rates")
        "hit_rate": hits / n_req if n_req else None,
        "hit_rate_per_access": float(accesses[on_time].sum() / accesses.sum()) if accesses.sum() else None,
        "hit_rate_incl_late": (hits + late) / n_req if n_req else None,
        "bypasses": counters.bypasses,
        "evictions": counters.evictions,
        "prefetch": {
            "issued": counters.prefetch_issued,
            "useful": counters.prefetch_useful - late,
            "late": late,
            "wasted": counters.prefetch_wasted,
            "cancelled": int(engine.copy_cancelled.sum()),
            "bytes": counters.prefetch_bytes,
        },
        "time": {
            "total_s": total_s,
            "compute_s": float(cells["compute_s"].sum()),
            "dense_s": float(cells["dense_s"].sum()),
            "expert_s": float(cells["expert_s"].sum()),
            "cpu_s": float(cells["cpu_s"].sum()),
            "stall_s": float(cells["stall_s"].sum()),
            "cpu_wait_s": float(cells["cpu_wait_s"].sum()),
            "decode_stall_s": float(cells.loc[decode, "stall_s"].sum()),
        },
        "ttft_s": ttft,
        "tpot_s": tpot,
        "tokens_per_s": (float(requests["output_tokens"].sum()) / total_s) if total_s > 0 and len(requests) else None,
        "links": links,
        "dram": plan.dram_counters,
        "energy_j": energy,
        "active_s": energy["processors"][profile.device.name]["busy_s"],
        "idle_s": max(total_s - energy["processors"][profile.device.name]["busy_s"], 0.0),
        "engine": {"events": engine.events, "event_cells": engine.event_cells, "cells": int(len(cells)),
                   "copies": int(plan.n_copies)},
    }
    if bounds is not None:
        tpot_b = _stats(requests["tpot_bound_s"]) if len(requests) else _stats(pd.Series([], dtype=float))
        ttft_b = _stats(requests["ttft_bound_s"]) if len(requests) else _stats(pd.Series([], dtype=float))
        summary["bounds"] = {
            "valid": bounds.valid,
            "belady_misses": bounds.belady_misses,
            "belady_is_bound": bounds.belady_is_bound,
            "belady_miss_bytes": bounds.belady_miss_bytes,
            "misses_over_belady": _ratio(misses, bounds.belady_misses),
            "time_bound_s": bounds.time_bound_s,
            "time_over_bound": _ratio(total_s, bounds.time_bound_s),
            "ttft_bound_s": ttft_b["mean"],
            "ttft_over_bound": _ratio(ttft["mean"], ttft_b["mean"]),
            "tpot_bound_s": tpot_b["mean"],
            "tpot_over_bound": _ratio(tpot["mean"], tpot_b["mean"]),
        }
    return json_ready(summary)
