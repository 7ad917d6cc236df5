"""Experts on disk, for profiles whose objects live on SSD (DRAM too small, or unified memory).

The executor reads an object from one file with a positioned read (`os.preadv`) into a host
buffer: a DRAM-tier slot (DRAM caches SSD) or a pinned bounce buffer (GPUDirect-style and unified
memory routes, which then copy it up). The file is written once from the host store, so a read
returns exactly the bytes the host store holds. A read on a VM disk may be served by the page
cache: time it only as "this host's disk", not as an NVMe-class drive (gpu_method.md §10).
GPU path only: imports torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from moesim.kernels.host_store import HostExpertStore


class SsdExpertStore:
    """One file holding `store`'s objects back to back; `read_into` fills a host tensor from it."""

    def __init__(self, store: HostExpertStore, directory: str | os.PathLike[str] | None = None) -> None:
        self.shapes = store.shapes
        self._owned_dir = None
        if directory is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="moesim-ssd-")
            directory = self._owned_dir.name
        self.path = Path(directory) / "experts.bin"
        self._offset: dict[int, int] = {}
        stride = self.shapes.expert_bytes
        with open(self.path, "wb") as f:
            for i, obj in enumerate(store.objects):
                f.write(store.buffer(obj).view(torch.uint8).numpy().tobytes())
                self._offset[obj] = i * stride
        self._fd: int | None = os.open(self.path, os.O_RDONLY)

    def read_into(self, obj: int, dst: torch.Tensor) -> int:
        """Read obj's bytes into the contiguous host tensor `dst`; returns the bytes read."""
        if self._fd is None:
            raise RuntimeError("the SSD store is closed")
        if dst.device.type != "cpu" or not dst.is_contiguous():
            raise ValueError("dst must be a contiguous host tensor")
        try:
            offset = self._offset[obj]
        except KeyError:
            raise KeyError(f"object {obj} is not in the SSD store") from None
        view = memoryview(dst.view(torch.uint8).numpy())
        want = self.shapes.expert_bytes
        if view.nbytes < want:
            raise ValueError(f"dst holds {view.nbytes} bytes, an object needs {want}")
        done = 0
        while done < want:  # a positioned read may return short
            n = os.preadv(self._fd, [view[done:want]], offset + done)
            if n <= 0:
                raise OSError(f"short read of object {obj} from {self.path}")
            done += n
        return done

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
