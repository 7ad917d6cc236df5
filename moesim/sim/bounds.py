"""Bounds beside every timed result: the fewest misses and the shortest time any policy could reach.

Misses: Belady/MIN in the count replay at the same capacity and scope (event mode).

Time (docs/metrics.md, "Bounds", has the derivation). Let C_c = D_c + X_c be cell c's compute
(dense + experts, every expert on the device), W the aggregate bandwidth of the last hop into the
cache tier, latency ignored:
- ideal schedule: Belady's miss bytes stream back to back over W from t = 0 and every cell's experts
  start once its own and all earlier cells' bytes have landed:
      E_c = max(E_{c-1} + C_c, A_c + X_c),  A_c = cumulative Belady miss bytes through c / W
  (per-expert overlap: A_c + 0, as an expert may start the moment its own bytes land)
  (and, when objects live on SSD behind a cold DRAM cache, also >= cumulative first-use bytes /
  SSD bandwidth). E_c bounds the end of cell c from below for every lossless policy: compute is
  serial, the link moves at most W, and no policy, prefetching or not, has fetched fewer bytes by
  cell c than MIN (exact for equal object sizes, MIN being optimal on every prefix).
- any run of passes (a, b]: it lasts at least the largest of
      the sum of its cells' C_c,
      the sum over its passes of (distinct bytes the pass reads - capacity) / W,
      (Belady's miss bytes in (a, b] - capacity) / W.
  At the start of the run at most `capacity` bytes are resident or in flight, and any policy
  starting from any cache state fetches at least MIN-from-empty - capacity there, which is at least
  Belady's (warm) misses in the run - capacity (per layer partition with scope "layer"). Unlike
  E_c this bounds intervals, so it bounds TTFT and TPOT.
The sum over cells of max(C_c, B_c / W) is not a lower bound (a prefetch moves cell c+1's bytes
during cell c's compute), so it is not used. The bounds assume every routed expert runs on the
device at full or reduced (lowbit) bytes; for "cpu" and "drop" they are reported but marked invalid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.registry import lookup
from moesim.sim.cache_core import MISS_COMPULSORY
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.requests import RequestStream
from moesim.sim.topology import Topology
from moesim.traces.format.trace import Trace


@dataclass
class Bounds:
    belady_misses: int | None  # None when no "belady" policy is registered
    belady_miss_bytes: int | None
    ideal_cell_end: np.ndarray  # lower bound on every cell's end time, from t = 0
    pass_min_duration: np.ndarray  # lower bound on every pass's duration
    valid: bool  # False for miss handlers that avoid copies (cpu, drop)
    bandwidth: float = 0.0  # W, bytes/s
    partition_capacity: np.ndarray = field(default_factory=lambda: np.zeros(1))  # bytes per cache partition
    belady_cum: np.ndarray | None = None  # [passes + 1, partitions] cumulative Belady miss bytes (scaled)
    belady_is_bound: bool = True
    """False when some cell's objects do not fit its partition: the in-use rule then binds, MIN's
    optimality argument (one request at a time, any resident evictable) no longer holds, and
    Belady's misses are reported for information only (the time bounds then ignore them)."""

    @property
    def time_bound_s(self) -> float:
        ideal = float(self.ideal_cell_end[-1]) if self.ideal_cell_end.size else 0.0
        return max(ideal, float(self.pass_min_duration.sum()))

    def interval_bound(self, first_pass: int, last_pass: int) -> float:
        """Lower bound on the time from the start of `first_pass` to the end of `last_pass`."""
        if last_pass < first_pass:
            return 0.0
        passes = float(self.pass_min_duration[first_pass : last_pass + 1].sum())
        if self.belady_cum is None or self.bandwidth <= 0:
            return passes
        fetched = self.belady_cum[last_pass + 1] - self.belady_cum[first_pass]
        must = float(np.maximum(fetched - self.partition_capacity, 0.0).sum())
        return max(passes, must / self.bandwidth)


# MIN with bypass: the fewest misses of any policy, including ones that stream a miss instead of
# caching it (forced-admit MIN only bounds policies that cache every miss).
BOUND_POLICY = "belady-bypass"


def belady_available() -> bool:
    try:
        lookup(BOUND_POLICY, "eviction")
    except UserError:
        return False
    return True


def compute_bounds(
    trace: Trace,
    stream: RequestStream,
    topology: Topology,
    dense: np.ndarray,
    expert_full: np.ndarray,
    capacity_bytes: int,
    scope: str,
    layer_capacity: tuple[int, ...] | None,
    seed: int,
    byte_scale: float = 1.0,
    valid: bool = True,
    pipelined: bool = False,
) -> Bounds:
    """Both bounds for one configuration. `byte_scale` < 1 for low-bit fetches (bytes x bits/16).

    `pipelined` (per-expert overlap): a cell's experts may run while its bytes arrive, so after its
    last byte lands no more than the last expert's compute remains; the bound then drops X_c from
    A_c + X_c (still a bound: that remainder is >= 0).
    """
    n_cells = trace.n_cells
    obj_bytes = trace.object_bytes_array().astype(np.float64) * byte_scale
    req_bytes = obj_bytes[stream.obj]
    W = topology.last_hop_bandwidth()
    compute = dense + expert_full

    n_l = trace.meta.n_layers
    if scope == "layer":
        caps = (np.asarray(layer_capacity, dtype=np.float64) if layer_capacity is not None
                else np.full(n_l, float(int(capacity_bytes) // n_l)))
    else:
        caps = np.asarray([float(capacity_bytes)])
    belady_misses = belady_bytes = belady_cum = None
    arrive = np.zeros(n_cells)
    fits = _every_cell_fits(trace, stream, req_bytes, caps, scope)
    if belady_available():
        result = count_replay(trace, ReplayConfig(policy=BOUND_POLICY, capacity_bytes=int(capacity_bytes), scope=scope,
                                                  mode="event", seed=seed, layer_capacity=layer_capacity))
        miss = result.outcomes >= MISS_COMPULSORY
        per_cell = np.bincount(stream.cell[miss], weights=req_bytes[miss], minlength=n_cells)
        belady_misses = int(miss.sum())
        belady_bytes = int(round(float(per_cell.sum()) / byte_scale)) if byte_scale > 0 else 0
    if belady_available() and fits:
        arrive = np.cumsum(per_cell) / W
        part = trace.cell_layer.astype(np.int64) if scope == "layer" else np.zeros(n_cells, dtype=np.int64)
        n_part = caps.size
        cell_pass = trace.cell_pass().astype(np.int64)
        per = np.bincount(cell_pass * n_part + part, weights=per_cell,
                          minlength=trace.n_passes * n_part).reshape(trace.n_passes, n_part)
        belady_cum = np.vstack([np.zeros((1, n_part)), np.cumsum(per, axis=0)])
        # slots are full size: a fetch into a freed slot moves at least byte_scale of it
        caps = caps * byte_scale
    if topology.far and topology.stage is not None:
        first = _first_use(stream, trace.n_objects)
        per_cell = np.bincount(stream.cell[first], weights=req_bytes[first], minlength=n_cells)
        arrive = np.maximum(arrive, np.cumsum(per_cell) / topology.ssd_bandwidth())
    prefix = np.cumsum(compute)
    tail = np.zeros(n_cells) if pipelined else expert_full
    gap = np.maximum.accumulate(np.maximum(arrive + tail - prefix, 0.0)) if n_cells else np.zeros(0)
    ideal_end = prefix + gap

    pass_compute = np.diff(np.concatenate(([0.0], prefix))[trace.pass_cell_offsets])
    # slots are full size: (distinct bytes - capacity) must be fetched, each byte at least at byte_scale
    full_bytes = trace.object_bytes_array().astype(np.float64)[stream.obj]
    min_fetch = _min_fetch_per_pass(trace, stream, full_bytes, capacity_bytes, scope, layer_capacity) * byte_scale
    pass_min = np.maximum(pass_compute, min_fetch / W)
    return Bounds(belady_misses=belady_misses, belady_miss_bytes=belady_bytes, ideal_cell_end=ideal_end,
                  pass_min_duration=pass_min, valid=valid, bandwidth=W, partition_capacity=caps,
                  belady_cum=belady_cum, belady_is_bound=fits)


def _every_cell_fits(trace: Trace, stream: RequestStream, req_bytes: np.ndarray, caps: np.ndarray,
                     scope: str) -> bool:
    """True when every cell's distinct objects fit together in their partition."""
    if stream.n_requests == 0:
        return True
    per_cell = np.bincount(stream.cell, weights=req_bytes, minlength=trace.n_cells)
    cap = caps[trace.cell_layer.astype(np.int64)] if scope == "layer" else np.full(trace.n_cells, caps[0])
    return bool(np.all(per_cell <= cap))


def _first_use(stream: RequestStream, n_objects: int) -> np.ndarray:
    """Mask of the requests that are the first of their object in the stream."""
    first = np.zeros(stream.n_requests, dtype=bool)
    if stream.n_requests:
        _, idx = np.unique(stream.obj, return_index=True)
        first[idx] = True
    return first


def _min_fetch_per_pass(trace: Trace, stream: RequestStream, req_bytes: np.ndarray, capacity_bytes: int,
                        scope: str, layer_capacity: tuple[int, ...] | None) -> np.ndarray:
    """Bytes every pass must fetch after it starts: its distinct objects' bytes beyond the capacity."""
    n_p = trace.n_passes
    if stream.n_requests == 0:
        return np.zeros(n_p)
    req_pass = trace.cell_pass()[stream.cell].astype(np.int64)
    key = req_pass * trace.n_objects + stream.obj.astype(np.int64)
    _, idx = np.unique(key, return_index=True)  # distinct (pass, object)
    if scope == "layer":
        n_l = trace.meta.n_layers
        caps = (np.asarray(layer_capacity, dtype=np.float64) if layer_capacity is not None
                else np.full(n_l, float(int(capacity_bytes) // n_l)))
        layer = trace.cell_layer[stream.cell[idx]].astype(np.int64)
        per = np.bincount(req_pass[idx] * n_l + layer, weights=req_bytes[idx], minlength=n_p * n_l).reshape(n_p, n_l)
        return np.maximum(per - caps[None, :], 0.0).sum(axis=1)
    per = np.bincount(req_pass[idx], weights=req_bytes[idx], minlength=n_p)
    return np.maximum(per - float(capacity_bytes), 0.0)
