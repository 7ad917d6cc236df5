"""The harness's expert offload, written from scratch: an expert file, an LRU of slots, fetches.

- ExpertFile: every expert of the model back to back in one file (stride rounded up to 4096 bytes
  so each expert can be read with O_DIRECT straight into a slot); built once per (model, seed)
  and reused (a sidecar JSON says what it holds).
- LruCache: an OrderedDict keyed by (layer, expert) -> slot, `capacity` slots. Per MoE layer call
  the layer's distinct experts are taken in the order the router emitted them (token by token, its
  top-k in rank order); hits move to the most-recent end first, then each miss is fetched and
  inserted, evicting the least recent entry that the current layer does not use. When every
  resident entry is in use the miss streams through a spare buffer and is not cached.
- Fetch: on CPU an O_DIRECT read from the file into the slot (DRAM cache); on CUDA a copy from a
  pinned host copy of the file on a side stream, which the compute stream waits for. `throttle_Bps`
  paces every fetch to an emulated link speed (SpecMD emulated 5 GB/s on an A100 this way).
Nothing here imports moesim's planner, cache core or policies.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from moesim.harness.model import HarnessModel, expert_weights
from moesim.kernels.direct_io import DirectFile, aligned_buffer, align_up, write_file

FILE_FORMAT = "moesim.harness.experts/1"


class ExpertFile:
    """All experts of `model` in `directory`/experts.bin (built once, reused when the sidecar matches)."""

    def __init__(self, model: HarnessModel, directory: str | os.PathLike[str], direct: bool = True) -> None:
        self.model = model
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "experts.bin"
        self.stride = align_up(model.expert_bytes)
        meta = {"format": FILE_FORMAT, "model": model.to_dict(), "stride": self.stride}
        sidecar = self.dir / "experts.json"
        fresh = not (self.path.is_file() and sidecar.is_file() and _read_json(sidecar) == meta
                     and self.path.stat().st_size == self.stride * model.n_layers * model.n_experts)
        self.built = fresh
        if fresh:
            pad = self.stride - model.expert_bytes
            np_dtype = {"fp32": np.float32, "fp16": np.float16, "bf16": None}[model.dtype]

            def chunks():
                for layer in range(model.n_layers):
                    for e in range(model.n_experts):
                        w = expert_weights(model, layer, e)
                        if np_dtype is None:  # bf16: numpy has none; go through torch
                            yield torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
                        else:
                            yield w.astype(np_dtype).tobytes()
                        if pad:
                            yield bytes(pad)

            write_file(self.path, chunks())
            sidecar.write_text(json.dumps(meta, sort_keys=True))
        self.file = DirectFile(self.path, direct=direct)

    def offset(self, layer: int, expert: int) -> int:
        return (layer * self.model.n_experts + expert) * self.stride

    def close(self) -> None:
        self.file.close()


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class LayerOutcome:
    """What one MoE layer call did in the cache (distinct experts, in service order)."""

    hits: int = 0
    misses: int = 0
    compulsory: int = 0
    capacity: int = 0
    collision: int = 0
    bypassed: int = 0
    bytes: int = 0
    evictions: int = 0
    fetch_s: float = 0.0
    slots: dict[int, int] = field(default_factory=dict)  # expert -> slot (spare slots >= capacity)


class LruCache:
    """(layer, expert) -> slot, least recently used first. Also classifies misses (never seen /
    evicted earlier in the same forward pass / otherwise)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.order: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.free = list(range(self.capacity - 1, -1, -1))  # pop() gives the lowest free slot
        self.seen: set[tuple[int, int]] = set()
        self.evicted_in: dict[tuple[int, int], int] = {}
        self.evictions = 0

    def serve(self, layer: int, experts: list[int], pass_index: int, fetch) -> LayerOutcome:
        """Serve one layer's distinct experts; `fetch(expert, slot)` fills a slot (a spare one when bypassed)."""
        out = LayerOutcome()
        in_use = {(layer, e) for e in experts}
        missing = []
        for e in experts:
            key = (layer, e)
            if key in self.order:
                self.order.move_to_end(key)
                out.hits += 1
                out.slots[e] = self.order[key]
            else:
                missing.append(e)
        spare = self.capacity
        for e in missing:
            key = (layer, e)
            out.misses += 1
            if key not in self.seen:
                out.compulsory += 1
            elif self.evicted_in.get(key) == pass_index:
                out.collision += 1
            else:
                out.capacity += 1
            self.seen.add(key)
            slot = self.free.pop() if self.free else None
            if slot is None:
                victim = next((k for k in self.order if k not in in_use), None)
                if victim is not None:
                    slot = self.order.pop(victim)
                    self.evicted_in[victim] = pass_index
                    self.evictions += 1
                    out.evictions += 1
            if slot is None:  # every resident expert is in use by this layer: stream, do not cache
                slot = spare
                spare += 1
                out.bypassed += 1
            else:
                self.order[key] = slot
            out.slots[e] = slot
            out.bytes += fetch(e, slot)
        return out


class SlotBuffers:
    """Cache slots plus spare slots for bypassed misses, each one expert's packed weights.

    On CPU one page-aligned anonymous mapping (so O_DIRECT reads land in place); on CUDA a device
    tensor. `views(slot)` gives (W_gate, W_up, W_down) in the model's dtype.
    """

    def __init__(self, model: HarnessModel, n_slots: int, n_spare: int, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.n = n_slots + n_spare
        elems = model.expert_elems
        self.stride = align_up(model.expert_bytes)
        if device.type == "cpu":
            self._map = aligned_buffer(self.stride * self.n)
            raw = torch.frombuffer(self._map, dtype=torch.uint8)
            self.flat = [raw[i * self.stride:i * self.stride + model.expert_bytes].view(model.torch_dtype)
                         for i in range(self.n)]
        else:
            self._map = None
            pool = torch.empty((self.n, elems), dtype=model.torch_dtype, device=device)
            self.flat = [pool[i] for i in range(self.n)]
        h, i, n = model.hidden, model.inter, model.hidden * model.inter
        self._views = [(f[:n].view(h, i), f[n:2 * n].view(h, i), f[2 * n:].view(i, h)) for f in self.flat]

    def views(self, slot: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._views[slot]

    def memory(self, slot: int) -> memoryview:
        """The slot's bytes on the host (CPU only), `stride` long, page aligned."""
        assert self._map is not None
        return memoryview(self._map)[slot * self.stride:(slot + 1) * self.stride]


class Fetcher:
    """Fills slots: O_DIRECT file reads on CPU, pinned-host -> device copies on a side stream on CUDA."""

    def __init__(self, store: ExpertFile, slots: SlotBuffers, throttle_Bps: float | None = None) -> None:
        self.store = store
        self.slots = slots
        self.throttle = float(throttle_Bps) if throttle_Bps else None
        self.cuda = slots.device.type == "cuda"
        self.pinned: torch.Tensor | None = None
        self.stream = None
        self.pending: list = []
        if self.cuda:
            m = store.model
            n = m.n_layers * m.n_experts
            host = torch.empty((n, store.stride), dtype=torch.uint8).pin_memory()
            for k in range(n):  # one pass over the file, at start-up
                store.file.read_into(memoryview(host[k].numpy()), k * store.stride, store.stride)
            self.pinned = host
            self.stream = torch.cuda.Stream(device=slots.device)

    def __call__(self, layer: int, expert: int, slot: int) -> int:
        nbytes = self.store.model.expert_bytes
        t0 = time.perf_counter()
        if not self.cuda:
            self.store.file.read_into(self.slots.memory(slot), self.store.offset(layer, expert), self.store.stride)
        else:
            src = self.pinned[layer * self.store.model.n_experts + expert, :nbytes].view(self.store.model.torch_dtype)
            with torch.cuda.stream(self.stream):
                self.slots.flat[slot].copy_(src, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(self.stream)
            self.pending.append(ev)
            if self.throttle:
                ev.synchronize()
        if self.throttle:  # pace to the emulated link: no fetch completes sooner than bytes / speed
            remaining = t0 + nbytes / self.throttle - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
        return nbytes

    def wait_copies(self) -> None:
        """The compute stream waits for this layer's copies (CUDA); nothing to do on CPU."""
        if self.cuda:
            current = torch.cuda.current_stream(self.slots.device)
            for ev in self.pending:
                current.wait_event(ev)
        self.pending.clear()

    def slots_free_after(self, event) -> None:
        """CUDA: later copies into any slot wait for the compute that last read slots (write-after-read)."""
        if self.cuda and event is not None:
            self.stream.wait_event(event)
