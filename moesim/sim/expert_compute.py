"""Per-expert compute seconds for the pipelined overlap mode (until the operator cost model lands).

Each distinct object a cell runs on the device is one kernel (docs/metrics.md, "Engine"):
  t = max(weight bytes / memory_bandwidth, 2 * tokens * params / peak_flops) + kernel_overhead
on the expert processor's roofline (HardwareProfile.device). Rows with no device tokens (run on the
CPU, dropped) cost nothing. moesim.sim.cost_model's expert_times is the grouped per-cell form used
by the per-layer barrier mode; this is its per-object form.
"""

from __future__ import annotations

import numpy as np

from moesim.hw_profiles.profile import Processor


def per_expert_times(req_bytes: np.ndarray, req_tokens: np.ndarray, req_params: np.ndarray,
                     processor: Processor, dtype: str = "bf16") -> np.ndarray:
    """Seconds each request row's expert takes on `processor` (0 where it has no device tokens)."""
    tokens = np.asarray(req_tokens, dtype=np.float64)
    roof = np.maximum(np.asarray(req_bytes, dtype=np.float64) / processor.memory_bandwidth,
                      2.0 * tokens * np.asarray(req_params, dtype=np.float64) / processor.flops(dtype))
    return np.where(tokens > 0, roof + processor.kernel_overhead, 0.0)


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
