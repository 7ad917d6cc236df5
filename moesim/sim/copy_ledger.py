"""The copy ledger: every copy a plan issues, with the ordering constraints its executor enforces.

The planner (moesim/sim/plan.py) writes here; the timing engine (moesim/sim/engine.py) reads the
flat arrays (`flat()`), and the real-GPU executor (moesim/kernels/executor.py) reads the same
copies one cell at a time as `PlannedCopy` views, so both run exactly the copies decided here.

Per copy: object, bytes, route, prefetch or demand, resident (False: streamed through a temporary
buffer), issuing cell, and three sparse lists by copy id:
- `deps`: copies that must finish first (the SSD -> DRAM copy a DRAM -> VRAM copy reads from; the
  last reader and the last writer of a reused DRAM slot);
- `cancels`: copies into reused VRAM slots that no cell has waited for (they may still be in
  flight; an executor waits for them, or with `cancel_unstarted` the timing layer drops them);
- `victims`: the objects whose slots the copy reuses.
Per cell: the copies it issued (`cell_copy_off`) and the copies its compute waits for (`waits`).
Per object: the last copy into VRAM (`inbound`), whether a cell has waited for it yet
(`unwaited`), whether the resident copy is low-bit, and for the DRAM tier the last copy that filled
(`dram_inbound`) and read (`dram_reader`) its slot. `orphans` are evictions whose room no copy has
taken yet (the next copy into that tier takes them as victims).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SETUP_CELL = -1
"""Cell index of the copies that load pinned objects before the first cell."""


@dataclass(frozen=True)
class PlannedCopy:
    """One copy of a CellPlan (the step API's view of the flat copy arrays)."""

    copy_id: int
    obj: int
    nbytes: int
    route: int
    prefetch: bool
    resident: bool  # False: a miss streamed through a temporary buffer (no room could be made)
    victims: tuple[int, ...]  # objects whose slots in the destination tier this copy reuses
    deps: tuple[int, ...]
    cancels: tuple[int, ...]


class CopyLedger:
    """Copies in issue order, their constraints, and the per-object state that decides them."""

    def __init__(self, n_objects: int) -> None:
        # one tuple per copy (obj, bytes, route, prefetch, resident, cell); the rarer lists by copy id
        self.copies: list[tuple[int, int, int, bool, bool, int]] = []
        self.deps: dict[int, list[int]] = {}
        self.cancels: dict[int, list[int]] = {}
        self.victims: dict[int, list[int]] = {}
        self.cell_copy_off: list[int] = []
        self.wait_off = [0]
        self.waits: list[int] = []
        self.inbound = [-1] * n_objects  # last copy into VRAM
        self.unwaited = bytearray(n_objects)  # that copy has not been waited for by a cell yet
        self.lowbit = bytearray(n_objects)
        self.dram_inbound = [-1] * n_objects
        self.dram_reader = [-1] * n_objects  # last copy that read the object's DRAM slot
        self.orphans: list[int] = []  # VRAM evictions whose room no copy has taken yet
        self.dram_orphans: list[int] = []
        self.n_setup = 0

    def __len__(self) -> int:
        return len(self.copies)

    def append(self, obj: int, nbytes: int, route: int, prefetch: bool, resident: bool, cell: int,
               deps: list[int], cancels: list[int], victims: list[int]) -> int:
        """One copy with its constraints; returns its id."""
        k = len(self.copies)
        self.copies.append((obj, nbytes, route, prefetch, resident, cell))
        if deps:
            self.deps[k] = deps
        if cancels:
            self.cancels[k] = cancels
        if victims:
            self.victims[k] = victims
        return k

    def issue_vram(self, objs: list[int], victim_lists: list[list[int]], prefetch: bool, cell: int, scale: float,
                   resident: list[bool], route: int, object_bytes: list[int], chain: list[int] | None,
                   keeps_lowbit: bool) -> None:
        """Copies that bring `objs` into VRAM, reusing their victims' slots; `chain[i]` (where DRAM
        caches SSD) is the copy that made objs[i] present in DRAM (-1: none)."""
        inbound, unwaited, lowbit, copies = self.inbound, self.unwaited, self.lowbit, self.copies
        for i, obj in enumerate(objs):
            k = len(copies)
            victims = victim_lists[i]
            if victims:
                cancels = []
                for v in victims:
                    # a copy some cell waited for has landed (cells run in order, and a victim is
                    # never an object of this cell): only never-used copies may still be in flight
                    if unwaited[v]:
                        cancels.append(inbound[v])
                        unwaited[v] = 0
                    inbound[v] = -1
                if keeps_lowbit:
                    for v in victims:
                        lowbit[v] = 0
                self.victims[k] = victims
                if cancels:
                    self.cancels[k] = cancels
            nbytes = object_bytes[obj]
            if scale < 1.0:
                nbytes = max(int(np.ceil(nbytes * scale)), 1)
            if chain is not None:
                if chain[i] >= 0:
                    self.deps[k] = [chain[i]]
                self.dram_reader[obj] = k
            copies.append((obj, nbytes, route, prefetch, resident[i], cell))
            if resident[i]:
                inbound[obj] = k
                unwaited[obj] = 1 if prefetch or cell == SETUP_CELL else 0

    def take_orphans(self, log: list[int]) -> list[int]:
        """This admission's victims (`log`) plus earlier evictions whose room nobody had taken."""
        victims = list(log)
        if self.orphans:
            victims = self.orphans + victims
            self.orphans = []
        return victims

    def wait_hit(self, obj: int) -> None:
        """A cell hit `obj`: its compute waits for the copy that brought it, the first time only."""
        if self.unwaited[obj]:
            self.waits.append(self.inbound[obj])
            self.unwaited[obj] = 0

    def close_setup(self) -> None:
        self.n_setup = len(self.copies)
        self.cell_copy_off.append(self.n_setup)

    def close_cell(self) -> None:
        self.cell_copy_off.append(len(self.copies))
        self.wait_off.append(len(self.waits))

    def view(self, k: int) -> PlannedCopy:
        obj, nbytes, route, prefetch, resident, _ = self.copies[k]
        return PlannedCopy(
            copy_id=k,
            obj=obj,
            nbytes=nbytes,
            route=route,
            prefetch=prefetch,
            resident=resident,
            victims=tuple(self.victims.get(k, ())),
            deps=tuple(self.deps.get(k, ())),
            cancels=tuple(self.cancels.get(k, ())),
        )

    def flat(self) -> dict[str, np.ndarray | int]:
        """The Plan's copy fields (moesim/sim/plan.py `Plan`) as flat arrays."""
        i64 = np.int64
        n = len(self.copies)
        table = np.asarray(self.copies, dtype=i64).reshape(n, 6)
        dep_off, deps = _flatten(self.deps, n)
        cancel_off, cancels = _flatten(self.cancels, n)
        victim_off, victims = _flatten(self.victims, n)
        return dict(
            copy_obj=table[:, 0].copy(),
            copy_bytes=table[:, 1].copy(),
            copy_route=table[:, 2].astype(np.int8),
            copy_prefetch=table[:, 3].astype(bool),
            copy_resident=table[:, 4].astype(bool),
            copy_cell=table[:, 5].copy(),
            dep_offsets=dep_off,
            deps=deps,
            cancel_offsets=cancel_off,
            cancels=cancels,
            victim_offsets=victim_off,
            victims=victims,
            cell_copy_offsets=np.asarray(self.cell_copy_off, dtype=i64),
            n_setup_copies=self.n_setup,
            wait_offsets=np.asarray(self.wait_off, dtype=i64),
            waits=np.asarray(self.waits, dtype=i64),
        )


def _flatten(lists: dict[int, list[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse per-copy lists (keyed by copy id, inserted in id order) as offsets + flat values."""
    counts = np.zeros(n + 1, dtype=np.int64)
    flat: list[int] = []
    for k, values in lists.items():
        counts[k + 1] = len(values)
        flat.extend(values)
    return np.cumsum(counts), np.asarray(flat, dtype=np.int64)
