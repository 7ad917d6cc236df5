"""The model spec: shapes of an MoE model and the bytes and FLOPs that follow from them.

Catalog entries live in moesim/traces/models/*.yaml (loaded by moesim.traces.catalog). Bytes are
computed from the shapes, never typed in: a SwiGLU expert has 3 * hidden * moe_intermediate
parameters; quantized dtypes add their scale overhead (fp8 with 128x128 fp32 block scales,
int4 with one fp16 scale per group of 128).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DTYPES = ("bf16", "fp16", "fp8", "int4")


def weight_bytes(rows: int, cols: int, dtype: str) -> int:
    """Bytes of a rows x cols weight matrix stored in `dtype`, scales included."""
    n = rows * cols
    if dtype in ("bf16", "fp16"):
        return 2 * n
    if dtype == "fp8":
        return n + 4 * math.ceil(rows / 128) * math.ceil(cols / 128)
    if dtype == "int4":
        return n // 2 + 2 * math.ceil(n / 128)
    raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")


@dataclass(frozen=True)
class ModelSpec:
    """One MoE model. Layers are numbered 0..n_layers-1; `moe_layers` lists the MoE ones.

    `dense_params_per_layer` counts the non-expert weights of a layer (attention, norms, a dense
    FFN on non-MoE layers, the router, shared experts); `attention_flops_per_token` is the
    per-token attention cost at a nominal context (2 * attention params; context-dependent terms
    are left to the engine's context-length input).
    """

    name: str
    family: str
    n_layers: int
    moe_layers: tuple[int, ...]
    n_routed_experts: int
    top_k: int
    hidden_size: int
    moe_intermediate_size: int
    n_shared_experts: int = 0
    shared_intermediate_size: int = 0
    dense_params_per_layer: int = 0
    vocab_size: int = 0
    default_dtype: str = "bf16"
    source: str = ""

    @property
    def n_moe_layers(self) -> int:
        return len(self.moe_layers)

    @property
    def routed_experts_total(self) -> int:
        return self.n_moe_layers * self.n_routed_experts

    def expert_params(self) -> int:
        return 3 * self.hidden_size * self.moe_intermediate_size

    def expert_bytes(self, dtype: str | None = None) -> int:
        """Bytes of one routed expert: gate and up (hidden x inter) plus down (inter x hidden)."""
        d = dtype or self.default_dtype
        h, i = self.hidden_size, self.moe_intermediate_size
        return 2 * weight_bytes(i, h, d) + weight_bytes(h, i, d)

    def routed_bytes(self, dtype: str | None = None) -> int:
        return self.expert_bytes(dtype) * self.routed_experts_total

    def expert_flops_per_token(self) -> int:
        """Multiply-adds count twice: 2 * params for the three projections."""
        return 2 * self.expert_params()

    def dense_bytes_per_layer(self, dtype: str | None = None) -> int:
        d = dtype or self.default_dtype
        per_param = {"bf16": 2, "fp16": 2, "fp8": 1, "int4": 0.5}[d]
        return int(self.dense_params_per_layer * per_param)

    def dense_flops_per_token(self) -> int:
        return 2 * self.dense_params_per_layer
