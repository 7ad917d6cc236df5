"""Measured expert-kernel times (moesim calibrate's report) used in place of the roofline.

`moesim calibrate` (moesim/kernels/calibrate.py, moesim/kernels/gpu_benchmarks.py) times the
Triton grouped SwiGLU kernel over a grid of `active_experts` x `tokens_per_expert` and writes the
medians to its JSON report under expert_kernel.points, with the expert shape under
expert_kernel.shapes. A table applies only to experts of that shape (hidden, intermediate). Between
grid points times are interpolated linearly in log2(tokens) then log2(active); beyond the largest
active count they scale in proportion (more experts = more weights to read), and beyond the largest
token count in proportion to tokens (compute bound); below the smallest they are clamped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError


@dataclass(frozen=True)
class KernelTable:
    hidden: int
    intermediate: int
    dtype: str
    active: np.ndarray  # sorted grid values
    tokens: np.ndarray
    seconds: np.ndarray  # [len(active), len(tokens)]
    source: str = ""

    def matches(self, hidden: int, intermediate: int) -> bool:
        return self.hidden == hidden and self.intermediate == intermediate

    def times(self, active: np.ndarray, tokens_per_expert: np.ndarray) -> np.ndarray:
        a, t = np.broadcast_arrays(np.asarray(active, dtype=np.float64), np.asarray(tokens_per_expert, dtype=np.float64))
        a, t = a.ravel(), t.ravel()
        t_max, a_max = self.tokens[-1], self.active[-1]
        lt = np.log2(np.clip(t, self.tokens[0], t_max))
        la = np.log2(np.clip(a, self.active[0], a_max))
        rows = np.stack([np.interp(lt, np.log2(self.tokens), row) for row in self.seconds])  # [n_active, n]
        grid = np.log2(self.active)
        hi = np.clip(np.searchsorted(grid, la), 1, max(grid.size - 1, 1)) if grid.size > 1 else np.zeros(a.size, int)
        if grid.size > 1:
            lo = hi - 1
            w = (la - grid[lo]) / (grid[hi] - grid[lo])
            cols = np.arange(a.size)
            out = rows[lo, cols] * (1 - w) + rows[hi, cols] * w
        else:
            out = rows[0]
        return out * np.where(a > a_max, a / a_max, 1.0) * np.where(t > t_max, t / t_max, 1.0)


def table_from_report(report: dict[str, Any], where: str) -> KernelTable:
    """The table in a calibration report (its "expert_kernel" section)."""
    section = report.get("expert_kernel")
    if not isinstance(section, dict) or "points" not in section or "shapes" not in section:
        raise UserError("no expert_kernel.points in the calibration report", where)
    shapes = section["shapes"]
    pts = section["points"]
    try:
        active = sorted({int(p["active_experts"]) for p in pts})
        tokens = sorted({int(p["tokens_per_expert"]) for p in pts})
        grid = np.full((len(active), len(tokens)), np.nan)
        for p in pts:
            grid[active.index(int(p["active_experts"])), tokens.index(int(p["tokens_per_expert"]))] = float(p["median"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"malformed expert_kernel point: {exc}", where) from None
    if np.isnan(grid).any():
        raise UserError("expert_kernel.points do not fill the active x tokens grid", where)
    return KernelTable(int(shapes["hidden"]), int(shapes["inter"]), str(shapes.get("dtype", "bf16")),
                       np.asarray(active, dtype=np.float64), np.asarray(tokens, dtype=np.float64), grid, where)


def load_kernel_table(path: str | Path) -> KernelTable:
    """A table from a `moesim calibrate` JSON report file."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read calibration report: {exc}", str(path)) from None
    return table_from_report(report, str(path))
