"""Fit the CPU's achieved figures on some published anchors, predict the others (docs/fidelity.md).

Two figures, both stated as profile data (moesim/hw_profiles/profile.py, processor "cpu"):
  efficiency   the share of the CPU's datasheet memory bandwidth its expert kernels reach
               (processors.cpu.memory_bandwidth = efficiency x the profile's figure)
  call_overhead  seconds per CPU expert call (processors.cpu.kernel_overhead; one grouped call per
               MoE layer and token under the "fused" framework): the engine's per-layer hand-off
               (waking the CPU pool, synchronising with the GPU) that grows with neither experts
               nor sockets
The simulator's decode time per token is affine in (call_overhead, 1 / efficiency) while the CPU is
bound by memory in every cell: T = T0 + a x call_overhead + b x (1 / efficiency - 1). `fit_figures`
reads a and b for each fitted row off three replays (the profile as stated, the overhead raised,
the bandwidth halved), solves the least-squares problem in relative error, and replays the rows at
the solution to report what is left. The figures then go, unchanged, into the profiles of the rows
it did not see: a different machine (one socket) is a profile change, not a refit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile
from moesim.traces.format.trace import Trace

PROBE_OVERHEAD = 1e-3  # s: large beside a decode step's per-layer work, small beside its total
PROBE_INVERSE = 2.0  # 1 / efficiency at the second probe (the bandwidth halved)


@dataclass(frozen=True)
class Figures:
    efficiency: float = 1.0
    call_overhead: float = 0.0


@dataclass(frozen=True)
class FitResult:
    figures: Figures
    rows: tuple[str, ...]  # the fitted rows' names
    residuals: tuple[float, ...]  # predicted / measured - 1 at the solution, per fitted row (a replay)
    notes: tuple[str, ...] = field(default_factory=tuple)


def apply_figures(profile: HardwareProfile, figures: Figures, source: str, overhead: bool = True,
                  flops_scale: float = 1.0) -> HardwareProfile:
    """`profile` with its CPU at `figures` (the bandwidth as a share of the profile's own figure); the
    provenance of each changed value names `source`. `flops_scale` multiplies the CPU's peak FLOP/s."""
    cpu = profile.processors.get("cpu")
    if cpu is None:
        raise UserError("the anchors need a cpu processor", f"profile {profile.name}")
    provenance = dict(profile.provenance)
    provenance["processors.cpu.memory_bandwidth"] = (
        f"fitted: {figures.efficiency:.4f} x the datasheet {cpu.memory_bandwidth / 1e9:.1f} GB/s ({source})")
    changed = replace(cpu, memory_bandwidth=figures.efficiency * cpu.memory_bandwidth,
                      peak_flops={k: v * flops_scale for k, v in cpu.peak_flops.items()})
    if overhead:
        changed = replace(changed, kernel_overhead=figures.call_overhead)
        provenance["processors.cpu.kernel_overhead"] = f"fitted: per CPU expert call ({source})"
    # compute=None: the pre-graph view is derived again from the processors
    return replace(profile, processors={**profile.processors, "cpu": changed}, compute=None, provenance=provenance)


Timer = Callable[[HardwareProfile], float]  # a profile -> seconds per decode token for one row


def fit_figures(rows: Sequence[tuple[str, HardwareProfile, Timer, float]], source: str) -> FitResult:
    """Least-squares figures for rows of (name, base profile, timer, measured seconds per token)."""
    if len(rows) < 2:
        raise UserError("two figures need at least two fitted rows", "anchor fit")
    design, target, base = [], [], []
    for _name, profile, timer, measured in rows:
        t0 = timer(profile)
        t_over = timer(apply_figures(profile, Figures(1.0, PROBE_OVERHEAD), "probe"))
        t_bw = timer(apply_figures(profile, Figures(1.0 / PROBE_INVERSE, 0.0), "probe"))
        a = (t_over - t0) / PROBE_OVERHEAD
        b = (t_bw - t0) / (PROBE_INVERSE - 1.0)
        # relative error: T0 + a o + b (x - 1) = M  ->  (a o + b x) / M = (M - T0 + b) / M
        design.append([a / measured, b / measured])
        target.append((measured - t0 + b) / measured)
        base.append(t0)
    solution, *_ = np.linalg.lstsq(np.asarray(design), np.asarray(target), rcond=None)
    overhead, inverse = float(solution[0]), float(solution[1])
    notes = []
    if inverse < 1.0:
        notes.append(f"the fit asks for {1 / inverse:.2f}x the datasheet bandwidth: the rows are faster than its ceiling")
    if overhead < 0.0:
        notes.append(f"the fit asks for a negative per-call overhead ({overhead * 1e6:.0f} us); 0 is used")
        overhead = 0.0
    if inverse <= 0.0:
        raise UserError(f"no physical fit: 1/efficiency = {inverse:.3g} (rows {', '.join(r[0] for r in rows)})",
                        "anchor fit")
    figures = Figures(efficiency=1.0 / inverse, call_overhead=overhead)
    residuals = tuple(timer(apply_figures(profile, figures, source)) / measured - 1.0
                      for _name, profile, timer, measured in rows)
    return FitResult(figures, tuple(r[0] for r in rows), residuals, tuple(notes))
