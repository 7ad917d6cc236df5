"""Replay outcomes -> the tidy result tables (moesim.reports.tables).

One function per kind of outcome: a CountResult (moesim.sim.count_replay), a TimedResult
(moesim.sim.timed_replay) in memory, and the per-cell table a timed result carries. Each takes
`run`, the identity columns of the run (run_id, trace, policy, capacity, ...), and fills in the
measured ones. The timed functions read the engine's result structure in one place each, so a
change there is fixed here.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from moesim.reports import tables
from moesim.reports.tables import RunTables, arrow_table

_COUNT_SUM = ["requests", "hits", "late_prefetch", "misses", "compulsory", "capacity_misses", "collision"]


def _trace_facts(trace: Any, capacity_bytes: Any) -> dict[str, Any]:
    from moesim.sim.capacity import held_object_bytes

    total = int(held_object_bytes(trace))  # the base of "5%" capacities (moesim/sim/capacity.py)
    share = float(capacity_bytes) / total if total and capacity_bytes is not None else float("nan")
    return {"passes": trace.n_passes, "routed_accesses": trace.n_accesses, "total_object_bytes": total,
            "capacity_share": share}


def _rate(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def _frame_columns(df: pd.DataFrame, run_id: str, rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    cols = {(rename or {}).get(c, c): df[c].to_numpy() for c in df.columns}
    cols["run_id"] = run_id
    return cols


def error_tables(run: Mapping[str, Any], message: str) -> RunTables:
    """The one row a failed run leaves: its identity, status "error" and the error's first line."""
    row = dict(run)
    row.update(status="error", error=message.strip().splitlines()[0] if message.strip() else "error")
    return {"runs": arrow_table("runs", row, 1)}


# ---- count replay ------------------------------------------------------------------------------
def count_summary_columns(s: Mapping[str, Any]) -> dict[str, Any]:
    """Run-row columns from a count summary (moesim.sim.metrics.summary)."""
    prefetch = s.get("prefetch") or {}
    return dict(
        status="ok", error="", engine="count",
        requests=s["requests"], hits=s["hits"], late_prefetch=s["late_prefetch"], misses=s["misses"],
        compulsory=s["compulsory"], capacity_misses=s["capacity"], collision=s["collision"],
        bytes_fetched=s["bytes_fetched"], hit_rate=s["hit_rate"], miss_rate=_rate(s["misses"], s["requests"]),
        evictions=s.get("evictions"), bypasses=s.get("bypasses"),
        prefetch_issued=prefetch.get("issued"), prefetch_useful=prefetch.get("useful"),
        prefetch_late=prefetch.get("late"), prefetch_wasted=prefetch.get("wasted"),
        prefetch_bytes=prefetch.get("bytes"),
    )


def count_tables(result: Any, run: Mapping[str, Any], pass_table: bool = False) -> RunTables:
    """Tables of a CountResult: the run row, per-layer counts and (if asked) per-pass counts."""
    from moesim.sim import metrics

    row = dict(run)
    row.update(_trace_facts(result.trace, row.get("capacity_bytes")))
    row.update(count_summary_columns(metrics.summary(result)))
    rename = {"capacity": "capacity_misses"}
    out = {"runs": arrow_table("runs", row, 1),
           "layers": arrow_table("layers", _frame_columns(metrics.by_layer(result), row["run_id"], rename))}
    if pass_table:
        out["passes"] = arrow_table("passes", _frame_columns(metrics.by_pass(result), row["run_id"], rename))
    return out


# ---- timed replay ------------------------------------------------------------------------------
def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def timed_run_row(summary: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """The run row's measured columns from a timed result's summary (docs/metrics.md, "Timing")."""
    row = dict(run)
    requests = summary.get("requests") or 0
    links = summary.get("links") or {}
    topology = summary.get("topology") or {}
    last_hop = topology.get("host_link") or topology.get("ssd_link")
    row.update(
        status="ok", error="", engine="timed", lossy=bool(summary.get("lossy", False)),
        requests=requests, hits=summary.get("hits"), late_prefetch=summary.get("late_prefetch"),
        misses=summary.get("misses"), compulsory=summary.get("compulsory"),
        capacity_misses=summary.get("capacity"), collision=summary.get("collision"),
        hit_rate=summary.get("hit_rate"), miss_rate=_rate(summary.get("misses") or 0, requests),
        evictions=summary.get("evictions"), bypasses=summary.get("bypasses"),
        prefetch_issued=_get(summary, "prefetch", "issued"), prefetch_useful=_get(summary, "prefetch", "useful"),
        prefetch_late=_get(summary, "prefetch", "late"), prefetch_wasted=_get(summary, "prefetch", "wasted"),
        prefetch_bytes=_get(summary, "prefetch", "bytes"),
        total_s=_get(summary, "time", "total_s"), compute_s=_get(summary, "time", "compute_s"),
        stall_s=_get(summary, "time", "stall_s"), cpu_wait_s=_get(summary, "time", "cpu_wait_s"),
        ttft_mean_s=_get(summary, "ttft_s", "mean"), tpot_mean_s=_get(summary, "tpot_s", "mean"),
        tpot_p90_s=_get(summary, "tpot_s", "p90"), tokens_per_s=summary.get("tokens_per_s"),
        energy_j=_get(summary, "energy_j", "total"),
        bytes_moved=_get(links, last_hop, "bytes") if last_hop else None,
        time_bound_s=_get(summary, "bounds", "time_bound_s"), tpot_bound_s=_get(summary, "bounds", "tpot_bound_s"),
        belady_misses=_get(summary, "bounds", "belady_misses"),
    )
    return row


def link_table(summary: Mapping[str, Any], run_id: str) -> Any:
    energy = _get(summary, "energy_j", "links") or {}
    rows = [{"run_id": run_id, "link": name, "bytes": v.get("bytes"), "copies": v.get("copies"),
             "busy_s": v.get("busy_s"), "utilization": v.get("utilization"), "energy_j": energy.get(name)}
            for name, v in sorted((summary.get("links") or {}).items())]
    return arrow_table("links", {k: [r[k] for r in rows] for k in tables.columns("links")}, len(rows))


def cell_aggregates(cells: pd.DataFrame, run_id: str) -> tuple[Any, Any]:
    """Per-layer and per-pass tables from a timed result's per-cell table."""
    cells = cells.rename(columns={"capacity": "capacity_misses"})
    sums = [c for c in _COUNT_SUM + ["compute_s", "stall_s"] if c in cells.columns]
    layers = cells.groupby("layer", sort=True)[sums].sum().reset_index()
    passes = cells.groupby("pass", sort=True).agg(
        **{c: (c, "sum") for c in sums}, phase=("phase", "first"), start_s=("start_s", "min"),
        end_s=("end_s", "max")).reset_index()
    for df in (layers, passes):
        df["hit_rate"] = np.where(df["requests"] > 0,
                                  (df["hits"] + df["late_prefetch"]) / df["requests"].clip(lower=1), np.nan)
    return (arrow_table("layers", _frame_columns(layers, run_id)),
            arrow_table("passes", _frame_columns(passes, run_id)))


def timeline_window(pass_phase: np.ndarray, n_passes: int) -> tuple[int, int]:
    """[first, end) passes a timeline shows: `n_passes` from the first decode pass (else from 0)."""
    decode = np.flatnonzero(np.asarray(pass_phase) == 1)
    first = int(decode[0]) if decode.size else 0
    return first, min(first + int(n_passes), len(pass_phase))


def compute_lane(cells: pd.DataFrame, run_id: str, window: tuple[int, int]) -> pd.DataFrame:
    """Dense, stall and expert intervals of the compute stream for the cells of passes in `window`."""
    sel = cells[(cells["pass"] >= window[0]) & (cells["pass"] < window[1])]
    gate = sel["gate_s"].to_numpy(dtype=float)
    stall = sel["stall_s"].to_numpy(dtype=float)
    parts = [("dense", sel["start_s"].to_numpy(dtype=float), gate),
             ("stall", gate, gate + stall),
             ("expert", gate + stall, sel["end_s"].to_numpy(dtype=float))]
    frames = []
    for kind, start, end in parts:
        keep = end > start
        frames.append(pd.DataFrame({"run_id": run_id, "lane": "compute", "kind": kind, "start_s": start[keep],
                                    "end_s": end[keep], "pass": sel["pass"].to_numpy()[keep],
                                    "layer": sel["layer"].to_numpy()[keep]}))
    return pd.concat(frames, ignore_index=True)


def assign_engines(start: np.ndarray, end: np.ndarray, engines: int) -> np.ndarray:
    """The copy engine each copy ran on: the lowest-numbered one free at its start.

    The engine itself only records start and end; copies on a link with `engines` servers never
    overlap more than `engines` deep, so this packing fits in that many lanes.
    """
    order = np.argsort(start, kind="stable")
    free_at = [-np.inf] * max(int(engines), 1)
    lane = np.zeros(start.size, dtype=np.int64)
    for i in order:
        fits = [e for e, t in enumerate(free_at) if t <= start[i] + 1e-15]
        e = fits[0] if fits else int(np.argmin(free_at))
        lane[i] = e
        free_at[e] = end[i]
    return lane


def _host_route() -> int:
    """The engine's code for a copy over the host link (moesim.sim.topology.ROUTE_HOST)."""
    from moesim.sim.topology import ROUTE_HOST

    return int(ROUTE_HOST)


def timed_timeline(result: Any, run_id: str, n_passes: int) -> Any:
    """Compute stream and every copy engine / the SSD queue over `n_passes` passes of a TimedResult."""
    trace = result.plan.trace
    window = timeline_window(trace.pass_phase, n_passes)
    cells = result.cells
    frames = [compute_lane(cells, run_id, window)]
    plan, engine = result.plan, result.engine
    topo = plan.topology
    ran = ~np.asarray(engine.copy_cancelled, dtype=bool)
    start = np.asarray(engine.copy_start, dtype=float)
    end = np.asarray(engine.copy_end, dtype=float)
    copy_cell = np.asarray(plan.copy_cell)
    host = np.asarray(plan.copy_route) == _host_route()
    lane = np.empty(start.size, dtype=object)
    if host.any() and topo.host_link is not None:
        idx = np.flatnonzero(host & ran)
        engines = assign_engines(start[idx], end[idx], topo.host_engines)
        lane[idx] = [f"{topo.host_link} engine {e}" for e in engines]
    if topo.ssd_link is not None:
        lane[~host] = f"{topo.ssd_link} queue"
    cell_pass = trace.cell_pass()
    valid = ran & (copy_cell >= 0)
    c = np.where(valid, copy_cell, 0)
    in_window = valid & (cell_pass[c] >= window[0]) & (cell_pass[c] < window[1])
    idx = np.flatnonzero(in_window)
    frames.append(pd.DataFrame({
        "run_id": run_id, "lane": lane[idx].astype(str),
        "kind": np.where(np.asarray(plan.copy_prefetch, dtype=bool)[idx], "prefetch", "demand"),
        "start_s": start[idx], "end_s": end[idx], "pass": cell_pass[c[idx]],
        "layer": np.asarray(trace.cell_layer)[c[idx]]}))
    return arrow_table("timeline", _frame_columns(pd.concat(frames, ignore_index=True), run_id))


def timed_tables(result: Any, run: Mapping[str, Any], pass_table: bool = False,
                 timeline_passes: int = 0) -> RunTables:
    """Tables of a TimedResult: run row, layers, links, requests; passes and a timeline if asked."""
    run_id = run["run_id"]
    row = timed_run_row(result.summary, run)
    row.update(_trace_facts(result.plan.trace, row.get("capacity_bytes")))
    layers, passes = cell_aggregates(result.cells, run_id)
    out = {"runs": arrow_table("runs", row, 1), "layers": layers, "links": link_table(result.summary, run_id),
           "requests": arrow_table("requests", _frame_columns(result.requests, run_id))}
    if pass_table:
        out["passes"] = passes
    if timeline_passes > 0:
        out["timeline"] = timed_timeline(result, run_id, timeline_passes)
    return out
