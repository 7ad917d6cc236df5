"""A stand-in for the timing engine's result, for tests of everything downstream of it.

It is not a model of the hardware: one host link with one copy engine, every miss a demand copy
issued at its cell's gate and run back to back, compute a fixed time per cell. What it gives is a
TimedResult-shaped object (summary, per-cell table, requests, plan and engine arrays) whose numbers
are easy to compute by hand, e.g. a cell's stall is the sum of its copies' durations.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd

from moesim.sim.cache_core import HIT, MISS_CAPACITY, MISS_COLLISION, MISS_COMPULSORY
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.traces.format.trace_meta import PHASE_NAMES

DENSE_S = 1e-4
EXPERT_S = 2e-4


@dataclass(frozen=True)
class FakeProfile:
    name: str
    bandwidth: float  # bytes/s of the host link
    latency: float = 0.0


def fake_timed_replay(trace, profile: FakeProfile, *, eviction, prefetch, miss, capacity_bytes, scope, seed,
                      profile_name, profile_set):
    count = count_replay(trace, ReplayConfig(policy=eviction, capacity_bytes=capacity_bytes, scope=scope, seed=seed))
    n_cells = trace.n_cells
    stream = count.stream
    out = count.outcomes

    def per_cell(mask):
        return np.bincount(stream.cell[mask], minlength=n_cells).astype(np.int64)

    miss_mask = out >= MISS_COMPULSORY
    sizes = trace.object_bytes_array()[stream.obj]
    copy_req = np.flatnonzero(miss_mask)
    copy_cell = stream.cell[copy_req]
    duration = profile.latency + sizes[copy_req] / profile.bandwidth
    stall = np.bincount(copy_cell, weights=duration, minlength=n_cells)
    cell_time = DENSE_S + stall + EXPERT_S
    end = np.cumsum(cell_time)
    start = end - cell_time
    gate = start + DENSE_S
    # copies of a cell run back to back from its gate
    first = np.searchsorted(copy_cell, copy_cell, side="left")
    offset = np.cumsum(duration) - duration
    copy_start = gate[copy_cell] + (offset - offset[first])
    copy_end = copy_start + duration
    cell_pass = trace.cell_pass()
    cells = pd.DataFrame({
        "pass": cell_pass, "layer": trace.cell_layer.astype(np.int64),
        "phase": [PHASE_NAMES[int(trace.pass_phase[p])] for p in cell_pass],
        "start_s": start, "gate_s": gate, "end_s": end, "compute_s": np.full(n_cells, DENSE_S + EXPERT_S),
        "stall_s": stall, "requests": np.diff(stream.cell_offsets), "hits": per_cell(out == HIT),
        "late_prefetch": np.zeros(n_cells, np.int64), "misses": per_cell(miss_mask),
        "compulsory": per_cell(out == MISS_COMPULSORY), "capacity": per_cell(out == MISS_CAPACITY),
        "collision": per_cell(out == MISS_COLLISION)})
    total = float(end[-1])
    decode = trace.pass_phase[cell_pass] == 1
    decode_passes = int((trace.pass_phase == 1).sum())
    first_token_end = float(end[~decode][-1]) if (~decode).any() else 0.0
    tpot = (total - first_token_end) / decode_passes if decode_passes else float("nan")
    link_bytes = int(sizes[copy_req].sum())
    busy = float(duration.sum())
    summary = {
        "requests": int(out.size), "hits": int((out == HIT).sum()), "late_prefetch": 0,
        "misses": int(miss_mask.sum()), "compulsory": int((out == MISS_COMPULSORY).sum()),
        "capacity": int((out == MISS_CAPACITY).sum()), "collision": int((out == MISS_COLLISION).sum()),
        "hit_rate": float((out == HIT).sum() / out.size), "evictions": count.counters.evictions, "bypasses": 0,
        "lossy": False, "prefetch": {"issued": 0, "useful": 0, "late": 0, "wasted": 0, "bytes": 0},
        "time": {"total_s": total, "compute_s": n_cells * (DENSE_S + EXPERT_S), "stall_s": float(stall.sum()),
                 "cpu_wait_s": 0.0},
        "ttft_s": {"mean": first_token_end}, "tpot_s": {"mean": tpot, "p90": tpot},
        "tokens_per_s": (1 + decode_passes) / total, "topology": {"host_link": "h2d", "ssd_link": None},
        "links": {"h2d": {"bytes": link_bytes, "copies": int(copy_req.size), "busy_s": busy,
                          "utilization": busy / total}},
        "energy_j": {"total": 1e-10 * link_bytes, "links": {"h2d": 1e-10 * link_bytes}},
        "bounds": {"time_bound_s": n_cells * (DENSE_S + EXPERT_S), "belady_misses": None, "tpot_bound_s": None},
    }
    requests = pd.DataFrame({"request": [0], "output_tokens": [1 + decode_passes], "ttft_s": [first_token_end],
                             "tpot_s": [tpot], "e2e_s": [total], "tokens_per_s": [(1 + decode_passes) / total]})
    plan = SimpleNamespace(
        trace=trace, copy_cell=copy_cell, copy_route=np.zeros(copy_req.size, np.int8),
        copy_prefetch=np.zeros(copy_req.size, bool),
        topology=SimpleNamespace(host_link="h2d", host_engines=1, ssd_link=None))
    engine = SimpleNamespace(copy_start=copy_start, copy_end=copy_end, copy_cancelled=np.zeros(copy_req.size, bool))
    return SimpleNamespace(summary=summary, cells=cells, requests=requests, plan=plan, engine=engine)


def install(monkeypatch) -> list[tuple[str, tuple]]:
    """Route moesim's engine and profile bindings to the fakes; returns the load_profile calls made."""
    from moesim.sweeps import bindings, execute
    from moesim.reports.frames import setting_value

    calls: list[tuple[str, tuple]] = []

    def load_profile(name, settings, where):
        calls.append((name, tuple(settings)))
        values = dict(settings)
        bw = setting_value("bw", values.get("links.h2d.bandwidth", "25 GB/s"))
        lat = setting_value("lat", values.get("links.h2d.latency", "0 s"))
        return FakeProfile(name, bw, lat)

    real_run = execute.run

    def run(spec):  # the front door (moesim/sim/run.py): timed runs go to the fake
        if spec.profile is None:
            return real_run(spec)
        return fake_timed_replay(spec.trace, spec.profile, eviction=spec.eviction.label(),
                                 prefetch=spec.prefetch.label(), miss=spec.miss.label(),
                                 capacity_bytes=spec.capacity_bytes, scope=spec.scope, seed=spec.seed,
                                 profile_name=spec.profile_name, profile_set=spec.profile_overrides)

    monkeypatch.setattr(bindings, "load_profile", load_profile)
    monkeypatch.setattr(execute, "run", run)
    return calls
