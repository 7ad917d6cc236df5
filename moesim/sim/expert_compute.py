"""Per-wait compute seconds for the pipelined overlap mode (docs/metrics.md, "Engine").

The per-request expert times come from moesim.sim.compute.expert_request_times; the engine needs
them per waited copy: the compute of the object each copy brings, in the cell that waits for it.
"""

from __future__ import annotations

import numpy as np



def wait_compute(waits: np.ndarray, wait_offsets: np.ndarray, copy_obj: np.ndarray, req_cell: np.ndarray,
                 req_obj: np.ndarray, req_time: np.ndarray, n_objects: int) -> np.ndarray:
    """Compute seconds of the object each waited copy brings, in the cell that waits (0 if it runs none)."""
    n_cells = wait_offsets.size - 1
    wait_cell = np.repeat(np.arange(n_cells, dtype=np.int64), np.diff(wait_offsets))
    keys = req_cell.astype(np.int64) * n_objects + req_obj.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    want = wait_cell * n_objects + copy_obj[waits].astype(np.int64)
    at = np.searchsorted(sorted_keys, want)
    at_clipped = np.minimum(at, max(sorted_keys.size - 1, 0))
    found = (at < sorted_keys.size) & (sorted_keys[at_clipped] == want) if sorted_keys.size else np.zeros(want.size, bool)
    out = np.zeros(want.size)
    out[found] = req_time[order[at_clipped[found]]]
    return out
