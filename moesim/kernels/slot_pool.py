"""The VRAM slot pool and its slot table: where each resident expert object sits on the device.

A pool is one device tensor [n_slots + n_spare, elems] allocated once at start-up (no allocator
traffic on the hot path). The policy (through the planner) decides *which* objects are resident
and which are the victims; the pool only maps them to slots: an admitted object reuses the slot of
its first victim, else the lowest free slot, so placement is deterministic. Spare slots hold
objects the cache refused (a bypassed miss streams through a spare slot and leaves no residue).

The host mirror `slot_of[obj]` (-1 = absent) is authoritative; the kernel reads a per-layer
device copy made by `slot_table(layer)`, refreshed only when that layer's mapping changed.
GPU path only: imports torch.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from moesim.kernels.host_store import HostExpertStore, unpack
from moesim.kernels.shapes import ExpertShapes
from moesim.kernels.streams import CopyRecord, CopyStream


class SlotPool:
    """n_slots cache slots plus n_spare staging slots on `device`, with the object <-> slot tables."""

    def __init__(self, shapes: ExpertShapes, n_slots: int, device: torch.device | str, n_spare: int = 1,
                 pin: bool = False) -> None:
        """`pin` page-locks a host ("cpu") pool, e.g. a DRAM tier the copy engine reads from."""
        if n_slots < 0 or n_spare < 0 or n_slots + n_spare == 0:
            raise ValueError(f"need at least one slot (n_slots={n_slots}, n_spare={n_spare})")
        self.shapes = shapes
        self.device = torch.device(device)
        self.n_slots = int(n_slots)
        self.n_spare = int(n_spare)
        n_rows = self.n_slots + self.n_spare
        if self.device.type == "cpu" and not pin:
            # page-aligned rows where the expert size allows: O_DIRECT reads land in a slot in place
            from moesim.kernels.direct_io import aligned_buffer

            nbytes = n_rows * shapes.elems * shapes.itemsize
            self._mapping = aligned_buffer(nbytes)
            self.pool = torch.frombuffer(self._mapping, dtype=torch.uint8, count=nbytes).view(
                shapes.torch_dtype()).view(n_rows, shapes.elems)
        else:
            self.pool = torch.empty((n_rows, shapes.elems), dtype=shapes.torch_dtype(), device=self.device,
                                    pin_memory=bool(pin and self.device.type == "cpu"))
        self.slot_of = np.full(shapes.n_objects, -1, dtype=np.int32)
        self.obj_in = np.full(self.n_slots + self.n_spare, -1, dtype=np.int64)
        self._free = list(range(self.n_slots))  # kept sorted: lowest free slot first
        self._staged: list[int] = []
        self._layer_version = np.zeros(shapes.n_layers, dtype=np.int64)
        self._tables: dict[int, tuple[int, torch.Tensor]] = {}

    @classmethod
    def for_capacity(cls, shapes: ExpertShapes, capacity_bytes: int, device: torch.device | str,
                     n_spare: int = 1) -> "SlotPool":
        """As many slots as whole experts fit in `capacity_bytes` (what a byte-capacity cache core admits)."""
        return cls(shapes, int(capacity_bytes) // shapes.expert_bytes, device, n_spare)

    @property
    def capacity_bytes(self) -> int:
        return self.n_slots * self.shapes.expert_bytes

    # ---- decisions -----------------------------------------------------------------------------
    def _set(self, obj: int, slot: int) -> None:
        self.slot_of[obj] = slot
        self.obj_in[slot] = obj
        self._layer_version[self.shapes.layer_of(obj)] += 1

    def _clear(self, obj: int) -> int:
        slot = int(self.slot_of[obj])
        self.slot_of[obj] = -1
        self.obj_in[slot] = -1
        self._layer_version[self.shapes.layer_of(obj)] += 1
        return slot

    def evict(self, obj: int) -> int:
        """Free obj's cache slot and return it. Its contents stay until overwritten (after its last read)."""
        slot = int(self.slot_of[obj])
        if slot < 0 or slot >= self.n_slots:
            raise KeyError(f"object {obj} has no cache slot")
        self._clear(obj)
        self._free.append(slot)
        self._free.sort()
        return slot

    def place(self, obj: int, victims: Sequence[int] = (), slot: int | None = None) -> tuple[int, bool]:
        """Evict `victims`, give obj a cache slot; returns (slot, needs_copy). Resident obj: no copy.

        The slot is `slot` when the caller (a planner that assigns slots) names one, else the first
        victim's, else the lowest free one.
        """
        current = int(self.slot_of[obj])
        if slot is not None and slot not in self._free and slot not in {int(self.slot_of[v]) for v in victims}:
            raise RuntimeError(f"slot {slot} is not free for object {obj} (it holds {int(self.obj_in[slot])})")
        freed = [self.evict(v) for v in victims]
        if 0 <= current < self.n_slots:
            return current, False
        if current >= self.n_slots:  # staged this cell, now admitted: it moves to a cache slot
            self._clear(obj)
            self._staged.remove(current)
        if not self._free:
            raise RuntimeError(f"no free slot for object {obj}: the planner's capacity exceeds the pool's "
                               f"{self.n_slots} slots")
        if slot is None:
            slot = freed[0] if freed else self._free[0]
        self._free.remove(slot)
        self._set(obj, slot)
        return slot, True

    def stage(self, obj: int) -> int:
        """Give a bypassed obj (the cache refused it) a spare slot until `release_staged()`."""
        if self.slot_of[obj] >= 0:
            return int(self.slot_of[obj])
        spare = [s for s in range(self.n_slots, self.n_slots + self.n_spare) if self.obj_in[s] < 0]
        if not spare:
            raise RuntimeError(f"no spare slot to stage object {obj} (n_spare={self.n_spare})")
        self._set(obj, spare[0])
        self._staged.append(spare[0])
        return spare[0]

    def release_staged(self) -> None:
        """End of the cell that read the staged objects: their spare slots become free again."""
        for slot in self._staged:
            self._clear(int(self.obj_in[slot]))
        self._staged.clear()

    # ---- data movement -------------------------------------------------------------------------
    def load(self, obj: int, store: HostExpertStore, copies: CopyStream, victims: Sequence[int] = (),
             staged: bool = False, slot: int | None = None) -> CopyRecord | None:
        """Place obj (or stage it) and copy its host buffer into its slot; None when already resident.

        The copy runs on `copies`' side stream after the slot's last read (write-after-read).
        """
        if staged:
            if self.slot_of[obj] >= 0:
                return None
            slot, needs_copy = self.stage(obj), True
        else:
            slot, needs_copy = self.place(obj, victims, slot)
        if not needs_copy:
            return None
        return copies.copy(self.pool[slot], store.buffer(obj), slot=slot, tag=obj)

    # ---- what the kernel reads -----------------------------------------------------------------
    def views(self, obj: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_gate, W_up, W_down) of `obj` where it sits now (cache or spare slot)."""
        slot = int(self.slot_of[obj])
        if slot < 0:
            raise KeyError(f"object {obj} has no slot")
        return unpack(self.pool[slot], self.shapes)

    def slots_of(self, objs: Iterable[int]) -> list[int]:
        """Slots of objs, all of which must be present (the executor loads before it computes)."""
        out = []
        for obj in objs:
            slot = int(self.slot_of[obj])
            if slot < 0:
                raise KeyError(f"object {obj} is not in the slot pool")
            out.append(slot)
        return out

    def slot_table(self, layer: int) -> torch.Tensor:
        """int32 [n_experts] on the device: slot of each expert of `layer`, -1 if absent.

        Re-uploaded only when the layer's mapping changed; on CUDA through a pinned staging tensor
        so the upload is asynchronous and ordered on the compute stream before the kernel.
        """
        version = int(self._layer_version[layer])
        cached = self._tables.get(layer)
        if cached is not None and cached[0] == version:
            return cached[1]
        e = self.shapes.n_experts
        host = torch.from_numpy(self.slot_of[layer * e:(layer + 1) * e].copy())
        if self.device.type == "cuda":
            table = host.pin_memory().to(self.device, non_blocking=True)
        else:
            table = host.to(self.device)
        self._tables[layer] = (version, table)
        return table

    def weights(self, obj: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of obj's matrices inside its slot."""
        return unpack(self.pool[self.slots_of([obj])[0]], self.shapes)

    def resident(self) -> dict[int, int]:
        """Cache-slot residents, object -> slot (staged objects excluded)."""
        return {int(o): s for s, o in enumerate(self.obj_in[: self.n_slots].tolist()) if o >= 0}

    def check(self) -> None:
        """Invariants: the two tables agree, free slots hold nothing, staged slots are spare."""
        for slot, obj in enumerate(self.obj_in.tolist()):
            if obj >= 0:
                assert self.slot_of[obj] == slot, (obj, slot, int(self.slot_of[obj]))
        for obj in np.nonzero(self.slot_of >= 0)[0].tolist():
            assert self.obj_in[self.slot_of[obj]] == obj, obj
        assert all(self.obj_in[s] < 0 for s in self._free), self._free
        assert sorted(self._free) == self._free
        assert len(self._free) + len(self.resident()) == self.n_slots
        assert all(s >= self.n_slots for s in self._staged)
