"""The executor's data movement: the plan's copies on real streams into real slots (moesim/kernels/executor.py).

Each PlannedCopy (moesim/sim/copy_ledger.py) is issued in copy-id order at its cell's gate: SSD
reads on the host, host -> VRAM copies on a side stream (round robin over the profile's copy
engines; demand copies on a high-priority stream on CUDA) that waits for the gate, for the copies
the plan says must finish first (`deps`, `cancels`) and, through the slot pools, for the last
kernel that read a reused slot. `done[k]` is copy k's end event: a cell's compute waits for the
plan's `waits` through it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from moesim.kernels.host_store import HostExpertStore, unpack
from moesim.kernels.shapes import ExpertShapes
from moesim.kernels.slot_pool import SlotPool
from moesim.kernels.ssd_store import SsdExpertStore
from moesim.kernels.streams import CopyStream, DeviceClock, Event
from moesim.sim.copy_ledger import PlannedCopy
from moesim.sim.topology import ROUTE_NAMES, ROUTE_SSD_DRAM, ROUTE_SSD_VRAM, Topology


class DeviceCopies:
    """Stores, slot pools and copy streams of one execution, and every copy's end event."""

    def __init__(self, topology: Topology, dev: torch.device, shapes: ExpertShapes, clock: DeviceClock,
                 check: bool, n_objects: int, object_bytes: list[int], vram_slots: int, most_per_cell: int,
                 seed: int, ssd_dir: str | None, store: HostExpertStore | None,
                 ssd_store: SsdExpertStore | None) -> None:
        self.topology = topology
        self.dev = dev
        self.cuda = dev.type == "cuda"
        self.shapes = shapes
        self.dtype = shapes.torch_dtype()
        self.clock = clock
        self.copies = CopyStream(dev, log=check, clock=clock)
        # one side stream per host-link copy engine of the profile, as the simulator's copy server has
        self.copy_streams = [self.copies] + [CopyStream(dev, shared=self.copies)
                                             for _ in range(max(topology.host_engines, 1) - 1)]
        self.device_copies = 0
        # a high-priority side stream for demand copies (CUDA): queued demand goes before queued prefetch
        self.demand_stream = CopyStream(dev, shared=self.copies, priority=-1) if self.cuda else None

        self.own_store = store is None
        self.store = HostExpertStore(shapes, seed=seed, pin=self.cuda) if store is None else store
        self.own_ssd = ssd_store is None
        self.ssd = (ssd_store or SsdExpertStore(self.store, ssd_dir)) if topology.far else None
        self.dram: SlotPool | None = None
        if topology.dram_cache_bytes is not None:
            n_dram = int(min(topology.dram_cache_bytes // min(object_bytes), n_objects))
            self.dram = SlotPool(shapes, n_dram, "cpu", n_spare=0 if n_dram else 1, pin=self.cuda)
        self.dram_staged: dict[int, torch.Tensor] = {}  # DRAM misses the DRAM cache refused, this cell
        self.dram_last_read: dict[int, Event] = {}  # DRAM slot -> end of the last copy that read it
        self.vram = SlotPool(shapes, vram_slots, dev, n_spare=max(most_per_cell, 1))
        self.done: list[Event] = []  # per copy id: its end
        self.copy_rows: list[dict[str, Any]] = []

    def synchronize(self) -> None:
        self.clock.synchronize()
        for engine in self.copy_streams:
            engine.synchronize()

    def end_cell(self) -> None:
        self.vram.release_staged()
        self.dram_staged.clear()

    def close(self) -> None:
        if self.ssd is not None and self.own_ssd:
            self.ssd.close()
        if self.own_store:
            self.store.close()

    def host_views(self, obj: int) -> tuple[torch.Tensor, ...]:
        """Host weights of obj where the plan put them: read from SSD this cell, the DRAM tier, or the host store."""
        if obj in self.dram_staged or self.topology.far:
            return unpack(self.dram_buffer(obj), self.shapes)
        return self.store.views(obj)

    def issue(self, cp: PlannedCopy, gate: Event | None, cell: int) -> None:
        if cp.copy_id != len(self.done):
            raise RuntimeError(f"copy {cp.copy_id} issued out of order (expected {len(self.done)})")
        row: dict[str, Any] = {"copy": cp.copy_id, "cell": cell, "obj": cp.obj, "route": ROUTE_NAMES[cp.route],
                               "prefetch": cp.prefetch, "resident": cp.resident, "planned_bytes": cp.nbytes,
                               "moved_bytes": self.shapes.expert_bytes, "host_read_s": 0.0}
        if cp.route == ROUTE_SSD_DRAM:
            self.host_at(gate)
            self.host_wait(cp.deps)
            dst = self.dram_place(cp)
            t_read = time.perf_counter_ns()
            self.ssd.read_into(cp.obj, dst)  # type: ignore[union-attr]
            now = time.perf_counter_ns()
            row["host_read_s"] = (now - t_read) * 1e-9
            self.done.append(Event(-1, now))
            row["start"] = row["end"] = None
            self.copy_rows.append(row)
            return
        if cp.route == ROUTE_SSD_VRAM and not self.cuda:  # CPU device: the file read fills the cache slot itself
            slot = self.vram_place(cp)
            t_read = time.perf_counter_ns()
            start = self.clock.record()
            self.ssd.read_into(cp.obj, self.vram.pool[slot])  # type: ignore[union-attr]
            end = self.clock.record()
            row["host_read_s"] = (time.perf_counter_ns() - t_read) * 1e-9
            self.done.append(end)
            row["start"], row["end"] = start, end
            self.copy_rows.append(row)
            return
        if cp.route == ROUTE_SSD_VRAM:
            self.host_at(gate)
            src = torch.empty(self.shapes.elems, dtype=self.dtype, pin_memory=self.cuda)
            t_read = time.perf_counter_ns()
            self.ssd.read_into(cp.obj, src)  # type: ignore[union-attr]
            row["host_read_s"] = (time.perf_counter_ns() - t_read) * 1e-9
            dram_slot = None
        elif self.dram is not None:
            src = self.dram_buffer(cp.obj)
            slot = int(self.dram.slot_of[cp.obj])
            dram_slot = slot if 0 <= slot < self.dram.n_slots else None
        else:
            src = self.store.buffer(cp.obj)
            dram_slot = None
        slot = self.vram_place(cp)
        if cp.prefetch or self.demand_stream is None:
            engine = self.copy_streams[self.device_copies % len(self.copy_streams)]  # round robin over engines
            self.device_copies += 1
        else:  # demand copies do not queue behind issued prefetches (the simulator's rule, README "copy order")
            engine = self.demand_stream
        if self.cuda:
            side = engine.stream
            if gate is not None:
                side.wait_event(gate.cuda_event)
            for j in cp.deps + cp.cancels:  # copies that must finish first (a reused slot's previous writer)
                ev = self.done[j].cuda_event
                if ev is not None:
                    side.wait_event(ev)
        rec = engine.copy(self.vram.pool[slot], src, slot=slot, tag=cp.obj)
        self.done.append(rec.end)
        if dram_slot is not None:
            self.dram_last_read[dram_slot] = rec.end
        row["start"], row["end"] = rec.start, rec.end
        self.copy_rows.append(row)

    def host_at(self, gate: Event | None) -> None:
        """The host waits until the device reached the cell's gate (host-side reads are issued there)."""
        if gate is not None and gate.cuda_event is not None:
            gate.cuda_event.synchronize()

    def host_wait(self, copy_ids: tuple[int, ...]) -> None:
        for j in copy_ids:
            ev = self.done[j].cuda_event
            if ev is not None:
                ev.synchronize()

    def vram_place(self, cp: PlannedCopy) -> int:
        """The VRAM slot copy `cp` writes: evict its victims, then a cache slot (resident) or a spare one."""
        pool = self.vram
        obj = cp.obj
        current = int(pool.slot_of[obj])
        if 0 <= current < pool.n_slots:  # evicted earlier with nobody taking its room yet: copy it again
            pool.evict(obj)
        victims = [v for v in cp.victims if v != obj]
        for v in victims:
            if not 0 <= int(pool.slot_of[v]) < pool.n_slots:
                raise RuntimeError(f"victim {v} of copy {cp.copy_id} has no cache slot")
        if cp.resident:
            slot, needs_copy = pool.place(obj, victims)
            assert needs_copy
            return slot
        for v in victims:
            pool.evict(v)
        return pool.stage(obj)

    def dram_place(self, cp: PlannedCopy) -> torch.Tensor:
        """The host buffer an ssd -> dram copy fills, after the readers of the slot it overwrites."""
        dram = self.dram
        obj = cp.obj
        if dram is None:  # objects live on SSD and DRAM caches nothing: a buffer for this cell (cpu handler)
            buf = torch.empty(self.shapes.elems, dtype=self.dtype, pin_memory=self.cuda)
            self.dram_staged[obj] = buf
            return buf
        current = int(dram.slot_of[obj])
        if 0 <= current < dram.n_slots:
            dram.evict(obj)
        victims = [v for v in cp.victims if v != obj]
        if not cp.resident:
            for v in victims:
                dram.evict(v)
            buf = torch.empty(self.shapes.elems, dtype=self.dtype, pin_memory=self.cuda)
            self.dram_staged[obj] = buf
            return buf
        slot, _ = dram.place(obj, victims)
        last = self.dram_last_read.pop(slot, None)  # write-after-read on the DRAM slot
        if last is not None and last.cuda_event is not None:
            last.cuda_event.synchronize()
        return dram.pool[slot]

    def dram_buffer(self, obj: int) -> torch.Tensor:
        dram = self.dram
        if dram is not None and 0 <= int(dram.slot_of[obj]) < dram.n_slots:
            return dram.pool[int(dram.slot_of[obj])]
        try:
            return self.dram_staged[obj]
        except KeyError:
            raise RuntimeError(f"object {obj} is in neither the DRAM tier nor a staging buffer") from None

    def check_slots(self, c: int, planner: Any) -> None:
        """Every object the cache core holds sits in a slot holding its host bytes (both tiers)."""
        self.synchronize()
        core = planner.core
        resident = set(core.resident_objects())
        pending = set(planner.orphans)  # evicted, their room not yet taken: still mapped
        mapped = set(self.vram.resident())
        if mapped - pending != resident:
            raise RuntimeError(f"cell {c}: VRAM slots hold {sorted(mapped - pending)}, the cache core "
                               f"{sorted(resident)}")
        for obj in resident:
            slot = int(self.vram.slot_of[obj])
            if not torch.equal(self.vram.pool[slot].cpu(), self.store.buffer(obj)):
                raise RuntimeError(f"cell {c}: VRAM slot {slot} does not hold object {obj}'s bytes")
        if self.dram is not None and planner.dram is not None:
            d_resident = set(planner.dram.resident_objects())
            d_mapped = set(self.dram.resident()) - set(planner.dram_orphans)
            if d_mapped != d_resident:
                raise RuntimeError(f"cell {c}: DRAM slots hold {sorted(d_mapped)}, the DRAM core {sorted(d_resident)}")
            for obj in d_resident:
                if not torch.equal(self.dram.pool[int(self.dram.slot_of[obj])], self.store.buffer(obj)):
                    raise RuntimeError(f"cell {c}: the DRAM slot of object {obj} does not hold its bytes")
