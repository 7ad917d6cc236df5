"""What a run decided, in order, as flat arrays: the thing the simulator and the executor must agree on.

A DecisionLog holds every request's outcome (hit or miss kind, in request order: cell by cell,
each cell's distinct objects in first-access order) and every copy in issue order (setup copies
first) with its object, bytes, route, prefetch flag, residency, issuing cell and the victims whose
slots it reuses. `from_plan` reads it off the simulator's flat Plan, `from_steps` off the
CellPlans the executor got from `Planner.step`; `first_difference` names where two logs part.
Pure numpy: no torch, so `moesim validate` can compare on a core install.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from moesim.sim.cache_core import HIT, LATE, MISS_CAPACITY, MISS_COLLISION, MISS_COMPULSORY, OUTCOME_NAMES
from moesim.sim.plan import SETUP_CELL, CellPlan, Plan, PlannedCopy
from moesim.sim.topology import ROUTE_NAMES

_COPY_FIELDS = ("copy_obj", "copy_bytes", "copy_route", "copy_prefetch", "copy_resident", "copy_cell")


@dataclass(frozen=True)
class DecisionLog:
    """Outcomes per request and copies in issue order, with the cell boundaries of both."""

    outcomes: np.ndarray  # int8 per request
    request_offsets: np.ndarray  # requests of cell c: [request_offsets[c], request_offsets[c + 1])
    copy_obj: np.ndarray
    copy_bytes: np.ndarray
    copy_route: np.ndarray
    copy_prefetch: np.ndarray
    copy_resident: np.ndarray
    copy_cell: np.ndarray  # SETUP_CELL (-1) for pinned loads
    victim_offsets: np.ndarray
    victims: np.ndarray

    @classmethod
    def from_plan(cls, plan: Plan) -> "DecisionLog":
        """The simulator's decisions (a Plan from plan_trace or timed_replay)."""
        return cls(
            outcomes=np.asarray(plan.outcomes, dtype=np.int8),
            request_offsets=np.asarray(plan.stream.cell_offsets, dtype=np.int64),
            copy_obj=np.asarray(plan.copy_obj, dtype=np.int64),
            copy_bytes=np.asarray(plan.copy_bytes, dtype=np.int64),
            copy_route=np.asarray(plan.copy_route, dtype=np.int8),
            copy_prefetch=np.asarray(plan.copy_prefetch, dtype=bool),
            copy_resident=np.asarray(plan.copy_resident, dtype=bool),
            copy_cell=np.asarray(plan.copy_cell, dtype=np.int64),
            victim_offsets=np.asarray(plan.victim_offsets, dtype=np.int64),
            victims=np.asarray(plan.victims, dtype=np.int64),
        )

    @classmethod
    def from_steps(cls, setup: Sequence[PlannedCopy], cells: Sequence[CellPlan]) -> "DecisionLog":
        """The decisions an executor received cell by cell (setup copies, then each CellPlan)."""
        outcomes: list[int] = []
        request_offsets = [0]
        copies: list[tuple[PlannedCopy, int]] = [(cp, SETUP_CELL) for cp in setup]
        for cell in cells:
            outcomes.extend(cell.outcomes)
            request_offsets.append(len(outcomes))
            copies.extend((cp, cell.cell) for cp in cell.copies)
        victim_counts = [len(cp.victims) for cp, _ in copies]
        return cls(
            outcomes=np.asarray(outcomes, dtype=np.int8),
            request_offsets=np.asarray(request_offsets, dtype=np.int64),
            copy_obj=np.asarray([cp.obj for cp, _ in copies], dtype=np.int64),
            copy_bytes=np.asarray([cp.nbytes for cp, _ in copies], dtype=np.int64),
            copy_route=np.asarray([cp.route for cp, _ in copies], dtype=np.int8),
            copy_prefetch=np.asarray([cp.prefetch for cp, _ in copies], dtype=bool),
            copy_resident=np.asarray([cp.resident for cp, _ in copies], dtype=bool),
            copy_cell=np.asarray([c for _, c in copies], dtype=np.int64),
            victim_offsets=np.concatenate(([0], np.cumsum(victim_counts, dtype=np.int64))),
            victims=np.asarray([v for cp, _ in copies for v in cp.victims], dtype=np.int64),
        )

    @property
    def n_copies(self) -> int:
        return int(self.copy_obj.shape[0])

    def cell_victims(self, k: int) -> list[int]:
        return self.victims[self.victim_offsets[k]:self.victim_offsets[k + 1]].tolist()

    def counts(self) -> dict[str, Any]:
        """Totals: outcomes by kind, copies by kind, evictions and bytes per route (JSON-ready)."""
        out = self.outcomes
        routes = {}
        for r, name in enumerate(ROUTE_NAMES):
            sel = self.copy_route == r
            if sel.any():
                routes[name] = {"copies": int(sel.sum()), "bytes": int(self.copy_bytes[sel].sum())}
        return {
            "requests": int(out.size),
            "hits": int(((out == HIT) | (out == LATE)).sum()),
            "misses": int((out >= MISS_COMPULSORY).sum()),
            "compulsory": int((out == MISS_COMPULSORY).sum()),
            "capacity": int((out == MISS_CAPACITY).sum()),
            "collision": int((out == MISS_COLLISION).sum()),
            "copies": self.n_copies,
            "demand_copies": int((~self.copy_prefetch).sum()),
            "prefetch_copies": int(self.copy_prefetch.sum()),
            "streamed_copies": int((~self.copy_resident).sum()),
            "evictions": int(self.victims.size),
            "bytes": int(self.copy_bytes.sum()),
            "routes": routes,
        }

    def first_difference(self, other: "DecisionLog") -> str | None:
        """None when both logs hold the same decisions in the same order, else where they first differ."""
        if not np.array_equal(self.request_offsets, other.request_offsets):
            return "the cells hold different requests (not the same trace?)"
        bad = np.flatnonzero(self.outcomes != other.outcomes)
        if bad.size:
            r = int(bad[0])
            cell = int(np.searchsorted(self.request_offsets, r, side="right") - 1)
            return (f"request {r} (cell {cell}): {OUTCOME_NAMES[int(self.outcomes[r])]} vs "
                    f"{OUTCOME_NAMES[int(other.outcomes[r])]}")
        n = min(self.n_copies, other.n_copies)
        for name in _COPY_FIELDS:
            a, b = getattr(self, name)[:n], getattr(other, name)[:n]
            bad = np.flatnonzero(a != b)
            if bad.size:
                k = int(bad[0])
                return f"copy {k} (cell {int(self.copy_cell[k])}): {name[5:]} {a[k]} vs {b[k]}"
        for k in range(n):
            mine, theirs = self.cell_victims(k), other.cell_victims(k)
            if mine != theirs:
                return f"copy {k} (cell {int(self.copy_cell[k])}): victims {mine} vs {theirs}"
        if self.n_copies != other.n_copies:
            return f"{self.n_copies} copies vs {other.n_copies}"
        return None
