"""Cache bookkeeping per byte read, added to advise's timed results the way `moesim check-run` adds it.

    per_byte = bookkeeping_per_byte("results/fidelity/phone-oneplus-15r-fitted-qwen.yaml")  # 1.25e-10 s/B
    summary = with_bookkeeping(result, trace, profile, per_byte)

A profile fitted by `moesim fit-profile` / `make fidelity` carries, in its header, the seconds of cache
bookkeeping per byte read (the engine's mgmt_ms: copying each read out of its lane's buffer into the
expert's slot). The clock has no field for it yet (moesim/runs/engine_map.py, ENGINE_HAS_MGMT_PER_BYTE),
so check-run adds per_byte x the bytes a pass copied to that pass (moesim/runs/check.py). A measured
run's TPOT contains that time, so advise must add it too before its predictions are compared with one:
left out, a configuration would look faster than the run by the bookkeeping alone (20 ms of qwen's
177 ms a token on the phone). It also ranks configurations: one that reads fewer bytes pays less.

Each pass ends later by its own bookkeeping and every later pass starts later by all earlier passes'
(as in check-run, nothing overlaps it); TTFT, TPOT, total time and tokens/s follow from the shifted
pass ends, and the energy adds the device's active power over the added seconds (the copy runs on it).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from moesim.hw_profiles.profile import HardwareProfile
from moesim.runs.engine_map import pass_bookkeeping
from moesim.traces.format.trace import Trace


def with_bookkeeping(result: Any, trace: Trace, profile: HardwareProfile, per_byte: float) -> dict[str, Any]:
    """The result's summary with per_byte x bytes read added to every pass; the summary itself if per_byte is 0."""
    from moesim.sim.timed_result import _request_table, _stats

    summary = result.summary
    if per_byte <= 0:
        return summary
    cells = result.cells
    extra = pass_bookkeeping(cells, trace.n_passes, per_byte)
    after = np.cumsum(extra)  # through each pass
    before = after - extra
    cell_pass = cells["pass"].to_numpy(dtype=np.int64)
    start = cells["start_s"].to_numpy(dtype=np.float64) + before[cell_pass]
    end = cells["end_s"].to_numpy(dtype=np.float64) + after[cell_pass]
    requests = _request_table(trace, start, end, None)
    added = float(extra.sum())
    out = copy.deepcopy(summary)
    total = float(summary["time"]["total_s"]) + added
    out["time"]["total_s"] = total
    out["time"]["bookkeeping_s"] = added
    out["bookkeeping_per_byte"] = per_byte
    out["ttft_s"] = _stats(requests["ttft_s"])
    out["tpot_s"] = _stats(requests["tpot_s"])
    tokens = float(requests["output_tokens"].sum())
    out["tokens_per_s"] = tokens / total if total > 0 and len(requests) else None
    device = profile.device
    watts = device.active_watts if device.active_watts is not None else profile.power.active_watts
    out["energy_j"]["total"] = float(summary["energy_j"]["total"]) + (watts or 0.0) * added
    out["active_s"] = float(summary.get("active_s") or 0.0) + added
    bounds = out.get("bounds")
    if bounds:  # the bounds leave bookkeeping out: still bounds, further from the result
        for key in ("ttft", "tpot"):
            b = bounds.get(f"{key}_bound_s")
            mean = out[f"{key}_s"]["mean"]
            bounds[f"{key}_over_bound"] = mean / b if b and mean is not None else None
        tb = bounds.get("time_bound_s")
        bounds["time_over_bound"] = total / tb if tb else None
    return out
