"""Reuse and working sets: which objects each pass uses, how far apart reuses are, how many bytes a pass needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.traces.format.trace import Trace
from moesim.traces.stats.arrays import unique_sorted
from moesim.traces.stats.popularity import access_mask


# ---- reuse and working sets --------------------------------------------------------------------
@dataclass(frozen=True)
class PassObjectUses:
    """Distinct (object, pass) uses as sorted keys obj * n_passes + pass: object-major, then pass
    order, which is what reuse distances need; working sets and footprints read the same keys."""

    keys: np.ndarray
    n_passes: int
    phase: str = "all"

    @property
    def obj(self) -> np.ndarray:
        return self.keys // self.n_passes

    @property
    def passes(self) -> np.ndarray:
        return self.keys % self.n_passes


def pass_object_uses(trace: Trace, phase: str = "all") -> PassObjectUses:
    """The distinct objects each pass of `phase` uses. O(A log A) (one sort of the accesses)."""
    n_passes = max(trace.n_passes, 1)
    key = trace.object_ids().astype(np.int64) * n_passes
    key += np.repeat(trace.cell_pass().astype(np.int64), np.diff(trace.cell_offsets))
    mask = access_mask(trace, phase)
    if mask is not None:
        key = key[mask]
    return PassObjectUses(unique_sorted(key), n_passes, phase)


def reuse_bucket_labels(n_buckets: int) -> list[str]:
    """Labels of the log2 reuse-distance buckets: '1', '2-3', '4-7', ..."""
    return ["1"] + [f"{2 ** b}-{2 ** (b + 1) - 1}" for b in range(1, n_buckets)]


def reuse_distance_histogram(
    trace: Trace, phase: str = "all", uses: PassObjectUses | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reuse distance in passes between consecutive uses of an object, per layer, in log2 buckets.

    For each distinct (object, pass) use except the object's first, d = pass - the previous pass
    that used it (d >= 1); bucket b holds 2^b <= d < 2^(b+1). Passes are the trace's own pass
    indices, so with phase="decode" a prefill pass in between still counts as one pass.
    Returns (hist [n_layers, n_buckets] int64, first_uses [n_layers] int64). O(A log A).
    """
    uses = uses or pass_object_uses(trace, phase)
    obj, passes = uses.obj, uses.passes
    n_layers = trace.meta.n_layers
    layer = obj // trace.meta.n_experts
    same = np.zeros(obj.size, dtype=bool)
    same[1:] = obj[1:] == obj[:-1]
    first_uses = np.bincount(layer[~same], minlength=n_layers).astype(np.int64)
    d = (passes[1:] - passes[:-1])[same[1:]]
    bucket = np.zeros(d.size, dtype=np.int64)
    if d.size:
        # floor(log2 d) exactly for integers: the float's exponent
        bucket = np.frexp(d.astype(np.float64))[1].astype(np.int64) - 1
    n_buckets = int(bucket.max()) + 1 if bucket.size else 1
    hist = np.bincount(layer[same] * n_buckets + bucket, minlength=n_layers * n_buckets)
    return hist.reshape(n_layers, n_buckets).astype(np.int64), first_uses


def pass_working_set(trace: Trace, uses: PassObjectUses | None = None) -> np.ndarray:
    """Distinct objects each pass touches (int64 [n_passes])."""
    uses = uses or pass_object_uses(trace)
    return np.bincount(uses.passes, minlength=trace.n_passes).astype(np.int64)


def pass_working_set_bytes(trace: Trace, uses: PassObjectUses | None = None) -> np.ndarray:
    """Bytes of the distinct objects each pass touches (int64 [n_passes])."""
    uses = uses or pass_object_uses(trace)
    sizes = trace.object_bytes_array()[uses.obj]
    return np.bincount(uses.passes, weights=sizes, minlength=trace.n_passes).astype(np.int64)


def cell_distinct_experts(trace: Trace, uses: PassObjectUses | None = None) -> np.ndarray:
    """Distinct experts in every cell (int64 [n_cells]): a layer's working set in that pass.

    When every pass has at most one cell per layer (all known traces), a cell's distinct
    experts are its pass's uses at that layer, read off `uses` (all phases) without a new sort.
    """
    n_layers, n_experts = trace.meta.n_layers, trace.meta.n_experts
    cell_key = trace.cell_pass().astype(np.int64) * n_layers + trace.cell_layer
    one_per_layer = cell_key.size < 2 or bool(np.all(cell_key[1:] > cell_key[:-1]))  # passes' layers ascend
    if uses is not None and uses.phase == "all" and one_per_layer:
        per_pass_layer = np.bincount(uses.passes * n_layers + uses.obj // n_experts,
                                     minlength=trace.n_passes * n_layers)
        return per_pass_layer[cell_key].astype(np.int64)
    cell = trace.access_cell().astype(np.int64)
    key = unique_sorted(cell * n_experts + trace.expert.astype(np.int64))
    return np.bincount(key // n_experts, minlength=trace.n_cells).astype(np.int64)
