"""A fast per-pass model of the engine's clock over a fixed plan, for fitting profile figures.

The simulator's decisions (which copies each cell issues) do not depend on timing when prefetch is
off, so the plan is made once; the time of every pass is then arithmetic over the same cost
functions the engine uses (moesim/sim/cost_model.py, moesim/sim/topology.py):
  pass = token_overhead + sum over its cells of dense + stall + expert (+ mgmt)
  stall (per-layer barrier) = makespan of the cell's copies on the storage's lanes, FIFO
  io busy = sum of copy durations (what the engine's io_ms sums over lanes under overlap)
  mgmt = mgmt_per_byte x bytes copied (cache bookkeeping: a figure this engine does not have yet)
tests/runs/test_step_model.py checks it against the simulator pass by pass. Figures are a dict:
memory_bandwidth, peak_flops, launch_overhead, ssd_bandwidth, ssd_latency (profile fields) and
token_overhead, mgmt_per_byte (not yet engine fields: zero unless fitted).
"""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass

import numpy as np

from moesim.hw_profiles.profile import HardwareProfile
from moesim.sim.cost_model import dense_times, expert_times, resolve_model_shape
from moesim.sim.timed_replay import TimedConfig, setup_planner
from moesim.sim.topology import build_topology
from moesim.traces.trace import DECODE, Trace

PROFILE_FIGURES = ("memory_bandwidth", "peak_flops", "launch_overhead", "ssd_bandwidth", "ssd_latency")
EXTRA_FIGURES = ("token_overhead", "mgmt_per_byte")
ALL_FIGURES = PROFILE_FIGURES + EXTRA_FIGURES


def profile_figures(profile: HardwareProfile) -> dict[str, float]:
    ssd = profile.tier("ssd")
    link = profile.link("ssd_d") or profile.link("ssd_h")
    agg = min(x for x in ((ssd.read_bandwidth if ssd else None), (link.bandwidth if link else None)) if x)
    return {"memory_bandwidth": profile.compute.memory_bandwidth, "peak_flops": profile.compute.peak_flops,
            "launch_overhead": profile.compute.launch_overhead, "ssd_bandwidth": float(agg),
            "ssd_latency": float((ssd.latency or 0.0) if ssd else 0.0) + float(link.latency if link else 0.0),
            "token_overhead": 0.0, "mgmt_per_byte": 0.0}


def apply_figures(profile: HardwareProfile, figures: dict[str, float]) -> HardwareProfile:
    """The profile with the engine's figures replaced (SSD bandwidth on both the tier and its link)."""
    compute = dataclasses.replace(profile.compute, memory_bandwidth=figures["memory_bandwidth"],
                                  peak_flops=figures["peak_flops"], launch_overhead=figures["launch_overhead"])
    tiers = dict(profile.tiers)
    links = dict(profile.links)
    if "ssd" in tiers:
        tiers["ssd"] = dataclasses.replace(tiers["ssd"], read_bandwidth=figures["ssd_bandwidth"],
                                           latency=figures["ssd_latency"])
    for name in ("ssd_d", "ssd_h"):
        if name in links:
            links[name] = dataclasses.replace(links[name], bandwidth=figures["ssd_bandwidth"],
                                              latency=0.0 if "ssd" in tiers else figures["ssd_latency"])
    return dataclasses.replace(profile, compute=compute, tiers=tiers, links=links)


def figure_overrides(figures: dict[str, float], profile: HardwareProfile) -> list[str]:
    """The same change as `apply_figures`, as `--set` strings for the engine."""
    out = [f"compute.memory_bandwidth={figures['memory_bandwidth']:.6g} B/s",
           f"compute.peak_flops={figures['peak_flops']:.6g} FLOP/s",
           f"compute.launch_overhead={figures['launch_overhead']:.6g} s"]
    if profile.tier("ssd") is not None:
        out += [f"tiers.ssd.read_bandwidth={figures['ssd_bandwidth']:.6g} B/s",
                f"tiers.ssd.latency={figures['ssd_latency']:.6g} s"]
    for name in ("ssd_d", "ssd_h"):
        if profile.link(name) is not None:
            out.append(f"links.{name}.bandwidth={figures['ssd_bandwidth']:.6g} B/s")
            out.append(f"links.{name}.latency={0.0 if profile.tier('ssd') is not None else figures['ssd_latency']:.6g} s")
    return out


@dataclass
class PassTimes:
    """Seconds per pass (all passes, trace order) and which are decode passes."""

    total: np.ndarray
    compute: np.ndarray
    stall: np.ndarray
    io_busy: np.ndarray
    mgmt: np.ndarray
    copy_bytes: np.ndarray
    copies: np.ndarray
    decode: np.ndarray  # bool per pass


class StepModel:
    """Plan once, then time every pass for any figures in O(cells + copies)."""

    def __init__(self, trace: Trace, profile: HardwareProfile, config: TimedConfig) -> None:
        self.trace = trace
        self.profile = profile
        setup = setup_planner(trace, profile, config)
        self.shape = resolve_model_shape(trace, config.model)
        self.plan = setup.planner.plan_rest(None)
        self.grouped = config.grouped_experts
        stream = setup.planner.stream
        obj_bytes = trace.object_bytes_array()
        self.req_cell = stream.cell
        self.req_bytes = obj_bytes[stream.obj]
        self.req_params = np.asarray(self.shape.expert_params, dtype=np.float64)[trace.object_layer_array()][stream.obj]
        self.cell_pass = trace.cell_pass().astype(np.int64)
        plan = self.plan
        issued = plan.copy_cell >= 0
        self.copy_cell = plan.copy_cell[issued].astype(np.int64)
        self.copy_bytes = plan.copy_bytes[issued].astype(np.float64)
        order = np.argsort(self.copy_cell, kind="stable")
        self.copy_cell, self.copy_bytes = self.copy_cell[order], self.copy_bytes[order]
        self.slots = build_topology(profile, trace.total_object_bytes()).ssd_slots
        self.decode = trace.pass_phase == DECODE

    def times(self, figures: dict[str, float]) -> PassTimes:
        trace = self.trace
        prof = apply_figures(self.profile, figures)
        topo = build_topology(prof, trace.total_object_bytes())
        dense = dense_times(trace, self.shape, prof.compute)
        expert = expert_times(self.req_cell, self.req_bytes, self.plan.gpu_tokens, self.req_params, trace.n_cells,
                              prof.compute, self.grouped)
        duration = topo.ssd_latency + self.copy_bytes / topo.ssd_slot_bandwidth
        stall = _barrier_makespans(self.copy_cell, duration, trace.n_cells, topo.ssd_slots)
        n_pass = trace.n_passes
        per_pass = lambda x: np.bincount(self.cell_pass, weights=x, minlength=n_pass)  # noqa: E731
        copy_pass = self.cell_pass[self.copy_cell] if self.copy_cell.size else np.zeros(0, dtype=np.int64)
        io_busy = np.bincount(copy_pass, weights=duration, minlength=n_pass)
        nbytes = np.bincount(copy_pass, weights=self.copy_bytes, minlength=n_pass)
        mgmt = figures.get("mgmt_per_byte", 0.0) * nbytes
        compute = per_pass(dense + expert) + figures.get("token_overhead", 0.0)
        stall_p = per_pass(stall)
        return PassTimes(total=compute + stall_p + mgmt, compute=compute, stall=stall_p, io_busy=io_busy, mgmt=mgmt,
                         copy_bytes=nbytes, copies=np.bincount(copy_pass, minlength=n_pass), decode=self.decode)


def _barrier_makespans(cell: np.ndarray, duration: np.ndarray, n_cells: int, slots: int) -> np.ndarray:
    """Per cell: when the last of its copies lands, all issued at once on `slots` FIFO lanes."""
    out = np.zeros(n_cells)
    if cell.size == 0:
        return out
    bounds = np.flatnonzero(np.diff(cell)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [cell.size]))
    counts = ends - starts
    durations = duration.tolist()
    for s, e, n in zip(starts.tolist(), ends.tolist(), counts.tolist()):
        if n <= slots:
            out[cell[s]] = max(durations[s:e])
            continue
        free = [0.0] * slots
        last = 0.0
        for d in durations[s:e]:
            t = heapq.heappop(free) + d
            last = max(last, t)
            heapq.heappush(free, t)
        out[cell[s]] = last
    return out


class SimulatorModel:
    """The same interface as StepModel, timed by the simulator itself (slower; for engines whose clock the
    fast model does not mirror, e.g. links whose copies share bandwidth). Figures the engine has no field
    for (token_overhead, mgmt_per_byte) are added per pass as StepModel adds them."""

    def __init__(self, trace: Trace, profile: HardwareProfile, config: TimedConfig) -> None:
        self.trace = trace
        self.profile = profile
        self.config = config
        self.decode = trace.pass_phase == DECODE
        self.evaluations = 0

    def times(self, figures: dict[str, float]) -> PassTimes:
        from moesim.sim.timed_replay import timed_replay

        self.evaluations += 1
        result = timed_replay(self.trace, apply_figures(self.profile, figures), self.config)
        cells = result.cells
        n_pass = self.trace.n_passes
        by_pass = lambda col: np.bincount(cells["pass"].to_numpy(), weights=cells[col].to_numpy(dtype=float),  # noqa: E731
                                          minlength=n_pass)
        links = [c[len("copy_s_"):] for c in cells.columns if c.startswith("copy_s_")]
        io_busy = sum((by_pass(f"copy_s_{name}") for name in links), np.zeros(n_pass))
        nbytes = sum((by_pass(f"bytes_{name}") for name in links if f"bytes_{name}" in cells), np.zeros(n_pass))
        mgmt = figures.get("mgmt_per_byte", 0.0) * nbytes
        compute = by_pass("compute_s") + figures.get("token_overhead", 0.0)
        stall = by_pass("stall_s")
        wall = np.bincount(cells["pass"].to_numpy(), weights=(cells["end_s"] - cells["start_s"]).to_numpy(),
                           minlength=n_pass)
        total = wall + mgmt + figures.get("token_overhead", 0.0)
        copies = by_pass("demand_copies") + by_pass("prefetch_copies")
        return PassTimes(total=total, compute=compute, stall=stall, io_busy=io_busy, mgmt=mgmt, copy_bytes=nbytes,
                         copies=copies, decode=self.decode)
