"""`moesim calibrate`: microbenchmarks on the present GPU, fitted and written as a hardware profile.

This module holds what a calibration is configured with and what it writes: the profile YAML
(measured link, HBM, launch and capacity values; everything else from the base profile with its
provenance), a JSON report of fits, residuals, derates and the kernel table, and a CSV of raw
timings, each written atomically. The benchmarks themselves (and their method) are in
moesim.kernels.gpu_benchmarks, imported only when a GPU is there, so this module imports on a core
install and its output side is tested on CPU with synthetic measurements.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.atomic_io import write_text_atomic
from moesim.kernels.fitting import CopyFit, Spread
from moesim.kernels.profile_yaml import CalibrationEnv, Measured, calibrated_document, render_yaml
from moesim.kernels.shapes import ExpertShapes
from moesim.units import format_bytes, format_quantity

KiB, MiB, GiB = 2**10, 2**20, 2**30
COPY_TARGET_BYTES = 64 * MiB  # bytes moved per timed copy batch at small sizes
DEFAULT_SHAPES = ExpertShapes(hidden=2048, inter=1024, n_layers=1, n_experts=64, dtype="bf16")  # OLMoE-1B-7B
DEFAULT_TOP_K = 8


@dataclass(frozen=True)
class CalibrateConfig:
    """What to measure. Defaults follow gpu_method.md §9 (4 KiB..1 GiB, >= 3 trials, tokens 1..256)."""

    device_index: int = 0
    min_size: int = 4 * KiB
    max_size: int = 1 * GiB
    trials: int = 5
    shapes: ExpertShapes = DEFAULT_SHAPES
    top_k: int = DEFAULT_TOP_K
    kernel_tokens: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    kernel_active: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    kernel_reps: int = 10
    nvml_window_s: float = 1.5
    seed: int = 0

    @classmethod
    def quick(cls, **kwargs: Any) -> "CalibrateConfig":
        """A shorter run for a first look (fewer sizes, trials and histogram points)."""
        base = dict(max_size=256 * MiB, trials=3, kernel_tokens=(1, 4, 16, 64, 256), kernel_active=(1, 4, 16, 64),
                    kernel_reps=5, nvml_window_s=1.0)
        base.update(kwargs)
        return cls(**base)

    def sizes(self) -> list[int]:
        out, s = [], self.min_size
        while s <= self.max_size:
            out.append(s)
            s *= 2
        return out


@dataclass
class CalibrationResult:
    env: CalibrationEnv
    measured: list[Measured]
    report: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


# ---- outputs (CPU-testable) ------------------------------------------------------------------------
def spread_text(spread: Spread, kind: str) -> str:
    """"n=5 median 52.9 GB/s p10/p90 52.1/53.3 GB/s" (deciles in the median's unit when they share it)."""
    median = format_quantity(spread.median, kind, digits=4)
    value, unit = median.split(" ", 1)
    lo, hi = (format_quantity(v, kind, digits=4) for v in (spread.p10, spread.p90))
    if lo.endswith(" " + unit) and hi.endswith(" " + unit):
        deciles = f"{lo.split(' ', 1)[0]}/{hi.split(' ', 1)[0]} {unit}"
    else:
        deciles = f"{lo}/{hi}"
    return f"n={spread.n} median {median} p10/p90 {deciles}"


def copy_measurements(prefix: str, pinned: CopyFit, pageable: CopyFit | None, spread_at_max: Spread,
                      trials: int) -> list[Measured]:
    """Profile values of one link from its pinned (and pageable) sweep fits."""
    sizes = f"{len(pinned.sizes)} sizes {format_bytes(pinned.sizes[0])}..{format_bytes(pinned.sizes[-1])}"
    fit_note = (f"n={trials} trials per size, {sizes}, robust fit t = latency + bytes/bandwidth, "
                f"max |relative residual| {pinned.max_abs_residual:.1%}")
    out = [
        Measured(f"{prefix}.bandwidth", round_sig(pinned.bandwidth_Bps), "bandwidth",
                 f"{fit_note}; at {format_bytes(pinned.sizes[-1])}: {spread_text(spread_at_max, 'bandwidth')}"),
        Measured(f"{prefix}.latency", round_sig(pinned.latency_s), "time", f"intercept of the pinned sweep; {fit_note}"),
    ]
    if pageable is not None:
        out.append(Measured(f"{prefix}.pageable_bandwidth", round_sig(pageable.bandwidth_Bps), "bandwidth",
                            f"pageable host memory, n={trials} trials per size, {sizes}, robust fit, "
                            f"max |relative residual| {pageable.max_abs_residual:.1%}"))
    return out


def round_sig(x: float, digits: int = 4) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def output_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """(profile YAML, report JSON, raw CSV): the last two beside the first."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out, out.with_name(f"{stem}.calibration.json"), out.with_name(f"{stem}.calibration.csv")


def rows_csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_outputs(result: CalibrationResult, base: Any, out: str | Path, name: str) -> dict[str, str]:
    """Write the profile YAML, the JSON report and the raw CSV.

    All three are rendered before any is written (a value that cannot be written fails the call
    with nothing on disk), then each is written atomically.
    """
    profile_path, report_path, csv_path = output_paths(out)
    doc = calibrated_document(base, result.measured, result.env, name)
    header = f"written by moesim calibrate on {result.env.date} ({result.env.gpu}); raw timings in {csv_path.name}"
    texts = {
        profile_path: render_yaml(doc, header),
        report_path: json.dumps({"env": result.env.to_dict(), "profile": profile_path.name, **result.report},
                                indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n",
        csv_path: rows_csv(result.rows),
    }
    for path, text in texts.items():
        write_text_atomic(path, text)
    return {"profile": str(profile_path), "report": str(report_path), "raw": str(csv_path)}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def calibrate(config: CalibrateConfig) -> CalibrationResult:
    """Run every benchmark on the configured CUDA device (the caller checked that one exists)."""
    from moesim.kernels.gpu_benchmarks import Calibrator

    return Calibrator(config).run()
