"""The SwiGLU expert operator as the CPU runs it: one gather, three matmuls, SiLU, product, weighted index_add.

`moesim calibrate --device cpu` times exactly this function (moesim/kernels/cpu_calibrate.py), and
the reference harness (moesim/harness) and the executor's CPU path run it, so the calibrated
per-expert overhead and byte rate describe the operator the measured runs execute.
Weights are in the "x @ W" layout of moesim/kernels/host_store.py: W_gate, W_up [H, I], W_down [I, H].
"""

from __future__ import annotations

from typing import Iterable

import torch

Group = tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""(token rows [n] int64, gate weights [n] float32, (W_gate, W_up, W_down)) of one expert."""


def swiglu_experts(x: torch.Tensor, out: torch.Tensor, groups: Iterable[Group]) -> torch.Tensor:
    """out[rows] += gate * SwiGLU(x[rows]) for every expert group, in the order given; returns out."""
    for rows, gate, (w_gate, w_up, w_down) in groups:
        xs = x.index_select(0, rows)
        y = (torch.nn.functional.silu(xs @ w_gate) * (xs @ w_up)) @ w_down
        out.index_add_(0, rows, y * gate[:, None])
    return out
