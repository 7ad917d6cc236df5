"""The host expert store: one contiguous buffer per object, pinned when CUDA is present.

Pinned (page-locked) memory is what lets the copy engine DMA an expert with an asynchronous copy;
pinning per copy would cost more than it saves, so every buffer is allocated and pinned once, at
start-up (gpu_method.md §3). One buffer per object, gate/up/down packed, means one copy per miss.
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
    `pin=None` pins exactly when CUDA is available. Building it is O(total expert bytes).
    """

    def __init__(self, shapes: ExpertShapes, seed: int = 0, objects: Iterable[int] | None = None,
                 pin: bool | None = None) -> None:
        self.shapes = shapes
        self.seed = int(seed)
        self.pinned = bool(torch.cuda.is_available() if pin is None else pin)
        dtype = shapes.torch_dtype()
        ids = range(shapes.n_objects) if objects is None else sorted({int(o) for o in objects})
        self._buffers: dict[int, torch.Tensor] = {}
        for obj in ids:
            values = torch.from_numpy(expert_weights_f32(shapes, obj, self.seed))
            buf = torch.empty(shapes.elems, dtype=dtype, pin_memory=self.pinned)
            buf.copy_(values)
            self._buffers[obj] = buf

    @property
    def objects(self) -> list[int]:
        return list(self._buffers)

    def __contains__(self, obj: int) -> bool:
        return obj in self._buffers

    def buffer(self, obj: int) -> torch.Tensor:
        """The packed 1-D buffer of `obj` (what one copy moves)."""
        try:
            return self._buffers[obj]
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
        return len(self._buffers) * self.shapes.expert_bytes


def unpack(flat: torch.Tensor, shapes: ExpertShapes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, i, n = shapes.hidden, shapes.inter, shapes.matrix_elems
    return flat[:n].view(h, i), flat[n:2 * n].view(h, i), flat[2 * n:3 * n].view(i, h)
