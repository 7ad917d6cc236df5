"""Fit a profile's free figures to one measured run by weighted least squares.

Each figure is fitted to the measured column that isolates its mechanism, not to the wall time:
  compute_s (the engine's residual) <- dense + expert compute + per-token overhead
  io_s (summed lane busy time under overlap; read wall time serial) <- storage figures
  mgmt_s <- cache bookkeeping per byte copied
  prefill_s <- the prefill pass (compute-bound: batched_flops, else peak_flops)
so wall time, and with it the overlap mechanism, stays a prediction. Residual blocks are weighted by
their own robust scatter, each residual by its Huber weight (iteratively re-weighted: interference
spikes of a phone's steps count linearly, not squared; Gauss-Newton with Levenberg damping on the
engine's clock (moesim/runs/step_model.py)). Uncertainties: the square roots of diag((J^T J)^-1) of the
weighted Jacobian at the optimum. Identifiability: a figure whose column is (nearly) a combination
of the others' (smallest singular value of the column-normalised Jacobian below 1e-3 of the
largest) cannot be told apart by this run: the lowest-priority figure in that direction keeps its
base value and is reported as not identified, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.runs.measured import MeasuredRun
from moesim.runs.step_model import ALL_FIGURES, SimulatorModel

# which figure keeps its freedom when two cannot be told apart (first = kept longest)
PRIORITY = ("memory_bandwidth", "ssd_bandwidth", "peak_flops", "batched_flops", "mgmt_per_byte", "ssd_bandwidth_qd1",
            "ssd_latency", "token_overhead", "launch_overhead")
# typical magnitudes (the fit's units) for figures whose base value may be 0
SCALE_FLOOR = {"launch_overhead": 1e-4, "token_overhead": 1e-3, "mgmt_per_byte": 1e-10, "ssd_latency": 1e-5}
UNITS = {"memory_bandwidth": "B/s", "peak_flops": "FLOP/s", "batched_flops": "FLOP/s", "launch_overhead": "s",
         "ssd_bandwidth": "B/s", "ssd_bandwidth_qd1": "B/s", "ssd_latency": "s", "token_overhead": "s", "mgmt_per_byte": "s/B"}
IDENTIFY_RATIO = 1e-3
IRLS_ROUNDS = 12


@dataclass
class FitResult:
    figures: dict[str, float]  # all figures: fitted ones replaced
    fitted: dict[str, tuple[float, float]]  # name -> (value, 1-sigma)
    not_identified: dict[str, str]  # name -> why
    blocks: dict[str, dict[str, float]]  # residual block -> rms, sigma, n
    n_obs: int
    iterations: int
    notes: list[str] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)  # name -> the rule that set it (no fit, no sigma)

    def to_dict(self) -> dict[str, Any]:
        return {"figures": self.figures,
                "fitted": {k: {"value": v, "sigma": s, "unit": UNITS[k]} for k, (v, s) in self.fitted.items()},
                "not_identified": self.not_identified, "blocks": self.blocks, "n_obs": self.n_obs,
                "iterations": self.iterations, "notes": self.notes,
                "derived": {k: {"value": self.figures[k], "unit": UNITS[k], "rule": why} for k, why in self.derived.items()}}


class _Problem:
    """Residual blocks of one run against the fast model."""

    def __init__(self, run: MeasuredRun, model: SimulatorModel,
                 ties: dict[str, tuple[str, float]] | None = None) -> None:
        self.ties = dict(ties or {})
        steps = run.steps
        n_dec = int(model.decode.sum())
        if n_dec == 0:
            raise UserError("the trace has no decode passes to compare with the run's steps", run.source)
        self.n = min(n_dec, len(steps))
        self.model = model
        self.overlap = bool(run.config.overlap)
        self.targets: dict[str, np.ndarray] = {}
        for block, column in (("compute", "compute_s"), ("io", "io_s"), ("mgmt", "mgmt_s")):
            values = steps[column].to_numpy(dtype=float)[: self.n]
            if np.isfinite(values).all() and (values > 0).any():
                self.targets[block] = values
        if run.config.prefill_s:
            self.targets["prefill"] = np.array([float(run.config.prefill_s)])
        if not self.targets:
            raise UserError("the run has no compute, io, mgmt or prefill measurements to fit", run.source)
        self.sigma = {b: max(0.1 * float(np.mean(np.abs(v))), 1e-6) for b, v in self.targets.items()}
        # Huber weights per residual (1 = plain least squares), re-estimated with the block scales
        self.weight = {b: np.ones(v.size) for b, v in self.targets.items()}

    def tied(self, figures: dict[str, float]) -> dict[str, float]:
        """`figures` with each tied figure set to its factor x the figure it follows."""
        return figures | {name: figures[other] * factor for name, (other, factor) in self.ties.items()}

    def predict(self, figures: dict[str, float]) -> dict[str, np.ndarray]:
        t = self.model.times(self.tied(figures))
        dec = np.flatnonzero(t.decode)[: self.n]
        out = {"compute": t.compute[dec], "io": (t.io_busy if self.overlap else t.stall)[dec], "mgmt": t.mgmt[dec],
               "prefill": np.array([t.total[~t.decode].sum()])}
        return {b: out[b] for b in self.targets}

    def residuals(self, figures: dict[str, float]) -> np.ndarray:
        pred = self.predict(figures)
        blocks = self.only or tuple(self.targets)
        return np.concatenate([(pred[b] - self.targets[b]) / self.sigma[b] * np.sqrt(self.weight[b]) for b in blocks])

    def reweight(self, figures: dict[str, float], blocks: tuple[str, ...]) -> None:
        """Scale and Huber weights of each block from its residuals at `figures` (see huber_weights)."""
        pred = self.predict(figures)
        for b in blocks:
            target = self.targets[b]
            if target.size > 1:
                self.sigma[b], self.weight[b] = huber_weights(pred[b] - target)

    only: tuple[str, ...] | None = None  # restrict the residuals to these blocks (staged fitting)


HUBER_K = 1.345  # the usual Huber constant: 95 % efficiency when the scatter is normal


def huber_weights(residuals: np.ndarray) -> tuple[float, np.ndarray]:
    """Robust scale (1.4826 x the median absolute deviation) and Huber weights min(1, k s / |r|).

    A phone's measured steps carry interference spikes (another app, a thermal dip: qwen.metrics has
    compute residuals of 257, 311 and 565 ms against a median of 87 ms) that are no property of the
    configuration; plain least squares moves a rate to half-explain them, Huber weights count a step
    beyond k robust sigmas only linearly.
    """
    r = np.asarray(residuals, dtype=float)
    scale = max(1.4826 * float(np.median(np.abs(r - np.median(r)))), 1e-6)
    w = np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(r), 1e-300))
    return scale, w


def fit_run(run: MeasuredRun, model: SimulatorModel, base: dict[str, float], free: tuple[str, ...] = ALL_FIGURES,
            max_iter: int = 12, ties: dict[str, tuple[str, float]] | None = None) -> FitResult:
    """Decode figures first (on the decode blocks, decode taken as bandwidth-bound), then the prefill's
    rate alone on the prefill; uncertainties from the joint Jacobian at the result.

    The prefill's rate is batched_flops (matrix-matrix work) when free: peak_flops, the matrix-vector rate
    a batch-1 decode would use, then moves no measured column while decode is bandwidth-bound, and is set
    to the lowest rate that keeps it so (or its base value, if higher). Without batched_flops free the
    prefill fits peak_flops itself, raised to that floor if the prefill asks for less.

    `ties` {name: (other, factor)}: `name` is not fitted but kept at factor x `other` (a ratio known
    from elsewhere, e.g. the storage's deepest-queue throughput as a multiple of one read's)."""
    problem = _Problem(run, model, ties)
    free = tuple(f for f in free if f in base and f not in problem.ties)
    not_identified: dict[str, str] = {}
    derived: dict[str, str] = {}
    figures = dict(base)
    if "batched_flops" in free:
        if "prefill" not in problem.targets:
            not_identified["batched_flops"] = ("the run has no prefill measurement, the only work over more than one "
                                               "token per weight read; kept at base value")
            free = tuple(f for f in free if f != "batched_flops")
        elif not figures["batched_flops"]:
            figures["batched_flops"] = figures["peak_flops"]  # start where the profile's one rate is
    scale = {f: max(abs(figures[f]), SCALE_FLOOR.get(f, 0.0)) or 1.0 for f in free}
    decode_blocks = tuple(b for b in problem.targets if b != "prefill")
    prefill_rate = next((f for f in ("batched_flops", "peak_flops") if f in free), None)
    staged = prefill_rate is not None and "prefill" in problem.targets and decode_blocks
    staged_note = ""
    iterations = 0
    unbound = {f: 1e30 for f in ("peak_flops", "batched_flops") if f in free}  # decode at batch 1 reads weights
    start = {f: figures[f] for f in unbound}
    if staged:
        problem.only = decode_blocks
        figures, n_it = _solve(problem, figures | unbound, [f for f in free if f not in unbound], scale,
                               not_identified, max_iter)
        iterations += n_it
        decode_compute = problem.predict(figures)["compute"] if "compute" in problem.targets else None
        figures.update(start)
        if prefill_rate == "batched_flops" and "peak_flops" in free:
            if decode_compute is None:
                not_identified["peak_flops"] = "no decode compute column to bound it; kept at base value"
            else:
                figures["peak_flops"] = _bandwidth_bound_floor(problem, figures, decode_compute)
                derived["peak_flops"] = ("the matrix-vector rate: decode at batch 1 reads weights (bandwidth-bound), "
                                         "so no measured column pins it; set to the lowest rate that keeps decode "
                                         f"bandwidth-bound, or the base {base['peak_flops']:.3g} if higher")
        problem.only = ("prefill",)
        if prefill_rate == "batched_flops":  # may start where the prefill reads weights: flat, no gradient
            figures, n_it = _monotone_rate(problem, figures, prefill_rate)
        else:
            figures, n_it = _gauss_newton(problem, figures, [prefill_rate], scale, max_iter)
        iterations += n_it
        problem.only = None
        if prefill_rate == "peak_flops" and decode_compute is not None:
            floor = _bandwidth_bound_floor(problem, figures, decode_compute)
            if floor > figures["peak_flops"]:
                staged_note = (f"the prefill alone asks for peak_flops {figures['peak_flops']:.3g} FLOP/s, which would "
                               "make decode FLOP-bound and break the decode fit (the roofline with the trace's FLOP "
                               f"count cannot fit both); raised to {floor:.3g}, the lowest that keeps decode "
                               "bandwidth-bound")
                figures["peak_flops"] = floor
    else:
        figures, n_it = _solve(problem, figures, list(free), scale, not_identified, max_iter)
        iterations += n_it
    active = [f for f in free if f not in not_identified and f not in derived]
    if staged:  # each stage's figures get their uncertainty from the blocks and the regime they were fitted in
        fitted = {}
        problem.only = decode_blocks
        decode_active = [f for f in active if f not in unbound]
        fitted.update(_sigmas(problem, figures | unbound, decode_active, scale, figures))
        problem.only = ("prefill",)
        fitted.update(_sigmas(problem, figures, [prefill_rate], scale, figures))
        problem.only = None
    else:
        fitted = _sigmas(problem, figures, active, scale, figures)
    res = problem.residuals(figures)
    blocks = {}
    offset = 0
    for b, target in problem.targets.items():
        r = res[offset: offset + target.size] * problem.sigma[b]
        offset += target.size
        blocks[b] = {"rms_s": float(np.sqrt(np.mean(r ** 2))), "mean_measured_s": float(np.mean(target)),
                     "n": int(target.size)}
    notes = [staged_note] if staged_note else []
    weak = [f for f, (v, sd) in fitted.items() if v and sd > abs(v)]
    if weak:
        notes.append(f"weakly identified (1 sigma larger than the value): {', '.join(weak)}; their combination with "
                     "the correlated figures is what the run pins down")
    if "prefill" in problem.targets:
        notes.append("prefill is one measurement: the figure fitted to it has no scatter of its own; its sigma "
                     "uses the decode blocks' weighting and understates the run-to-run noise")
    for name, (other, factor) in problem.ties.items():
        notes.append(f"{name} tied to {factor:g} x {other} (not fitted)")
    return FitResult(problem.tied(figures), fitted, not_identified, blocks, int(res.size), iterations, notes, derived)


def _sigmas(problem: _Problem, at: dict[str, float], active: list[str], scale: dict[str, float],
            figures: dict[str, float]) -> dict[str, tuple[float, float]]:
    jac = _jacobian(problem, at, active, scale)
    cov = np.linalg.pinv(jac.T @ jac)
    return {f: (figures[f], float(np.sqrt(max(cov[i, i], 0.0))) * scale[f]) for i, f in enumerate(active)}


def _bandwidth_bound_floor(problem: _Problem, figures: dict[str, float], decode_compute: np.ndarray) -> float:
    """Lowest peak_flops at which decode compute stays within 0.5 % of its bandwidth-bound value (bisection)."""
    def ok(peak: float) -> bool:
        got = problem.predict(figures | {"peak_flops": peak})["compute"]
        return bool(np.all(got <= decode_compute * 1.005))

    lo, hi = figures["peak_flops"], max(figures["peak_flops"], 1.0)
    if ok(lo):
        return lo
    while not ok(hi):
        hi *= 2
    for _ in range(20):
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _monotone_rate(problem: _Problem, figures: dict[str, float], name: str) -> tuple[dict[str, float], int]:
    """The rate at which the predicted prefill equals the measured one, by bisection in log space.

    The prefill's time never rises with a FLOP rate, but it is flat wherever its work reads weights
    (bandwidth-bound): a gradient step from such a start does not move, so the rate is bracketed first
    (doubling or halving), then bisected to 1e-6 of itself. A prefill faster than the weights can be
    read at any rate leaves the rate at the bracket's top."""
    target = float(problem.targets["prefill"][0])

    def slower(rate: float) -> bool:  # predicted prefill still above the measured one
        return float(problem.predict(figures | {name: rate})["prefill"][0]) > target

    rate = figures[name]
    evals = 1
    lo, hi = (rate, rate * 2) if slower(rate) else (rate / 2, rate)
    while slower(hi) and evals < 60:
        lo, hi, evals = hi, hi * 2, evals + 1
    while not slower(lo) and evals < 120:
        lo, hi, evals = lo / 2, lo, evals + 1
    while hi / lo > 1 + 1e-6:
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if slower(mid) else (lo, mid)
        evals += 1
    return figures | {name: hi}, evals


def _solve(problem: _Problem, figures: dict[str, float], free: list[str], scale: dict[str, float],
           not_identified: dict[str, str], max_iter: int) -> tuple[dict[str, float], int]:
    """Drop figures the blocks cannot identify (back to their base values), fit the rest, re-weight the
    blocks by their robust scatter and each residual by its Huber weight; repeat (iteratively
    re-weighted least squares) until no figure is dropped and no figure moves by more than 1e-4."""
    base = dict(figures)
    iterations = 0
    active = [f for f in free if f not in not_identified]
    for _ in range(IRLS_ROUNDS):
        while True:
            jac = _jacobian(problem, figures, active, scale)
            dropped = _unidentifiable(jac, active, problem)
            if not dropped:
                break
            name, why = dropped
            not_identified[name] = why
            active.remove(name)
            figures[name] = base[name]
        before = dict(figures)
        figures, n_it = _gauss_newton(problem, figures, active, scale, max_iter)
        iterations += n_it
        problem.reweight(figures, problem.only or tuple(problem.targets))
        if all(abs(figures[f] - before[f]) <= 1e-4 * scale[f] for f in active):
            break
    return figures, iterations


def _jacobian(problem: _Problem, figures: dict[str, float], active: list[str], scale: dict[str, float]) -> np.ndarray:
    """Forward differences (each column one simulator run), 1e-3 of the figure's scale."""
    base = problem.residuals(figures)
    cols = []
    for f in active:
        up = dict(figures)
        up[f] = figures[f] + 1e-3 * scale[f]
        cols.append((problem.residuals(up) - base) / 1e-3)
    return np.column_stack(cols) if cols else np.zeros((base.size, 0))


def _unidentifiable(jac: np.ndarray, active: list[str], problem: _Problem) -> tuple[str, str] | None:
    if not active:
        return None
    norms = np.linalg.norm(jac, axis=0)
    for i, f in enumerate(active):
        if norms[i] < 1e-9:
            return f, "no measured column of this run depends on it"
    _, s, vt = np.linalg.svd(jac / norms, full_matrices=False)
    if s[-1] >= IDENTIFY_RATIO * s[0]:
        return None
    direction = np.abs(vt[-1])
    involved = [active[i] for i in np.argsort(-direction) if direction[i] > 0.2]
    victim = max(involved, key=lambda f: PRIORITY.index(f) if f in PRIORITY else len(PRIORITY))
    others = ", ".join(f for f in involved if f != victim)
    return victim, f"moves the measured columns only as {others} does (collinear in this run); kept at base value"


def _gauss_newton(problem: _Problem, figures: dict[str, float], active: list[str], scale: dict[str, float],
                  max_iter: int) -> tuple[dict[str, float], int]:
    figures = dict(figures)
    cost = float(np.sum(problem.residuals(figures) ** 2))
    damping = 1e-3
    it = 0
    for it in range(1, max_iter + 1):
        jac = _jacobian(problem, figures, active, scale)
        r = problem.residuals(figures)
        jtj = jac.T @ jac
        g = jac.T @ r
        improved = False
        for _ in range(12):
            step = np.linalg.solve(jtj + damping * np.diag(np.diag(jtj) + 1e-12), -g)
            trial = dict(figures)
            for i, f in enumerate(active):
                trial[f] = max(figures[f] + step[i] * scale[f], 0.0 if f in SCALE_FLOOR else 1e-3 * scale[f])
            new_cost = float(np.sum(problem.residuals(trial) ** 2))
            if new_cost < cost:
                improved = True
                figures, damping = trial, max(damping / 3, 1e-9)
                rel = (cost - new_cost) / max(cost, 1e-300)
                cost = new_cost
                break
            damping *= 4
        if not improved or rel < 1e-10:
            break
    return figures, it
