"""Experts on disk, for profiles whose objects live on SSD (DRAM too small, or unified memory).

The executor reads an object from one file into a host buffer: a DRAM-tier slot (DRAM caches
SSD), a pinned bounce buffer (GPUDirect-style and unified-memory routes on a GPU, which then copy
it up), or, on the CPU device, the cache slot itself. The file is written once from the host
store (objects at a 4096-byte stride), synced and dropped from the page cache, and read with
O_DIRECT (moesim/kernels/direct_io.py): a buffered read of a file just written timed the page
cache, not the drive. Where the filesystem refuses O_DIRECT, `mode`/`note` say so. A VM disk is
"this host's disk", not an NVMe-class drive (gpu_method.md §10).
GPU path only: imports torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from moesim.kernels.direct_io import DirectFile, align_up, write_file
from moesim.kernels.host_store import HostExpertStore


class SsdExpertStore:
    """One file holding `store`'s objects back to back; `read_into` fills a host tensor from it."""

    def __init__(self, store: HostExpertStore, directory: str | os.PathLike[str] | None = None,
                 direct: bool = True) -> None:
        self.shapes = store.shapes
        self._owned_dir = None
        if directory is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="moesim-ssd-")
            directory = self._owned_dir.name
        self.path = Path(directory) / "experts.bin"
        self.stride = align_up(self.shapes.expert_bytes)
        self._offset = {obj: i * self.stride for i, obj in enumerate(store.objects)}
        pad = bytes(self.stride - self.shapes.expert_bytes)

        def chunks():
            for obj in store.objects:
                yield store.buffer(obj).view(torch.uint8).numpy().tobytes()
                if pad:
                    yield pad

        write_file(self.path, chunks())
        self._file: DirectFile | None = DirectFile(self.path, direct=direct)
        self.mode, self.note = self._file.mode, self._file.note

    def read_into(self, obj: int, dst: torch.Tensor) -> int:
        """Read obj's bytes into the contiguous host tensor `dst`; returns the bytes read."""
        if self._file is None:
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
        return self._file.read_into(view, offset, want)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
