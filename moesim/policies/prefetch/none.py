"""No prefetch: every object arrives on demand (the baseline every prefetcher is compared with)."""

from __future__ import annotations

import numpy as np

from moesim.policies.base import PrefetchPolicy, PrefetchRequest, PrefetchView, ServedCells
from moesim.policies.registry import register


@register("none", kind="prefetch")
class NonePrefetch(PrefetchPolicy):
    """Proposes nothing; reads nothing. Demand fetch only."""

    proposes_nothing = True

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        return []

    def observe_cells(self, cells: ServedCells) -> None:
        pass

    def quiet_cells(self, link_bytes_per_s: float, compute_window_s: np.ndarray) -> np.ndarray:
        return np.ones(len(compute_window_s), dtype=bool)
