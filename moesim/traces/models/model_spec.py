"""The model spec: shapes of an MoE model and the bytes and FLOPs that follow from them.

Catalog entries live in moesim/traces/models/*.yaml (loaded by moesim.traces.models.catalog). Bytes are
computed from the shapes, never typed in: a SwiGLU expert has 3 * hidden * moe_intermediate
parameters (a plain two-matrix MLP expert, as in Switch Transformers, has 2 *); quantized dtypes
add their scale overhead (fp8 with 128x128 fp32 block scales, int4 with one fp16 scale per group
of 128, mxfp4 with one 8-bit scale per block of 32). Bias vectors stay 16-bit in every dtype
(32-bit in fp32), as the quantized checkpoints ship them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DTYPES = ("bf16", "fp16", "fp32", "fp8", "int4", "mxfp4")

# Matrices per expert: SwiGLU has gate, up and down; a plain MLP has up and down.
FFN_MATRICES = {"swiglu": 3, "mlp": 2}

# Average bytes per parameter, scales included, for weights whose exact matrix shapes are not kept
# (dense, non-expert weights). fp8's 128x128 block scales add 4 / 16384 bytes: below rounding.
BYTES_PER_PARAM = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "int4": 0.5 + 2 / 128, "mxfp4": 0.5 + 1 / 32}


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")


def weight_bytes(rows: int, cols: int, dtype: str) -> int:
    """Bytes of a rows x cols weight matrix stored in `dtype`, scales included."""
    n = rows * cols
    if dtype in ("bf16", "fp16"):
        return 2 * n
    if dtype == "fp32":
        return 4 * n
    if dtype == "fp8":
        return n + 4 * math.ceil(rows / 128) * math.ceil(cols / 128)
    if dtype == "int4":
        return n // 2 + 2 * math.ceil(n / 128)
    if dtype == "mxfp4":
        return n // 2 + math.ceil(n / 32)
    raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")


def vector_bytes(n: int, dtype: str) -> int:
    """Bytes of `n` bias or norm values: 32-bit in fp32, 16-bit otherwise."""
    return 4 * n if dtype == "fp32" else 2 * n


@dataclass(frozen=True)
class ModelSpec:
    """One MoE model. Layers are numbered 0..n_layers-1; `moe_layers` lists the MoE ones.

    `dense_params_by_layer[l]` counts the non-expert weights of layer l: attention, norms, and
    either a dense FFN (non-MoE layers) or the router and shared experts (MoE layers). Embeddings,
    the LM head and the final norm are in `embedding_params`, outside every layer.
    `dense_params_per_layer` is the figure for a MoE layer (the first one): the layers a trace
    replays. Models whose layers differ (DeepSeek's dense first layers, Switch's decoder layers with
    cross-attention) need the per-layer methods; a spec built without `dense_params_by_layer`
    treats every layer as `dense_params_per_layer`.

    `default_dtype` is the dtype experts ship in; `dense_dtype` (default: the same) the one the
    other weights ship in (gpt-oss: mxfp4 experts, bf16 attention).
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
    shared_intermediate_size: int = 0  # of each shared expert
    dense_params_per_layer: int = 0
    vocab_size: int = 0
    default_dtype: str = "bf16"
    source: str = ""
    ffn_type: str = "swiglu"  # "swiglu" (gate, up, down) or "mlp" (up, down)
    expert_bias: bool = False  # experts carry bias vectors (gpt-oss)
    dense_dtype: str = ""  # "" = default_dtype
    dense_params_by_layer: tuple[int, ...] = ()
    embedding_params: int = 0  # token embeddings + LM head (if untied) + final norms
    description: str = ""
    # attention shapes (the compute model's operators; 0 where a spec was built without them)
    attention_kind: str = "gqa"  # "gqa" (MHA/GQA/MQA) or "mla" (DeepSeek latent attention)
    n_heads: int = 0
    n_kv_heads: int = 0
    head_dim: int = 0
    q_lora_rank: int = 0  # mla: 0 = q projected directly
    kv_lora_rank: int = 0  # mla: width of the cached latent
    qk_rope_head_dim: int = 0  # mla: the shared rope key, cached beside the latent
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int = 0  # tokens a windowed layer attends to (0: none)
    sliding_layers: tuple[int, ...] = ()  # layers that use the window
    global_kv_heads: int = 0  # full-attention layers' kv heads and head width where they differ (gemma-4)
    global_head_dim: int = 0
    dense_intermediate_size: int = 0  # FFN of the layers outside moe_layers
    tie_word_embeddings: bool = False

    @property
    def n_moe_layers(self) -> int:
        return len(self.moe_layers)

    @property
    def routed_experts_total(self) -> int:
        return self.n_moe_layers * self.n_routed_experts

    def is_moe_layer(self, layer: int) -> bool:
        return layer in self.moe_layers

    def kv_heads_of_layer(self, layer: int) -> int:
        """KV heads of `layer` (full-attention layers may differ from windowed ones)."""
        if self.global_kv_heads and layer not in self.sliding_layers:
            return self.global_kv_heads
        return self.n_kv_heads

    def head_dim_of_layer(self, layer: int) -> int:
        if self.global_head_dim and layer not in self.sliding_layers:
            return self.global_head_dim
        return self.head_dim

    def window_of_layer(self, layer: int) -> int:
        """Positions a query of `layer` attends to at most (0: the whole context)."""
        return self.sliding_window if layer in self.sliding_layers else 0

    # --- one routed expert -------------------------------------------------------------------

    def _expert_matrices(self) -> int:
        return FFN_MATRICES[self.ffn_type]

    def expert_bias_params(self) -> int:
        """Bias values of one expert: one per output row of each matrix (0 without biases)."""
        if not self.expert_bias:
            return 0
        return (self._expert_matrices() - 1) * self.moe_intermediate_size + self.hidden_size

    def expert_params(self) -> int:
        return self._expert_matrices() * self.hidden_size * self.moe_intermediate_size + self.expert_bias_params()

    def expert_weight_bytes(self, dtype: str | None = None) -> int:
        """Bytes of one expert's weight matrices, without biases.

        Each matrix is stored as (out, in): gate and up are (inter x hidden), down (hidden x inter).
        """
        d = dtype or self.default_dtype
        _check_dtype(d)
        h, i = self.hidden_size, self.moe_intermediate_size
        return (self._expert_matrices() - 1) * weight_bytes(i, h, d) + weight_bytes(h, i, d)

    def expert_bytes(self, dtype: str | None = None) -> int:
        """Bytes of one routed expert: its matrices plus, where it has them, its biases."""
        d = dtype or self.default_dtype
        return self.expert_weight_bytes(d) + vector_bytes(self.expert_bias_params(), d)

    def routed_bytes(self, dtype: str | None = None) -> int:
        return self.expert_bytes(dtype) * self.routed_experts_total

    def expert_flops_per_token(self) -> int:
        """Multiply-adds count twice (2 per matrix weight); a bias add counts once."""
        matrix_params = self._expert_matrices() * self.hidden_size * self.moe_intermediate_size
        return 2 * matrix_params + self.expert_bias_params()

    # --- dense (non-expert) weights ----------------------------------------------------------

    def _dense_dtype(self, dtype: str | None) -> str:
        d = dtype or self.dense_dtype or self.default_dtype
        _check_dtype(d)
        return d

    def dense_params_of_layer(self, layer: int) -> int:
        """Non-expert parameters of `layer` (0-based model layer)."""
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range 0..{self.n_layers - 1} for {self.name}")
        if self.dense_params_by_layer:
            return self.dense_params_by_layer[layer]
        return self.dense_params_per_layer

    def dense_bytes_of_layer(self, layer: int, dtype: str | None = None) -> int:
        """Bytes of `layer`'s non-expert weights (average bytes per parameter, scales included)."""
        return int(self.dense_params_of_layer(layer) * BYTES_PER_PARAM[self._dense_dtype(dtype)])

    def dense_bytes_per_layer(self, dtype: str | None = None) -> int:
        """Bytes of a MoE layer's non-expert weights (see the class docstring)."""
        return int(self.dense_params_per_layer * BYTES_PER_PARAM[self._dense_dtype(dtype)])

    def dense_flops_per_token(self) -> int:
        return 2 * self.dense_params_per_layer

    def dense_flops_per_token_of_layer(self, layer: int) -> int:
        """2 FLOPs per non-expert weight (attention projections, router, shared experts, dense FFN).

        The attention score and value products grow with context length; the engine adds them.
        """
        return 2 * self.dense_params_of_layer(layer)

    def routed_flops_per_token_of_layer(self, layer: int) -> int:
        """FLOPs one token spends in its top_k routed experts at `layer` (0 on a dense layer)."""
        return self.top_k * self.expert_flops_per_token() if self.is_moe_layer(layer) else 0

    def flops_per_token_of_layer(self, layer: int) -> int:
        return self.dense_flops_per_token_of_layer(layer) + self.routed_flops_per_token_of_layer(layer)

    # --- whole model -------------------------------------------------------------------------

    def total_params(self) -> int:
        dense = sum(self.dense_params_of_layer(layer) for layer in range(self.n_layers))
        return dense + self.n_moe_layers * self.n_routed_experts * self.expert_params() + self.embedding_params

    def active_params_per_token(self) -> int:
        """Parameters one token reads: every dense weight, top_k experts per MoE layer, embeddings."""
        dense = sum(self.dense_params_of_layer(layer) for layer in range(self.n_layers))
        return dense + self.n_moe_layers * self.top_k * self.expert_params() + self.embedding_params
