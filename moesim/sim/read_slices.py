"""Storage reads split into weight slices, and an expert matmul that waits on each slice in expert-id order.

Two engine behaviours (TimedConfig.read_slices, .slice_order, .expert_order), both off by default:

- **Slice reads.** An engine that reads a missed expert as its weight tensors (llama.cpp keeps gate, up
  and down in separate tensors; gemma4 a fused gate_up and down) issues one request per slice, and each
  request takes a read lane of its own: one miss fills as many lanes as it has slices. `fractions` are
  the slices' shares of the expert's bytes and compute. A gate queues its reads expert-major (all of an
  expert's slices, then the next expert's) or slice-major (every miss's first slice, then every second:
  the order the matmul consumes them in). The BigMoeOnEdge engine does both: "Routed slices are read
  across N lanes" (its docs/moe-streaming.md), slice-major under --overlap.
- **Expert-id order.** ggml's mul_mat_id is one op per slice kind (gate, up, down), each visiting the
  layer's routed experts in ascending id; with a readiness hook (the BigMoeOnEdge engine's overlap mode)
  each (slice, expert) unit waits for that slice's bytes. So a unit starts at max(stream free, its
  slice's arrival), in that fixed order: a resident expert queued behind a missing one waits too, unlike
  moesim's "arrival" order, which runs resident experts first and missing ones as they land.

`ordered_stall` is the stall of one cell under expert-id order; the simulator (moesim/sim/engine.py) and
the fitting clock (moesim/runs/cell_clock.py) both call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moesim.errors import UserError

SLICE_ORDERS = ("expert", "slice")
EXPERT_ORDERS = ("arrival", "id")


@dataclass(frozen=True)
class CellOrder:
    """Per cell, the device requests in compute order (ascending object id): their compute seconds and
    the copy each waits for (-1: resident). Offsets index the flat arrays by cell."""

    offsets: np.ndarray
    seconds: np.ndarray
    copy: np.ndarray


@dataclass(frozen=True)
class Slicing:
    """What the engine needs: slice shares of a storage read, the gate's queue order, the compute order."""

    fractions: tuple[float, ...]
    slice_major: bool
    order: CellOrder | None = None  # None: arrival order (moesim.sim.engine._pipelined_stall)
    servers: tuple[bool, ...] = ()  # per link server: reads storage (split into slices); (): servers with a curve

    @property
    def n(self) -> int:
        return len(self.fractions)


def check_fractions(fractions: tuple[float, ...], where: str = "read_slices") -> tuple[float, ...]:
    """Positive shares that sum to 1 (within 1e-6), or a one-line UserError."""
    values = tuple(float(f) for f in fractions)
    if not values or any(not np.isfinite(f) or f <= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise UserError(f"slice shares must be positive and sum to 1, got {list(values)}", where)
    return values


def cell_order(req_cell: np.ndarray, req_obj: np.ndarray, req_seconds: np.ndarray, waits: np.ndarray,
               wait_offsets: np.ndarray, copy_obj: np.ndarray, n_cells: int) -> CellOrder:
    """Each cell's requests by ascending object id, each with the waited copy that brings its object."""
    order = np.lexsort((req_obj, req_cell))
    cell, obj = req_cell[order].astype(np.int64), req_obj[order].astype(np.int64)
    offsets = np.searchsorted(cell, np.arange(n_cells + 1)).astype(np.int64)
    wait_cell = np.repeat(np.arange(n_cells, dtype=np.int64), np.diff(wait_offsets))
    brings = {(int(c), int(copy_obj[k])): int(k) for c, k in zip(wait_cell.tolist(), waits.tolist())}
    copy = np.asarray([brings.get((c, o), -1) for c, o in zip(cell.tolist(), obj.tolist())], dtype=np.int64)
    return CellOrder(offsets, np.asarray(req_seconds, dtype=np.float64)[order], copy)


def piece_order(copies: list[int], n_slices: int, slice_major: bool) -> list[tuple[int, int]]:
    """(copy, slice) in the order a gate queues them."""
    if slice_major:
        return [(k, p) for p in range(n_slices) for k in copies]
    return [(k, p) for k in copies for p in range(n_slices)]


def ordered_stall(gate: float, lo: int, hi: int, order: CellOrder, fractions: tuple[float, ...],
                  piece_end: np.ndarray, other_arrivals: list[float], overlappable: float = 0.0,
                  cpu_path: float = 0.0) -> float:
    """Seconds the compute stream of one cell waits under expert-id order (module docstring).

    Requests lo:hi of `order`; `piece_end[k, p]` is when copy k's slice p landed (at or before the gate
    for a copy done earlier); `other_arrivals`: waited copies no device request of the cell reads (a CPU
    expert's, a prefetch of an object not run here), which the stream waits for as well. The stream
    first runs `overlappable` work, then each slice op over the requests in order. The CPU path starts
    once every copy has landed, as in moesim.sim.engine._pipelined_stall.
    """
    t = gate + overlappable
    busy = overlappable
    seconds, copy = order.seconds, order.copy
    last = max(other_arrivals, default=gate)
    for p, share in enumerate(fractions):
        for i in range(lo, hi):
            k = copy[i]
            if k >= 0:
                arrival = float(piece_end[k, p])
                last = max(last, arrival)
                t = max(t, arrival)
            t += seconds[i] * share
            busy += seconds[i] * share
    t = max(t, *other_arrivals) if other_arrivals else t
    end = max(t, (last if cpu_path > 0 else gate) + cpu_path)
    return max(end - gate - max(busy, cpu_path), 0.0)


def slicing_for(config: Any, profile: Any, servers: tuple[Any, ...], plan: Any, req_cell: np.ndarray,
                req_obj: np.ndarray, per_req: np.ndarray | None) -> Slicing | None:
    """The Slicing a TimedConfig asks for (read_slices, slice_order, expert_order), or None for neither.

    `per_req`: device seconds per request under per-expert overlap (None under a per-layer barrier,
    where the compute order does not matter)."""
    if config.slice_order not in SLICE_ORDERS:
        raise UserError(f"slice order must be one of {', '.join(SLICE_ORDERS)}, got {config.slice_order!r}",
                        "slice_order")
    if config.expert_order not in EXPERT_ORDERS:
        raise UserError(f"expert order must be one of {', '.join(EXPERT_ORDERS)}, got {config.expert_order!r}",
                        "expert_order")
    by_id = config.expert_order == "id" and per_req is not None
    if not config.read_slices and not by_id:
        return None
    fractions = check_fractions(tuple(config.read_slices)) if config.read_slices else (1.0,)
    order = None
    if by_id:
        order = cell_order(req_cell, req_obj, per_req, plan.waits, plan.wait_offsets, plan.copy_obj,
                           plan.trace.n_cells)
    storage = tuple(bool(config.read_slices) and profile.tiers[s.src].is_storage for s in servers)
    return Slicing(fractions, config.slice_order == "slice", order, storage)
