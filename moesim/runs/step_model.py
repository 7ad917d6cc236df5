"""Per-pass times of a run under given profile figures, for fitting: the simulator's own clock.

The engine (moesim/sim/engine.py) shares each link's and the storage's bandwidth among the copies
in flight and pipelines experts as their bytes arrive. `SimulatorModel.times` gives its clock per pass:
in closed form per cell where a run's copies never cross a cell (moesim/runs/cell_clock.py: the plan
replayed once, every evaluation equal to the simulator's to rounding), else by running the simulator;
it reads, per pass, the compute time, the time copies were in flight (the engine's `copy_s_*` columns: what the BigMoeOnEdge engine's io_ms sums over lanes under
overlap), the stall, and the bytes copied. Figures are a dict:
  memory_bandwidth, peak_flops, launch_overhead  the expert processor's (processors.<device>.*)
  batched_flops                                  its matrix-matrix rate (0: none, peak_flops serves)
  ssd_bandwidth, ssd_bandwidth_qd1               the storage curve at its deepest queue and at one read
  ssd_latency                                    memories.ssd.latency
  token_overhead, mgmt_per_byte                  no engine field yet: added per pass here (0 unless fitted)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from moesim.hw_profiles.profile import HardwareProfile, StorageCurve, StoragePoint
from moesim.sim.timed_replay import TimedConfig
from moesim.traces.format.trace_meta import DECODE
from moesim.traces.format.trace import Trace

PROFILE_FIGURES = ("memory_bandwidth", "peak_flops", "batched_flops", "launch_overhead", "ssd_bandwidth",
                   "ssd_bandwidth_qd1", "ssd_latency")
EXTRA_FIGURES = ("token_overhead", "mgmt_per_byte")
ALL_FIGURES = PROFILE_FIGURES + EXTRA_FIGURES


def _storage(profile: HardwareProfile) -> str | None:
    return next((name for name, m in profile.tiers.items() if m.is_storage and m.throughput is not None), None)


def profile_figures(profile: HardwareProfile) -> dict[str, float]:
    dev = profile.device
    out = {"memory_bandwidth": dev.memory_bandwidth, "peak_flops": next(iter(dev.peak_flops.values())),
           "batched_flops": float(dev.batched_flops or 0.0), "launch_overhead": dev.kernel_overhead,
           "token_overhead": 0.0, "mgmt_per_byte": 0.0}
    name = _storage(profile)
    if name is not None:
        mem = profile.tiers[name]
        points = mem.throughput.points  # type: ignore[union-attr]
        top = max(p.queue_depth for p in points)
        out["ssd_bandwidth"] = max(p.bandwidth for p in points if p.queue_depth == top)
        ones = [p.bandwidth for p in points if p.queue_depth == 1]
        if ones and top > 1:
            out["ssd_bandwidth_qd1"] = max(ones)
        out["ssd_latency"] = float(mem.latency or 0.0)
    return out


def apply_figures(profile: HardwareProfile, figures: dict[str, float]) -> HardwareProfile:
    """The profile with the figures replaced: the expert processor's rates, the storage curve, its latency."""
    dev = profile.device
    ratio = figures["peak_flops"] / next(iter(dev.peak_flops.values()))
    batched = figures.get("batched_flops", dev.batched_flops or 0.0) or None  # 0: none (peak_flops serves)
    new_dev = dataclasses.replace(dev, memory_bandwidth=figures["memory_bandwidth"],
                                  peak_flops={k: v * ratio for k, v in dev.peak_flops.items()},
                                  kernel_overhead=figures["launch_overhead"], batched_flops=batched)
    processors = dict(profile.processors)
    processors[dev.name] = new_dev
    tiers, links = dict(profile.tiers), dict(profile.links)
    name = _storage(profile)
    if name is not None and "ssd_bandwidth" in figures:
        mem = tiers[name]
        curve = _scaled_curve(mem.throughput, figures)  # type: ignore[arg-type]
        tiers[name] = dataclasses.replace(mem, throughput=curve, latency=figures.get("ssd_latency", mem.latency))
        top = max(p.bandwidth for p in curve.points)
        for key, link in links.items():  # a link out of the storage must not cap the curve it carries
            if name in (link.src, link.dst) and link.bandwidth < top:
                links[key] = dataclasses.replace(link, bandwidth=top)
    compute = dataclasses.replace(profile.compute, memory_bandwidth=figures["memory_bandwidth"],
                                  peak_flops=profile.compute.peak_flops * ratio,
                                  launch_overhead=figures["launch_overhead"]) if profile.compute else None
    return dataclasses.replace(profile, processors=processors, tiers=tiers, links=links, compute=compute)


def _scaled_curve(curve: StorageCurve, figures: dict[str, float]) -> StorageCurve:
    """Points at the deepest queue take ssd_bandwidth, at depth 1 ssd_bandwidth_qd1, between: linear in depth."""
    points = curve.points
    top = max(p.queue_depth for p in points)
    old_top = max(p.bandwidth for p in points if p.queue_depth == top)
    old_one = max((p.bandwidth for p in points if p.queue_depth == 1), default=None)
    new_top = figures["ssd_bandwidth"]
    new_one = figures.get("ssd_bandwidth_qd1", old_one)
    out = []
    for p in points:
        if top == 1 or old_one is None or new_one is None:
            bw = p.bandwidth * new_top / old_top
        else:  # keep each point's place between the depth-1 and the deepest point
            w = (p.bandwidth - old_one) / (old_top - old_one) if old_top != old_one else (p.queue_depth - 1) / (top - 1)
            bw = new_one + w * (new_top - new_one)
        out.append(StoragePoint(p.request_size, p.queue_depth, max(bw, 1.0)))
    return StorageCurve(tuple(out))


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


class SimulatorModel:
    """Times every pass for any figures (memoised per figure set).

    Where the run's copies never cross a cell (no prefetch, demand reads only: every run of the
    BigMoeOnEdge engine) the plan is replayed once and each evaluation is the engine's clock in
    closed form per cell (moesim/runs/cell_clock.py, equal to the simulator to rounding:
    tests/runs/test_cell_clock.py); otherwise each evaluation runs the simulator.
    """

    def __init__(self, trace: Trace, profile: HardwareProfile, config: TimedConfig) -> None:
        from moesim.runs.cell_clock import NotClosedForm, ReplayedRun

        self.trace = trace
        self.profile = profile
        self.config = config
        self.decode = trace.pass_phase == DECODE
        self.evaluations = 0
        self._memo: dict[tuple[float, ...], PassTimes] = {}
        try:
            self.replayed: ReplayedRun | None = ReplayedRun(trace, profile, config)
        except NotClosedForm:
            self.replayed = None

    def times(self, figures: dict[str, float]) -> PassTimes:
        key = tuple(float(figures[k]) for k in sorted(figures))
        if key in self._memo:
            return self._memo[key]
        self.evaluations += 1
        if self.replayed is not None:
            p = self.replayed.pass_totals(figures)
            wall, compute, stall, io_busy, nbytes, copies = (p["wall"], p["compute"], p["stall"], p["io_busy"],
                                                             p["bytes"], p["copies"])
        else:
            wall, compute, stall, io_busy, nbytes, copies = self._simulated(figures)
        mgmt = figures.get("mgmt_per_byte", 0.0) * nbytes
        token = figures.get("token_overhead", 0.0)
        out = PassTimes(total=wall + mgmt + token, compute=compute + token, stall=stall, io_busy=io_busy, mgmt=mgmt,
                        copy_bytes=nbytes, copies=copies, decode=self.decode)
        if len(self._memo) > 256:
            self._memo.clear()
        self._memo[key] = out
        return out

    def _simulated(self, figures: dict[str, float]) -> tuple[np.ndarray, ...]:
        from moesim.sim.timed_replay import timed_replay

        result = timed_replay(self.trace, apply_figures(self.profile, figures), self.config)
        cells = result.cells
        n_pass = self.trace.n_passes
        pass_of = cells["pass"].to_numpy()

        def by_pass(col: str) -> np.ndarray:
            return np.bincount(pass_of, weights=cells[col].to_numpy(dtype=float), minlength=n_pass)

        links = [c[len("copy_s_"):] for c in cells.columns if c.startswith("copy_s_")]
        io_busy = sum((by_pass(f"copy_s_{name}") for name in links), np.zeros(n_pass))
        nbytes = sum((by_pass(f"bytes_{name}") for name in links if f"bytes_{name}" in cells), np.zeros(n_pass))
        wall = np.bincount(pass_of, weights=(cells["end_s"] - cells["start_s"]).to_numpy(), minlength=n_pass)
        copies = by_pass("demand_copies") + by_pass("prefetch_copies")
        return wall, by_pass("compute_s"), by_pass("stall_s"), io_busy, nbytes, copies
