"""A minimal MoE decoder in plain PyTorch, with random weights at OLMoE-like proportions.

Per layer: RMSNorm, multi-head causal self-attention with a KV cache (q/k/v/o projections), a
residual, RMSNorm, a softmax router with top-k (OLMoE keeps the raw softmax weights), the routed
SwiGLU experts and a residual. Embedding and LM head are small (`vocab`); decoding is greedy, so
the routing a run produces depends on the model's own activations, as in a real decoder.
Expert weights are NOT held here: moesim/harness/offload.py fetches them per (layer, expert).
The harness's run (model.py, offload.py, run.py) imports no moesim planner, cache core or policy;
only moesim/harness/predict.py, the moesim side of the comparison, runs the simulator.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

OLMOE_MINI = dict(n_layers=4, n_experts=64, top_k=8, hidden=768, inter=384, n_heads=6)
"""OLMoE-1B-7B's routing (64 experts, top-8) and hidden:inter ratio (2048:1024) at CPU-sized widths."""


@dataclass(frozen=True)
class HarnessModel:
    n_layers: int = 4
    n_experts: int = 64
    top_k: int = 8
    hidden: int = 768
    inter: int = 384
    n_heads: int = 6
    vocab: int = 512
    router_skew: float = 1.0  # std of a fixed per-expert router bias: popular and rare experts, as trained MoEs have
    dtype: str = "fp32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of n_heads {self.n_heads}")
        if not 0 < self.top_k <= self.n_experts:
            raise ValueError(f"top_k {self.top_k} must be in 1..n_experts {self.n_experts}")
        if self.dtype not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"dtype must be fp32, fp16 or bf16, got {self.dtype!r}")

    @classmethod
    def olmoe_mini(cls, **kwargs) -> "HarnessModel":
        return cls(**{**OLMOE_MINI, **kwargs})

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "fp32" else 2

    @property
    def torch_dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.dtype]

    @property
    def expert_elems(self) -> int:
        return 3 * self.hidden * self.inter

    @property
    def expert_bytes(self) -> int:
        return self.expert_elems * self.itemsize

    @property
    def dense_bytes_per_layer(self) -> int:
        """Attention projections and router, the weights a layer reads besides its experts."""
        return (4 * self.hidden * self.hidden + self.hidden * self.n_experts) * self.itemsize

    def to_dict(self) -> dict:
        return asdict(self)


def expert_weights(model: HarnessModel, layer: int, expert: int) -> np.ndarray:
    """Packed (W_gate [H, I] | W_up [H, I] | W_down [I, H]) of one expert, float32, seeded per (layer, expert)."""
    rng = np.random.default_rng([model.seed, 7, layer, expert])
    out = rng.standard_normal(model.expert_elems, dtype=np.float32)
    n = model.hidden * model.inter
    out[: 2 * n] *= np.float32(1.0 / math.sqrt(model.hidden))
    out[2 * n:] *= np.float32(1.0 / math.sqrt(model.inter))
    return out


class DenseWeights:
    """Everything but the experts, on `device`."""

    def __init__(self, model: HarnessModel, device: torch.device) -> None:
        rng = np.random.default_rng([model.seed, 3])
        h, dt = model.hidden, model.torch_dtype

        def mat(rows: int, cols: int, scale: float) -> torch.Tensor:
            return torch.from_numpy(rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale)).to(
                device, dt)

        self.embed = mat(model.vocab, h, 1.0)
        self.head = mat(h, model.vocab, 1.0 / math.sqrt(h))
        self.layers = []
        for _ in range(model.n_layers):
            bias = rng.standard_normal(model.n_experts).astype(np.float32) * np.float32(model.router_skew)
            self.layers.append({
                "wqkv": mat(h, 3 * h, 1.0 / math.sqrt(h)),
                "wo": mat(h, h, 1.0 / math.sqrt(h)),
                "router": mat(h, model.n_experts, 1.0 / math.sqrt(h)),
                "router_bias": torch.from_numpy(bias).to(device, dt),
            })


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class KVCache:
    """Per-layer keys and values of one sequence, grown by concatenation (short contexts only)."""

    def __init__(self, n_layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=1)
            v = torch.cat([self.v[layer], v], dim=1)
        self.k[layer], self.v[layer] = k, v
        return k, v


def attention_and_router(model: HarnessModel, w: dict, x: torch.Tensor, layer: int,
                         cache: KVCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, H] -> (residual stream after attention, normed MoE input, router logits [T, E])."""
    t, h = x.shape
    heads, hd = model.n_heads, h // model.n_heads
    qkv = rms_norm(x) @ w["wqkv"]
    q, k, v = (z.view(t, heads, hd).transpose(0, 1) for z in qkv.split(h, dim=1))
    k_all, v_all = cache.extend(layer, k, v)
    causal = t > 1
    if causal and k_all.shape[1] != t:  # a prefill after earlier tokens: mask by absolute position
        n = k_all.shape[1]
        mask = torch.ones(t, n, dtype=torch.bool, device=x.device).tril(n - t)
        a = torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)
    else:
        a = torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all, is_causal=causal)
    x = x + a.transpose(0, 1).reshape(t, h) @ w["wo"]
    m = rms_norm(x)
    return x, m, m @ w["router"] + w["router_bias"]
