"""The processors a profile offers (GPU, CPU, NPU) and how many kernels a framework launches per operator.

`processors_of(profile)` is the one place the compute model reads a profile's processors from:
`profile.processors` where the profile declares them (the hardware graph), otherwise a "gpu" built
from `profile.compute` (peak_flops, memory_bandwidth, launch_overhead) and a "cpu" from
compute.cpu_flops / cpu_memory_bandwidth when both are set.

Kernel counts per operator (FRAMEWORKS) say how many launches (eager PyTorch, the executor's Triton
kernels), graph nodes (CUDA graphs: recorded once, replayed with ~no per-kernel host cost) or
thread synchronisations (llama.cpp/ggml: one barrier per graph node on the CPU backend) an operator
costs; the overhead of one is the processor's `kernel_overhead`. Counts are read off each
framework's layer implementation (HF transformers' Qwen3-MoE/Mixtral modules for "eager"; ggml's
llm_build_* graphs for "llama.cpp": norm, q, k, v, rope x2, kq, softmax, kqv, o, add ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.errors import UserError


try:  # the hardware graph's processor (moesim/hw_profiles/profile.py), where that has landed
    from moesim.hw_profiles.profile import Processor
except ImportError:  # until then a local stand-in with the same fields

    @dataclass(frozen=True)
    class Processor:  # type: ignore[no-redef]
        """Stand-in with the fields of moesim.hw_profiles.profile.Processor (the hardware graph's)."""

        name: str
        kind: str  # "gpu" | "cpu" | "npu"
        memory: str  # the memory it reads weights from ("vram", "dram", ...)
        peak_flops: dict[str, float] = field(default_factory=dict)  # FLOP/s by dtype
        memory_bandwidth: float = 0.0  # achieved bytes/s reading `memory`
        kernel_overhead: float = 0.0  # seconds per kernel/op under the profile's framework
        cores: int | None = None
        active_watts: float | None = None
        idle_watts: float | None = None
        batched_flops: float | None = None  # matrix-matrix FLOP/s (tokens > 1); None: peak_flops


# Kernels (launches, graph nodes, thread barriers) per operator and framework. "experts_grouped" is
# per cell (one grouped kernel call runs all a cell's experts on a processor), "expert" per expert
# run one kernel chain at a time.
FRAMEWORKS: dict[str, dict[str, int]] = {
    # today's moesim: one launch per dense part and one per grouped expert call
    "fused": {"attention": 1, "router": 0, "shared": 0, "dense_ffn": 0, "expert": 1, "experts_grouped": 1,
              "embedding": 0, "lm_head": 0},
    # eager PyTorch (HF modules): rmsnorm 1, q/k/v 3, rope 2, sdpa 1, o 1, residual add 1; router linear,
    # softmax, topk, renormalise; SwiGLU gate, up, act*mul, down + weighted add; moesim's executor
    # groups a cell's experts into its Triton kernel: align 1, two GEMM launches, top-k sum 1
    "eager": {"attention": 9, "router": 4, "shared": 5, "dense_ffn": 5, "expert": 5, "experts_grouped": 4,
              "embedding": 1, "lm_head": 2},
    # CUDA graphs: the same kernels, replayed as one graph (host launch cost ~0 per kernel)
    "cuda-graphs": {"attention": 0, "router": 0, "shared": 0, "dense_ffn": 0, "expert": 0, "experts_grouped": 0,
                    "embedding": 0, "lm_head": 0},
    # llama.cpp / ggml graph nodes (one thread barrier each on the CPU backend): attn_norm, mul, q, k,
    # v, q/k norms, rope x2, permutes, kq, soft_max, kqv, o, add; gate_inp, soft_max, argsort/top-k,
    # get_rows, div; mul_mat_id x3, glu, mul, views + adds for the weighted sum
    "llama.cpp": {"attention": 16, "router": 6, "shared": 5, "dense_ffn": 5, "expert": 5, "experts_grouped": 9,
                  "embedding": 1, "lm_head": 3},
}
DEFAULT_FRAMEWORK = "fused"
# other spellings profiles use (moesim/hw_profiles/data/*.yaml `framework:`)
FRAMEWORK_ALIASES = {"pytorch-eager": "eager", "pytorch": "eager", "transformers": "eager",
                     "pytorch-cuda-graphs": "cuda-graphs", "cudagraphs": "cuda-graphs", "vllm": "cuda-graphs",
                     "sglang": "cuda-graphs", "llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "ggml": "llama.cpp"}
LAUNCH_FACTOR = {"cuda-graphs": 0.0}  # frameworks whose kernels cost no per-kernel host time


def framework_of(profile: Any, override: str | None = None) -> str:
    """The framework whose kernel counts apply: `override`, else profile.framework, else "fused"."""
    name = override or getattr(profile, "framework", None) or DEFAULT_FRAMEWORK
    name = FRAMEWORK_ALIASES.get(name.lower(), name)
    if name not in FRAMEWORKS:
        raise UserError(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}", "framework")
    return name


def kernels(framework: str, operator: str) -> int:
    return FRAMEWORKS[framework][operator]


def processors_of(profile: Any) -> dict[str, Processor]:
    """The profile's processors by name ("gpu", "cpu", ...); see the module docstring."""
    declared = getattr(profile, "processors", None)
    if declared:
        return dict(declared)
    compute = profile.compute
    gpu_memory = "vram"
    out = {"gpu": Processor(name="gpu", kind="gpu", memory=gpu_memory,
                            peak_flops={"bf16": float(compute.peak_flops), "fp16": float(compute.peak_flops)},
                            memory_bandwidth=float(compute.memory_bandwidth),
                            kernel_overhead=float(compute.launch_overhead),
                            active_watts=getattr(profile.power, "active_watts", None),
                            idle_watts=getattr(profile.power, "idle_watts", None))}
    if compute.cpu_flops and compute.cpu_memory_bandwidth:
        out["cpu"] = Processor(name="cpu", kind="cpu", memory="dram",
                               peak_flops={"fp32": float(compute.cpu_flops), "bf16": float(compute.cpu_flops)},
                               memory_bandwidth=float(compute.cpu_memory_bandwidth), kernel_overhead=0.0)
    return out


def device_processor(profile: Any) -> Processor:
    """The processor that reads the cache tier (the GPU, or the NPU/SoC of a unified-memory profile)."""
    procs = processors_of(profile)
    chosen = getattr(profile, "expert_processor", None)  # the hardware graph names it
    if chosen in procs:
        return procs[chosen]
    for name in ("gpu", "npu"):
        if name in procs:
            return procs[name]
    for proc in procs.values():
        if proc.kind != "cpu":
            return proc
    return next(iter(procs.values()))


def cpu_processor(profile: Any, where: str) -> Processor:
    """The host CPU; a one-line UserError naming `where` when the profile has none."""
    procs = processors_of(profile)
    for proc in procs.values():
        if proc.kind == "cpu":
            return proc
    raise UserError("running experts on the CPU needs a cpu processor (compute.cpu_flops and "
                    "compute.cpu_memory_bandwidth, or processors.cpu)", where)


def matrix_key(proc: Processor, dtype: str) -> str:
    """The peak_flops key a matmul in `dtype` runs at: that dtype's, else bf16, fp16, fp32, else the best."""
    for key in (dtype, "bf16", "fp16", "fp32"):
        if proc.peak_flops.get(key):
            return key
    if not proc.peak_flops:
        raise UserError(f"processor {proc.name} has no peak_flops", "profile")
    return max(proc.peak_flops, key=lambda k: proc.peak_flops[k])


def peak(proc: Processor, dtype: str) -> float:
    """FLOP/s of `proc` for matrix work in `dtype` (see matrix_key)."""
    return float(proc.peak_flops[matrix_key(proc, dtype)])


def matrix_rate(proc: Processor, dtype: str, tokens: np.ndarray | float) -> np.ndarray:
    """FLOP/s of a matmul over `tokens` tokens per weight read: the processor's `batched_flops` where
    tokens > 1 and it states one, else peak(proc, dtype).

    One token per weight read is matrix-vector work (decode at batch 1: a GEMV, bandwidth-bound); more is
    matrix-matrix work that real kernels run at another rate (llama.cpp's batched mul_mat and
    mul_mat_id on a CPU, tensor-core GEMMs on a GPU), so a profile may state that rate on its own."""
    t = np.asarray(tokens, dtype=np.float64)
    vector = peak(proc, dtype)
    batched = proc.batched_flops
    if not batched:
        return np.full(t.shape, vector)
    return np.where(t > 1, float(batched), vector)


def dequant_rate(proc: Processor, dtype: str) -> float | None:
    """FLOP/s of the elementwise dequantisation beside a matmul in `dtype`: the "fp32" figure where the
    matmul runs at another (tensor-core, AMX) rate. None where the matmul itself runs at the fp32 rate
    (llama.cpp's integer dot products, effective fitted rates) or there is no fp32 figure: unpacking
    is then part of that rate and is not charged twice."""
    value = proc.peak_flops.get("fp32")
    if not value or matrix_key(proc, dtype) == "fp32":
        return None
    return float(value)
