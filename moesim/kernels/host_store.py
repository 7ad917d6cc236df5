"""The host expert store: one contiguous buffer per object, pinned when CUDA is present.

Pinned (page-locked) memory is what lets the copy engine DMA an expert with an asynchronous copy;
pinning per copy would cost more than it saves, so the store is allocated and pinned once, at
start-up (gpu_method.md §3). Each object is one contiguous row (gate/up/down packed) of a single
host slab, so one copy moves one expert. The slab is page-locked in place with cudaHostRegister:
torch's pinned allocator rounds every allocation up to a power of two, which would cost a third
more host memory for 12.6 MB OLMoE experts (and half again for Mixtral's 352 MB ones).
GPU path only: imports torch.
"""

from __future__ import annotations

from typing import Iterable

import torch

from moesim.kernels.shapes import ExpertShapes
from moesim.kernels.weights import expert_weights_f32


class HostExpertStore:
    """Host copies of the experts the executor may fetch.

    `objects` limits the store to some object ids (e.g. the layers a validation run replays);
    `pin=None` pins exactly when CUDA is available. Building it is O(total expert bytes); random
    generation runs at a few hundred MB/s on one core, so a full Mixtral store takes minutes.
    """

    def __init__(self, shapes: ExpertShapes, seed: int = 0, objects: Iterable[int] | None = None,
                 pin: bool | None = None) -> None:
        self.shapes = shapes
        self.seed = int(seed)
        pin = bool(torch.cuda.is_available() if pin is None else pin)
        dtype = shapes.torch_dtype()
        ids = range(shapes.n_objects) if objects is None else sorted({int(o) for o in objects})
        self._row = {obj: i for i, obj in enumerate(ids)}
        self._slab = torch.empty((len(self._row), shapes.elems), dtype=dtype)
        for obj, i in self._row.items():
            self._slab[i].copy_(torch.from_numpy(expert_weights_f32(shapes, obj, self.seed)))
        self._registered = False
        if pin and self._slab.numel():
            self._pin()
        self.pinned = bool(self._slab.is_pinned()) if self._slab.numel() else pin

    def _pin(self) -> None:
        """Page-lock the slab where it is; fall back to a pinned copy if registration fails."""
        nbytes = self._slab.numel() * self._slab.element_size()
        try:
            err = int(torch.cuda.cudart().cudaHostRegister(self._slab.data_ptr(), nbytes, 0))
        except (AttributeError, RuntimeError, AssertionError):
            err = -1
        if err == 0:
            self._registered = True
        else:
            self._slab = self._slab.pin_memory()

    def close(self) -> None:
        """Unpin the slab (the store must not be used afterwards)."""
        if self._registered:
            self._registered = False
            torch.cuda.cudart().cudaHostUnregister(self._slab.data_ptr())

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass

    @property
    def objects(self) -> list[int]:
        return list(self._row)

    def __contains__(self, obj: int) -> bool:
        return obj in self._row

    def buffer(self, obj: int) -> torch.Tensor:
        """The packed 1-D buffer of `obj` (what one copy moves)."""
        try:
            return self._slab[self._row[obj]]
        except KeyError:
            raise KeyError(f"object {obj} is not in the host store") from None

    def views(self, obj: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_gate [H, I], W_up [H, I], W_down [I, H]) as views of the packed buffer."""
        return unpack(self.buffer(obj), self.shapes)

    def nbytes(self, obj: int) -> int:
        buf = self.buffer(obj)
        return buf.numel() * buf.element_size()

    @property
    def total_bytes(self) -> int:
        return len(self._row) * self.shapes.expert_bytes


def unpack(flat: torch.Tensor, shapes: ExpertShapes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, i, n = shapes.hidden, shapes.inter, shapes.matrix_elems
    return flat[:n].view(h, i), flat[n:2 * n].view(h, i), flat[2 * n:3 * n].view(i, h)
