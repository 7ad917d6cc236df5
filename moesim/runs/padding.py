"""How many bytes an O_DIRECT expert read takes from storage (the engine's `read_bytes`).

O_DIRECT reads whole blocks: a read of `size` bytes starting at file offset `o` transfers
align x (ceil((o + size) / align) - floor(o / align)) bytes. The BigMoeOnEdge engine reads an
expert as one read per weight tensor slice (llama.cpp keeps an expert's matrices in separate
tensors: gate, up and down for qwen3moe; a fused gate_up and down for gemma4), so an expert read
costs its bytes plus one partial block per slice boundary:

- slices whose size is a whole number of blocks and whose start is not block-aligned pay exactly one
  block each: qwen3-30B-A3B's 3 slices are multiples of 4 KiB, and every decode step of qwen.metrics
  reads exactly expert_bytes + 3 x 4096 per missed expert (tests/runs/test_padding.py);
- other slices pay 1 or 2 partial blocks depending on where the slice starts, which is the tensor's
  offset in the GGUF file plus expert id x slice size. Without the offsets the expected padding
  over start positions is one block per slice (the mean of align - r and 2 x align - r, weighted by
  how often each occurs, r = size mod align), which is what `expected_read_bytes` charges: on the
  gemma route trace (2 slices, 8 KiB expected per read) the per-step error stays below 0.01 % of the
  bytes read. `slice_read_bytes` is the exact rule when the offsets are known.
"""

from __future__ import annotations

import numpy as np

DEFAULT_ALIGN = 4096
# weight tensor slices per expert, by the GGUF architecture name (llama.cpp tensor layout)
SLICES_BY_ARCH = {"qwen3moe": 3, "qwen2moe": 3, "mixtral": 3, "llama": 3, "deepseek2": 3, "gpt-oss": 3,
                  "gemma4": 2}
DEFAULT_SLICES = 3


def slices_for(arch: str | None) -> int:
    return SLICES_BY_ARCH.get((arch or "").lower(), DEFAULT_SLICES)


def slice_read_bytes(offset: np.ndarray | int, size: np.ndarray | int, align: int = DEFAULT_ALIGN) -> np.ndarray:
    """Bytes an O_DIRECT read of `size` bytes at file `offset` transfers (whole aligned blocks)."""
    offset = np.asarray(offset, dtype=np.int64)
    size = np.asarray(size, dtype=np.int64)
    first = offset // align
    last = -(-(offset + size) // align)
    return np.where(size > 0, (last - first) * align, 0)


def expected_read_bytes(expert_bytes: np.ndarray | int, slices: int = DEFAULT_SLICES,
                        align: int = DEFAULT_ALIGN) -> np.ndarray:
    """Storage bytes of one expert read when the slices' file offsets are unknown: one block per slice."""
    b = np.asarray(expert_bytes, dtype=np.int64)
    return np.where(b > 0, b + slices * align, 0)
