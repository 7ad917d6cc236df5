"""Routed-expert compute: per request (one distinct object run in a cell) and grouped per cell.

On processor P, an expert of a layer whose one expert has N weights stored in format f (bytes B,
the trace's object bytes), run for t tokens:
    per request:  t_r = max(B / P.memory_bandwidth,
                            t x F_tok / rate(P, f, t) + N x dequant_ops(f) / dequant_rate(P, f))
                        + kernels("expert") x P.kernel_overhead
    grouped cell: T_c = max(sum B / bw, sum flops / rate + sum dequant / dequant_rate)
                        + kernels("experts_grouped") x P.kernel_overhead      (barrier mode: one call)
rate(P, f, t) = peak(P, compute_dtype(f)) for t = 1 (matrix-vector), P.batched_flops for t > 1 where
the profile states it (matrix-matrix: processors.matrix_rate).
F_tok = 2 x matrix weights (+ biases) per token (ModelSpec.expert_flops_per_token). Weights are read
once per kernel call whatever the token count, and dequantised once as they are read, at the
processor's elementwise ("fp32") rate where its matmul runs at another (tensor-core, AMX) rate;
where the matmul itself runs at the fp32 rate (llama.cpp's integer dot products on a CPU, an
effective fitted rate) unpacking is part of that rate and is not charged twice. Rows with 0
tokens on P (run elsewhere, dropped) cost nothing. Where the profile carries a measured kernel
table for this expert shape (moesim/sim/compute/kernel_table.py), its time replaces the roofline
part on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.sim.compute import formats
from moesim.sim.compute.kernel_table import KernelTable
from moesim.sim.compute.processors import LAUNCH_FACTOR, Processor, dequant_rate, kernels, peak


@dataclass(frozen=True)
class ExpertCosts:
    """Per trace layer: what one expert reads and computes (bytes come per request from the trace)."""

    params: np.ndarray  # weights of one expert
    flops_per_token: np.ndarray
    formats: tuple[str, ...]
    hidden: int = 0
    intermediate: int = 0

    def layer_peak(self, proc: Processor) -> np.ndarray:
        return np.asarray([peak(proc, formats.compute_dtype(f)) for f in self.formats])

    def request_rate(self, proc: Processor, layer: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """FLOP/s of each request's matmul: its layer's peak for one token, the processor's batched_flops for
        more where it states one (moesim/sim/compute/processors.py, matrix_rate)."""
        vector = self.layer_peak(proc)[layer]
        batched = proc.batched_flops
        return np.where(tokens > 1, float(batched), vector) if batched else vector

    def layer_dequant(self, proc: Processor) -> np.ndarray:
        """Seconds per weight of dequantisation on `proc`, per layer (0 where it is folded in; see dequant_rate)."""
        out = []
        for f in self.formats:
            rate = dequant_rate(proc, formats.compute_dtype(f))
            ops = formats.dequant_ops(f) if formats.known(f) else 0.0
            out.append(ops / rate if rate else 0.0)
        return np.asarray(out)


def _launch(proc: Processor, framework: str, operator: str) -> float:
    return kernels(framework, operator) * proc.kernel_overhead * LAUNCH_FACTOR.get(framework, 1.0)


def expert_request_times(
    req_layer: np.ndarray,
    req_bytes: np.ndarray,
    req_tokens: np.ndarray,
    costs: ExpertCosts,
    proc: Processor,
    framework: str,
    table: KernelTable | None = None,
) -> np.ndarray:
    """Seconds each request's expert takes on `proc` when run on its own (0 where it has no tokens)."""
    layer = req_layer.astype(np.int64)
    tokens = req_tokens.astype(np.float64)
    compute = tokens * costs.flops_per_token[layer] / costs.request_rate(proc, layer, tokens) \
        + costs.params[layer] * costs.layer_dequant(proc)[layer]
    roof = np.maximum(req_bytes.astype(np.float64) / proc.memory_bandwidth, compute)
    if table is not None:
        roof = table.times(np.ones_like(tokens), tokens)
    return np.where(tokens > 0, roof + _launch(proc, framework, "expert"), 0.0)


def grouped_cell_times(
    req_cell: np.ndarray,
    req_layer: np.ndarray,
    req_bytes: np.ndarray,
    req_tokens: np.ndarray,
    n_cells: int,
    costs: ExpertCosts,
    proc: Processor,
    framework: str,
    grouped: bool = True,
    table: KernelTable | None = None,
) -> np.ndarray:
    """Seconds per cell for the experts `proc` runs in it: one grouped call, or one call per expert."""
    if not grouped:
        per = expert_request_times(req_layer, req_bytes, req_tokens, costs, proc, framework, table)
        return np.bincount(req_cell, weights=per, minlength=n_cells)
    run = req_tokens > 0
    cells = req_cell[run]
    layer = req_layer[run].astype(np.int64)
    tokens = req_tokens[run].astype(np.float64)
    nbytes = np.bincount(cells, weights=req_bytes[run].astype(np.float64), minlength=n_cells)
    mm = np.bincount(cells, weights=tokens * costs.flops_per_token[layer] / costs.request_rate(proc, layer, tokens),
                     minlength=n_cells)
    deq = np.bincount(cells, weights=costs.params[layer] * costs.layer_dequant(proc)[layer], minlength=n_cells)
    active = np.bincount(cells, minlength=n_cells).astype(np.float64)
    roof = np.maximum(nbytes / proc.memory_bandwidth, mm + deq)
    if table is not None:
        total_tokens = np.bincount(cells, weights=tokens, minlength=n_cells)
        roof = np.where(active > 0, table.times(active, total_tokens / np.maximum(active, 1.0)), 0.0)
    return np.where(active > 0, roof + _launch(proc, framework, "experts_grouped"), 0.0)
