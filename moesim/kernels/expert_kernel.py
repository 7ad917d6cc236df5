"""Triton grouped SwiGLU expert kernel that reads expert weights from a VRAM slot pool through a slot table.

The shape of vLLM's `fused_moe_kernel` (vllm/model_executor/layers/fused_moe upstream) with the offload twist: weights
are not a stacked [E, N, K] tensor but a pool [n_slots, 3*H*I] of packed experts (gate | up | down,
"x @ W" layout: W_gate, W_up [H, I], W_down [I, H]), and each M-tile finds its weights as
pool[slot_of[expert]]. The policy decides which object sits in which slot; the kernel only follows
the table, so a cache swap never moves or re-packs any other weights.

Two launches, as in vLLM:
  1. gate_up: h[row] = silu(x[tok] W_gate) * (x[tok] W_up) for every routed (token, k) pair, grouped
     by expert into BLOCK_M-row tiles (the routing histogram decides how many tiles there are);
  2. down: out[pair] = gate_weight[pair] * (h[row] W_down), written to the pair's own row so the
     top-k combine is a deterministic sum over k (no atomics, bit-identical reruns).
Accumulation is fp32; weights may be fp32, fp16 or bf16 (bf16 `tl.dot` is wrong under the CPU
interpreter, so `upcast` casts operands to fp32 before the dot; on a GPU tensor cores take bf16).

This module imports triton at the top: import it only from GPU paths or tests (the CLI and the
core never do), and set TRITON_INTERPRET=1 before importing it to run on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch options. No autotune: the config is explicit so CPU CI can launch it."""

    block_m: int = 16
    block_n: int = 64
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 3


CPU_TEST_CONFIG = KernelConfig(block_m=16, block_n=16, block_k=16, num_warps=1, num_stages=1)


def default_config(tokens_per_expert: float, smem_limit: int | None = None, itemsize: int = 2) -> KernelConfig:
    """A reasonable tile shape from the mean tokens per active expert (decode ~1, prefill hundreds).

    With `smem_limit` (bytes of shared memory one block may use, `device_smem_limit`), the shape is
    shrunk until its pipelined tiles fit: the prefill shape needs ~120 KB, over an RTX 4090's ~99 KB.
    """
    if tokens_per_expert <= 16:
        config = KernelConfig(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=4)
    elif tokens_per_expert <= 64:
        config = KernelConfig(block_m=32, block_n=64, block_k=64, num_warps=4, num_stages=4)
    else:
        config = KernelConfig(block_m=64, block_n=128, block_k=64, num_warps=8, num_stages=3)
    return config if smem_limit is None else fit_shared_memory(config, smem_limit, itemsize)


def shared_memory_bytes(config: KernelConfig, itemsize: int = 2) -> int:
    """Shared memory of the larger (gate/up) kernel: per pipeline stage an x tile [M, K] and two weight
    tiles [K, N]; Triton keeps `num_stages` of them in flight."""
    per_stage = (config.block_m * config.block_k + 2 * config.block_k * config.block_n) * itemsize
    return config.num_stages * per_stage


def fit_shared_memory(config: KernelConfig, limit: int, itemsize: int = 2) -> KernelConfig:
    """The config with fewer stages (down to 2), then smaller K and N tiles (down to 32), until it fits `limit`."""
    import dataclasses

    while shared_memory_bytes(config, itemsize) > limit:
        if config.num_stages > 2:
            config = dataclasses.replace(config, num_stages=config.num_stages - 1)
        elif config.block_k > 32:
            config = dataclasses.replace(config, block_k=config.block_k // 2)
        elif config.block_n > 32:
            config = dataclasses.replace(config, block_n=config.block_n // 2)
        elif config.num_stages > 1:
            config = dataclasses.replace(config, num_stages=1)
        else:
            break
    return config


_SMEM: dict[int, int | None] = {}


def device_smem_limit(device: torch.device) -> int | None:
    """Opt-in shared memory per block of a CUDA device (None on CPU or when neither torch nor triton says)."""
    if device.type != "cuda":
        return None
    index = device.index or 0
    if index not in _SMEM:
        limit = getattr(torch.cuda.get_device_properties(index), "shared_memory_per_block_optin", None)
        if not limit:
            try:
                limit = triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]
            except Exception:  # API drift between Triton versions: keep the unshrunk shapes
                limit = None
        _SMEM[index] = int(limit) if limit else None
    return _SMEM[index]


def interpreter_active() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1 at import time)."""
    knobs = getattr(triton, "knobs", None)
    runtime = getattr(knobs, "runtime", None)
    if runtime is not None and hasattr(runtime, "interpret"):
        return bool(runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class Routing:
    """The (token, k) pairs sorted by expert and padded to whole tiles (vLLM's moe_align_block_size).

    sorted_pairs[n_tiles * block_m]: flat pair index token*K + k, or n_pairs for padding;
    tile_expert[n_tiles]: the expert of each tile, -1 for tiles past the last expert's run.
    n_tiles is an upper bound computed on the host from shapes alone, so building this needs no
    device-to-host synchronisation; unused tiles exit at once.
    """

    sorted_pairs: torch.Tensor
    tile_expert: torch.Tensor
    n_tiles: int
    n_pairs: int
    top_k: int
    block_m: int


def align_routing(topk_ids: torch.Tensor, n_experts: int, block_m: int) -> Routing:
    """Group the routed pairs by expert into block_m-row tiles. O(T*K log(T*K)) on the ids' device."""
    if topk_ids.dim() != 2:
        raise ValueError(f"topk_ids must be [tokens, top_k], got shape {tuple(topk_ids.shape)}")
    device = topk_ids.device
    flat = topk_ids.reshape(-1).to(torch.int64)
    n_pairs = flat.numel()
    top_k = int(topk_ids.shape[1])
    active_bound = min(n_experts, n_pairs)
    n_tiles = max(1, -(-(n_pairs + active_bound * (block_m - 1)) // block_m))
    counts = torch.zeros(n_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    cum_padded = torch.cumsum(padded, 0)
    first_of_expert = torch.cumsum(counts, 0) - counts
    order = torch.sort(flat, stable=True).indices
    sorted_experts = flat[order]
    rank = torch.arange(n_pairs, device=device) - first_of_expert[sorted_experts]
    dest = (cum_padded - padded)[sorted_experts] + rank
    sorted_pairs = torch.full((n_tiles * block_m,), n_pairs, dtype=torch.int32, device=device)
    sorted_pairs[dest] = order.to(torch.int32)
    tile_start = torch.arange(n_tiles, device=device, dtype=torch.int64) * block_m
    tile_expert = torch.searchsorted(cum_padded, tile_start, right=True)
    tile_expert = torch.where(tile_expert >= n_experts, -1, tile_expert).to(torch.int32)
    return Routing(sorted_pairs, tile_expert, n_tiles, n_pairs, top_k, block_m)


@triton.jit
def _gate_up_kernel(
    x_ptr, pool_ptr, slot_of_ptr, sorted_pairs_ptr, tile_expert_ptr, h_ptr,
    H, I, slot_stride, up_offset, stride_xt, n_pairs,
    TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, IEEE: tl.constexpr,
):
    pid = tl.program_id(0)
    n_tiles_n = tl.cdiv(I, BLOCK_N)
    pid_m = pid // n_tiles_n
    pid_n = pid % n_tiles_n
    expert = tl.load(tile_expert_ptr + pid_m)
    slot = tl.load(slot_of_ptr + tl.maximum(expert, 0))
    if (expert < 0) | (slot < 0):  # a tile past the last run, or an expert with no slot: nothing to do
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(sorted_pairs_ptr + offs_m)
    row_ok = pairs < n_pairs
    tokens = (pairs // TOP_K).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < I
    w_base = pool_ptr + slot.to(tl.int64) * slot_stride
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < H
        a = tl.load(x_ptr + tokens[:, None] * stride_xt + offs_k[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_offs = offs_k[:, None].to(tl.int64) * I + offs_n[None, :]
        w_mask = k_ok[:, None] & col_ok[None, :]
        wg = tl.load(w_base + w_offs, mask=w_mask, other=0.0)
        wu = tl.load(w_base + up_offset + w_offs, mask=w_mask, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            wg = wg.to(tl.float32)
            wu = wu.to(tl.float32)
        if IEEE:
            acc_gate = tl.dot(a, wg, acc_gate, input_precision="ieee")
            acc_up = tl.dot(a, wu, acc_up, input_precision="ieee")
        else:
            acc_gate = tl.dot(a, wg, acc_gate)
            acc_up = tl.dot(a, wu, acc_up)
    h = acc_gate * tl.sigmoid(acc_gate) * acc_up
    h_offs = offs_m[:, None].to(tl.int64) * I + offs_n[None, :]
    tl.store(h_ptr + h_offs, h.to(h_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _down_kernel(
    h_ptr, pool_ptr, slot_of_ptr, sorted_pairs_ptr, tile_expert_ptr, gate_w_ptr, out_ptr,
    H, I, slot_stride, down_offset, n_pairs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr, IEEE: tl.constexpr,
):
    pid = tl.program_id(0)
    n_tiles_n = tl.cdiv(H, BLOCK_N)
    pid_m = pid // n_tiles_n
    pid_n = pid % n_tiles_n
    expert = tl.load(tile_expert_ptr + pid_m)
    slot = tl.load(slot_of_ptr + tl.maximum(expert, 0))
    if (expert < 0) | (slot < 0):  # a tile past the last run, or an expert with no slot: nothing to do
        return
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pairs = tl.load(sorted_pairs_ptr + offs_m)
    row_ok = pairs < n_pairs
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < H
    w_base = pool_ptr + slot.to(tl.int64) * slot_stride + down_offset
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < I
        a = tl.load(h_ptr + offs_m[:, None].to(tl.int64) * I + offs_k[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_base + offs_k[:, None].to(tl.int64) * H + offs_n[None, :],
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        if IEEE:
            acc = tl.dot(a, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)
    gate_w = tl.load(gate_w_ptr + pairs, mask=row_ok, other=0.0).to(tl.float32)
    acc = acc * gate_w[:, None]
    out_offs = pairs[:, None].to(tl.int64) * H + offs_n[None, :]
    tl.store(out_ptr + out_offs, acc, mask=row_ok[:, None] & col_ok[None, :])


def grouped_swiglu(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    pool: torch.Tensor,
    slot_of: torch.Tensor,
    hidden: int,
    inter: int,
    config: KernelConfig | None = None,
    upcast: bool | None = None,
    ieee_fp32: bool = True,
) -> torch.Tensor:
    """y[T, H] = sum_k topk_weights[t, k] * expert_{topk_ids[t, k]}(x[t]), weights from pool[slot_of[e]].

    x [T, H] in the pool's dtype (fp32, fp16 or bf16); topk_ids [T, K] expert ids within the layer;
    topk_weights [T, K]; pool [n_slots, 3*H*I] packed experts; slot_of [E] int32, -1 = not resident
    (such an expert contributes zero: the executor must load it first). Returns x's dtype.
    `upcast` (default: on under the interpreter) casts operands to fp32 before each dot.
    """
    if x.dim() != 2 or x.shape[1] != hidden:
        raise ValueError(f"x must be [tokens, {hidden}], got {tuple(x.shape)}")
    if pool.dim() != 2 or pool.shape[1] < 3 * hidden * inter:
        raise ValueError(f"pool must be [slots, >= {3 * hidden * inter}], got {tuple(pool.shape)}")
    if x.dtype != pool.dtype:
        raise ValueError(f"x is {x.dtype} but the pool holds {pool.dtype}")
    if not pool.is_contiguous() or not slot_of.is_contiguous():
        raise ValueError("pool and slot_of must be contiguous")
    config = config or (CPU_TEST_CONFIG if interpreter_active() else default_config(
        topk_ids.numel() / max(1, min(slot_of.numel(), topk_ids.numel())), device_smem_limit(x.device),
        pool.element_size()))
    if upcast is None:
        upcast = interpreter_active() or x.dtype == torch.float32
    ieee = bool(ieee_fp32 and (upcast or x.dtype == torch.float32))
    x = x.contiguous()
    n_tokens, top_k = topk_ids.shape
    routing = align_routing(topk_ids, slot_of.numel(), config.block_m)
    h = torch.empty((routing.n_tiles * config.block_m, inter), dtype=x.dtype, device=x.device)
    pair_out = torch.zeros((routing.n_pairs, hidden), dtype=torch.float32, device=x.device)
    gate_w = topk_weights.reshape(-1).to(torch.float32).contiguous()
    slot_of = slot_of.to(torch.int32)
    n = hidden * inter
    grid_up = (routing.n_tiles * triton.cdiv(inter, config.block_n),)
    _gate_up_kernel[grid_up](
        x, pool, slot_of, routing.sorted_pairs, routing.tile_expert, h,
        hidden, inter, pool.stride(0), n, x.stride(0), routing.n_pairs,
        TOP_K=top_k, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        UPCAST=bool(upcast), IEEE=ieee, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    grid_down = (routing.n_tiles * triton.cdiv(hidden, config.block_n),)
    _down_kernel[grid_down](
        h, pool, slot_of, routing.sorted_pairs, routing.tile_expert, gate_w, pair_out,
        hidden, inter, pool.stride(0), 2 * n, routing.n_pairs,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        UPCAST=bool(upcast), IEEE=ieee, num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return pair_out.view(n_tokens, top_k, hidden).sum(dim=1).to(x.dtype)
