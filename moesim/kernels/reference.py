"""Plain-torch reference for the grouped SwiGLU expert layer (the oracle the Triton kernel is tested against).

An expert computes y = (silu(x W_gate) * (x W_up)) W_down with W_gate, W_up of shape [hidden, inter]
and W_down of shape [inter, hidden] ("x @ W" layout, the layout the host store packs; HF checkpoints
store the transposes). A token's output is the gate-weighted sum over its top-k experts.

The reference loops over experts in float64 by default, so it is slow and obviously right; it reads
weights either from per-expert tensors or through a slot table from a slot pool, the same
indirection the kernel uses, so a wrong slot table shows up as a wrong answer in both.
"""

from __future__ import annotations

from typing import Callable

import torch

WeightsOf = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""expert id -> (W_gate [H, I], W_up [H, I], W_down [I, H])."""


def swiglu_expert(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """One expert's FFN on rows of x, in x's dtype (callers pick the precision by casting)."""
    dtype = x.dtype
    gate = x @ w_gate.to(dtype)
    up = x @ w_up.to(dtype)
    return (torch.nn.functional.silu(gate) * up) @ w_down.to(dtype)


def moe_reference(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    weights_of: WeightsOf,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Gate-weighted top-k combine of SwiGLU experts; returns [T, H] in `compute_dtype`.

    x [T, H]; topk_ids [T, K] expert ids; topk_weights [T, K] gate weights.
    """
    if x.dim() != 2 or topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"shapes do not fit: x {tuple(x.shape)}, ids {tuple(topk_ids.shape)}, "
                         f"weights {tuple(topk_weights.shape)}")
    xc = x.to(compute_dtype)
    out = torch.zeros(x.shape, dtype=compute_dtype, device=x.device)
    ids = topk_ids.to(torch.int64)
    for expert in torch.unique(ids).tolist():
        rows, ks = torch.nonzero(ids == expert, as_tuple=True)
        w_gate, w_up, w_down = weights_of(int(expert))
        y = swiglu_expert(xc[rows], w_gate.to(compute_dtype), w_up.to(compute_dtype), w_down.to(compute_dtype))
        out.index_add_(0, rows, y * topk_weights[rows, ks].to(compute_dtype)[:, None])
    return out


def pool_weights(pool: torch.Tensor, slot_of: torch.Tensor, hidden: int, inter: int) -> WeightsOf:
    """Read expert weights through a slot table from a pool [n_slots, 3*H*I] (gate | up | down packed)."""
    n = hidden * inter

    def weights_of(expert: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slot = int(slot_of[expert])
        if slot < 0:
            raise KeyError(f"expert {expert} has no slot")
        flat = pool[slot]
        return (flat[:n].view(hidden, inter), flat[n:2 * n].view(hidden, inter), flat[2 * n:3 * n].view(inter, hidden))

    return weights_of
