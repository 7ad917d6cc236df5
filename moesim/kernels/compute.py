"""Run one cell's experts from the slot pool: wait for their copies, launch, record the reads.

This is the compute half of the executor loop; with `SlotPool.load` (the copy half) and a planner
it is all a real-GPU executor needs:

    for cell in cells:
        plan = planner.step(cell)
        for copy in plan.copies: pool.load(copy.obj, store, copies, victims=copy.victims)
        y = compute_cell(pool, layer, x, topk_ids, topk_weights, copies, timer=timer, key=cell)
        pool.release_staged()

Backends: "triton" (the grouped kernel; on CPU only under TRITON_INTERPRET=1), "torch" (the
reference, reading the same slots), "auto" (triton on CUDA or under the interpreter, else torch).
GPU path only: imports torch (triton only when the triton backend runs).
"""

from __future__ import annotations

import os
from typing import Callable, Hashable, Iterable

import numpy as np
import torch

from moesim.kernels.reference import moe_reference, pool_weights
from moesim.kernels.slot_pool import SlotPool
from moesim.kernels.streams import CellTimer, CopyStream

BACKENDS = ("auto", "triton", "torch", "cpu")
"""cpu: the calibrated CPU operator (moesim/kernels/cpu_expert.py), chosen by the executor on the CPU device."""


def pick_backend(device: torch.device, backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError("backend cpu runs on the CPU device only")
    if backend != "auto":
        return backend
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "triton"
    return "torch"


def to_device(values: torch.Tensor | np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host array on the device without a host sync (pinned staging + non-blocking copy).

    A plain `.to("cuda")` from pageable memory waits for the stream, which would serialise the
    executor's copy/compute pipeline once per cell.
    """
    if isinstance(values, torch.Tensor) and values.device == device:
        return values.to(dtype).contiguous()
    t = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
    t = t.to(dtype).contiguous()
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def compute_cell(
    pool: SlotPool,
    layer: int,
    x: torch.Tensor,
    topk_ids: torch.Tensor | np.ndarray,
    topk_weights: torch.Tensor | np.ndarray,
    copies: CopyStream | None = None,
    backend: str = "auto",
    timer: CellTimer | None = None,
    key: Hashable = None,
    kernel_config: object | None = None,
    skip: Iterable[int] = (),
) -> torch.Tensor:
    """y [T, H] for one (pass, layer) cell; every routed expert must be in the pool (loaded or staged).

    topk_ids [T, K] are expert ids within `layer`, best given on the host (the trace's routing): the
    slots to wait for are found there, and a device tensor would cost a host sync to read. With `copies`, the compute stream first waits for
    the slots' pending copies (timed as ("stall", key) when a timer is given) and afterwards records
    the reads so later copies into these slots wait for this compute (timed as ("compute", key)).
    Experts in `skip` (run elsewhere, e.g. on the host CPU) are not read: their pairs contribute zero.
    """
    ids_host = topk_ids.cpu().numpy() if isinstance(topk_ids, torch.Tensor) else np.asarray(topk_ids)
    skipped = {int(e) for e in skip}
    experts = [e for e in np.unique(ids_host).tolist() if e not in skipped]
    shapes = pool.shapes
    slots = pool.slots_of(shapes.obj(layer, e) for e in experts)
    if copies is not None:
        if timer is not None:
            with timer.span(("stall", key)):
                copies.wait_ready(slots)
        else:
            copies.wait_ready(slots)
    table = pool.slot_table(layer)
    if skipped:
        table = table.clone()
        table[sorted(skipped)] = -1
    ids = to_device(ids_host, torch.int64, pool.device)
    weights = to_device(topk_weights, torch.float32, pool.device)
    chosen = pick_backend(pool.device, backend)
    if timer is not None:
        timer.start(("compute", key))
    if chosen == "triton":
        from moesim.kernels.expert_kernel import default_config, device_smem_limit, grouped_swiglu

        if kernel_config is None and pool.device.type == "cuda":
            kernel_config = default_config(ids_host.size / max(1, len(experts)), device_smem_limit(pool.device),
                                           pool.pool.element_size())
        y = grouped_swiglu(x, ids, weights, pool.pool, table, shapes.hidden, shapes.inter, config=kernel_config)
    else:
        weights_of = pool_weights(pool.pool, table, shapes.hidden, shapes.inter)
        if skipped:
            weights_of = _zero_for(skipped, weights_of, shapes.hidden, shapes.inter, pool.pool)
        y = moe_reference(x, ids, weights, weights_of, compute_dtype=torch.float32).to(x.dtype)
    if timer is not None:
        timer.stop(("compute", key))
    if copies is not None:
        copies.record_read(slots)
    return y


def _zero_for(skipped: set[int], weights_of: Callable[[int], tuple[torch.Tensor, ...]], hidden: int, inter: int,
              like: torch.Tensor) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """weights_of, with zero matrices for the skipped experts (the reference's view of a -1 slot)."""
    zeros = (torch.zeros((hidden, inter), dtype=like.dtype, device=like.device),
             torch.zeros((hidden, inter), dtype=like.dtype, device=like.device),
             torch.zeros((inter, hidden), dtype=like.dtype, device=like.device))

    def of(expert: int) -> tuple[torch.Tensor, ...]:
        return zeros if expert in skipped else weights_of(expert)

    return of
