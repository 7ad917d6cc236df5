"""A measured run: per-decode-step measurements and the configuration they were taken under.

Columns of `MeasuredRun.steps` (seconds and bytes; NaN where the source has no such column):
  step        1-based decode step
  wall_s      one decode call, wall time
  io_s        flash read time (under overlap: the SUM of per-lane busy time, so it can exceed wall_s)
  compute_s   the engine's residual (wall - io - mgmt serial; wall - stall - mgmt overlapped)
  stall_s     wall time compute waited for reads
  mgmt_s      cache bookkeeping time
  read_bytes  bytes read from storage that step (O_DIRECT padding included)
  hits        cache hits that step (differenced from a cumulative column where that is all there is)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

STEP_COLUMNS = ("step", "wall_s", "io_s", "compute_s", "stall_s", "mgmt_s", "read_bytes", "hits")


@dataclass(frozen=True)
class RunConfig:
    """How the run was configured; None where neither the file nor the options say.

    cache_mib: expert-cache budget (0 = no cache: every routed expert is re-read each step);
    lanes: reads in flight (the engine's --io-threads); overlap: reads overlapped with expert
    compute (True) or a per-layer barrier (False); mmap: no streaming, the OS page cache caches
    the file; top_k: experts run per token; n_prompt / prefill_s: the prompt and its measured time.
    """

    model: str | None = None
    cache_mib: float | None = None
    lanes: int | None = None
    overlap: bool | None = None
    prefetch: str = "none"
    top_k: int | None = None
    n_prompt: int | None = None
    prefill_s: float | None = None
    mmap: bool = False
    n_decode: int | None = None

    def merged(self, **options: Any) -> "RunConfig":
        """Options fill what the files left open and override what they said (None = keep)."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def missing(self, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if getattr(self, n) is None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        if self.mmap:
            return f"mmap, k={self.top_k}"
        cache = "?" if self.cache_mib is None else f"{self.cache_mib:g} MiB"
        mode = "?" if self.overlap is None else ("overlap" if self.overlap else "serial")
        return f"cache {cache}, {self.lanes} lanes, {mode}, k={self.top_k}"


@dataclass
class MeasuredRun:
    """One run: `steps` (columns above), its configuration, the raw summary and where it came from."""

    name: str
    source: str
    steps: pd.DataFrame
    config: RunConfig
    summary: dict[str, Any] = field(default_factory=dict)
    sidecar: dict[str, float] = field(default_factory=dict)  # memory / temperature figures (.metrics sidecars)
    hit_pct_cumulative: pd.Series | None = None  # the engine's cumulative hit %, when that is what it gave

    @property
    def n_steps(self) -> int:
        return int(len(self.steps))

    def tpot_s(self) -> dict[str, float]:
        """Mean, median and p90 of the per-step wall time."""
        wall = self.steps["wall_s"].astype(float)
        return {"mean": float(wall.mean()), "median": float(wall.median()), "p90": float(wall.quantile(0.9))}
