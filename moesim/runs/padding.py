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


# slice sizes of one expert by architecture, from the tensor shapes and their GGUF block formats
def gemma4_slices(expert_bytes: int) -> list[int]:
    """gemma-4-26B-A4B Q4_K_M: fused gate_up = 2 x 704 x 2816 weights in Q4_K (144 B per 256), then down."""
    gate_up = 2 * 704 * 2816 * 144 // 256
    return [gate_up, int(expert_bytes) - gate_up]


SLICE_SIZES = {"gemma4": gemma4_slices}


def _pad_patterns(size: int, n_experts: int, align: int, granularity: int) -> np.ndarray:
    """Distinct per-expert padding vectors a slice of `size` can have, over all start offsets."""
    starts = np.arange(0, align, granularity)[:, None] + np.arange(n_experts)[None, :] * size
    pad = slice_read_bytes(starts, size, align) - size
    return np.unique(pad, axis=0)


def fit_slice_padding(misses: np.ndarray, measured: np.ndarray, slice_sizes: list[list[int]], align: int = DEFAULT_ALIGN,
                      granularity: int = 32, restarts: int = 40, seed: int = 0) -> tuple[np.ndarray, int]:
    """Each layer's per-expert padding, identified from per-step bytes: (pad[L, E], steps matched exactly).

    `misses[l, t, e]` counts reads of expert e of layer l in step t; `measured[t]` the step's bytes.
    A tensor's file offset fixes where each expert's slice starts relative to the 4 KiB blocks, so
    a layer has only a handful of possible padding patterns (e.g. 3 for a slice of 1.5 blocks mod 4 KiB);
    coordinate descent over layers, restarted, picks the combination that reproduces the bytes. On
    gemma.metrics every exact solution found gives the same padding to every expert the run read
    (tests/runs/test_padding.py).
    """
    n_layers, n_steps, n_experts = misses.shape
    raw = np.zeros(n_steps)
    options = []
    for layer in range(n_layers):
        sizes = slice_sizes[layer]
        raw += misses[layer].sum(axis=1) * float(sum(sizes))
        combos = np.zeros((1, n_experts))
        for size in sizes:
            pats = _pad_patterns(int(size), n_experts, align, granularity)
            combos = (combos[:, None, :] + pats[None, :, :]).reshape(-1, n_experts)
        combos = np.unique(combos, axis=0)
        options.append((combos, misses[layer] @ combos.T))  # per step x combo
    target = np.asarray(measured, dtype=np.float64) - raw
    rng = np.random.default_rng(seed)
    best: tuple[float, list[int]] = (np.inf, [0] * n_layers)
    for _ in range(restarts):
        cur = [int(rng.integers(len(o[0]))) for o in options]
        pred = sum(options[l][1][:, cur[l]] for l in range(n_layers))
        for _sweep in range(50):
            changed = False
            for layer in rng.permutation(n_layers):
                contrib = options[layer][1]
                rest = target - (pred - contrib[:, cur[layer]])
                cost = ((rest[:, None] - contrib) ** 2).sum(axis=0)
                j = int(np.argmin(cost))
                if cost[j] < cost[cur[layer]]:
                    pred = pred - contrib[:, cur[layer]] + contrib[:, j]
                    cur[layer] = j
                    changed = True
            if not changed:
                break
        sse = float(((target - pred) ** 2).sum())
        if sse < best[0]:
            best = (sse, list(cur))
        if sse == 0:
            break
    pad = np.stack([options[l][0][best[1][l]] for l in range(n_layers)])
    pred = sum(options[l][1][:, best[1][l]] for l in range(n_layers))
    return pad, int((target - pred == 0).sum())
