"""Operator shapes per model layer, from a ModelSpec (moesim/traces/models/model_spec.py) and a trace.

For every model layer: the weights each operator reads (attention q/k/v/o, router, shared experts,
dense FFN, norms), the KV-cache bytes one context position stores, the attention FLOPs per (query,
context position) pair and the window; per trace layer the routed expert's parameters and storage
format. A trace's own sizes win (DESIGN.md): expert bytes are the trace's object bytes, and where
the trace gives dense bytes per layer the dense operators' bytes are scaled so they sum to it (a
GGUF file's mixed quantisation, say), and the embedding and LM head bytes by the traced layers'
mean ratio (a file is quantised as a whole). Trace layers map to model layers by `meta.layer_ids`, else
one to one when the counts agree, else onto the model's MoE layers in order; model layers no trace
cell stands for (DeepSeek's dense first layers) are charged to the next traced cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.sim.compute import formats
from moesim.traces.models.model_spec import BYTES_PER_PARAM, FFN_MATRICES, ModelSpec
from moesim.traces.format.trace import Trace

KV_CACHE_BYTES = 2.0  # bf16/fp16 KV cache entries (llama.cpp's default f16 cache, PyTorch's bf16)


@dataclass(frozen=True)
class OperatorShapes:
    """Per model layer arrays (index = model layer) and the trace-layer mapping."""

    hidden: int
    n_model_layers: int
    trace_to_model: np.ndarray  # model layer of each trace layer
    attn_params: np.ndarray  # q, k, v, o projection weights
    attn_bytes: np.ndarray
    kv_bytes_per_position: np.ndarray  # K and V (or MLA latent + rope key) one position stores
    attn_flops_per_pair: np.ndarray  # QK^T and PV FLOPs per (query token, context position)
    window: np.ndarray  # 0: full attention
    router_params: np.ndarray
    router_bytes: np.ndarray
    shared_params: np.ndarray
    shared_bytes: np.ndarray
    ffn_params: np.ndarray  # dense FFN of non-MoE layers
    ffn_bytes: np.ndarray
    other_bytes: np.ndarray  # norms, biases, sinks: read, no matmul
    expert_params: np.ndarray  # per trace layer: params of one routed expert
    expert_flops_per_token: np.ndarray  # per trace layer
    expert_format: tuple[str, ...]  # per trace layer
    vocab: int
    embedding_bytes_per_token: float  # one embedding row gathered
    lm_head_params: int
    lm_head_bytes: float
    dense_dtype: str
    source: str


def trace_layer_map(trace: Trace, spec: ModelSpec) -> np.ndarray:
    n = trace.meta.n_layers
    if trace.meta.layer_ids is not None and len(trace.meta.layer_ids) == n and \
            all(0 <= i < spec.n_layers for i in trace.meta.layer_ids):
        return np.asarray(trace.meta.layer_ids, dtype=np.int64)
    if n == spec.n_layers:
        return np.arange(n, dtype=np.int64)
    if n == spec.n_moe_layers:
        return np.asarray(spec.moe_layers, dtype=np.int64)
    return np.minimum(np.arange(n, dtype=np.int64), spec.n_layers - 1)


def attention_shape(spec: ModelSpec, layer: int) -> tuple[int, float, float]:
    """(projection params, KV bytes per position, attention FLOPs per query-position pair) of `layer`."""
    h = spec.hidden_size
    if spec.attention_kind == "mla":
        heads, rope, latent = spec.n_heads, spec.qk_rope_head_dim, spec.kv_lora_rank
        nope, v = spec.qk_nope_head_dim, spec.v_head_dim
        q_out = heads * (nope + rope)
        q = h * q_out if not spec.q_lora_rank else h * spec.q_lora_rank + spec.q_lora_rank * q_out
        params = q + h * (latent + rope) + latent * heads * (nope + v) + heads * v * h
        # absorbed MLA (DeepSeek's inference path): scores over latent+rope, values over the latent
        return params, KV_CACHE_BYTES * (latent + rope), 2.0 * heads * (2 * latent + rope)
    heads = spec.n_heads
    kv_heads = spec.kv_heads_of_layer(layer)
    dim = spec.head_dim_of_layer(layer)
    if not heads or not dim:
        return 0, 0.0, 0.0
    q, kv = heads * dim, kv_heads * dim
    params = 2 * h * q + 2 * h * kv
    return params, KV_CACHE_BYTES * 2 * kv, 2.0 * heads * dim * 2  # QK^T and PV: 2 FLOPs x dim each


def operator_shapes(trace: Trace, spec: ModelSpec, expert_formats: tuple[str, ...] | None = None) -> OperatorShapes:
    """The shapes of every operator (module docstring). `expert_formats`: per trace layer, from a GGUF file."""
    n_model = spec.n_layers
    h = spec.hidden_size
    dense_dtype = spec.dense_dtype or spec.default_dtype
    bpp = BYTES_PER_PARAM.get(dense_dtype, 2.0)
    matrices = FFN_MATRICES[spec.ffn_type]
    moe = np.zeros(n_model, dtype=bool)
    moe[list(spec.moe_layers)] = True
    attn_p, kv_b, pair_f = (np.zeros(n_model) for _ in range(3))
    for layer in range(n_model):
        attn_p[layer], kv_b[layer], pair_f[layer] = attention_shape(spec, layer)
    window = np.asarray([spec.window_of_layer(layer) for layer in range(n_model)], dtype=np.float64)
    router_p = np.where(moe, spec.n_routed_experts * h, 0).astype(np.float64)
    shared_p = np.where(moe, spec.n_shared_experts * matrices * h * spec.shared_intermediate_size, 0).astype(np.float64)
    ffn_p = np.where(moe, 0, matrices * h * spec.dense_intermediate_size).astype(np.float64)
    dense_p = np.asarray([spec.dense_params_of_layer(layer) for layer in range(n_model)], dtype=np.float64)
    other_p = np.maximum(dense_p - attn_p - router_p - shared_p - ffn_p, 0.0)
    to_model = trace_layer_map(trace, spec)
    scale = np.ones(n_model)
    meta_dense = trace.meta.dense_bytes
    if meta_dense and len(meta_dense) == trace.meta.n_layers:
        for t, m in enumerate(to_model.tolist()):
            if dense_p[m] > 0 and meta_dense[t] > 0:
                scale[m] = float(meta_dense[t]) / (dense_p[m] * bpp)
    # embeddings and LM head: stored like the rest of the file (the traced layers' mean ratio)
    head_scale = float(np.mean(scale[to_model])) if to_model.size else 1.0
    expert_params = np.full(trace.meta.n_layers, float(spec.expert_params()))
    if expert_formats is None:
        expert_formats = tuple(_format_from_bytes(int(b), spec) for b in trace.meta.object_bytes)
    tied = spec.tie_word_embeddings
    return OperatorShapes(
        hidden=h,
        n_model_layers=n_model,
        trace_to_model=to_model,
        attn_params=attn_p,
        attn_bytes=attn_p * bpp * scale,
        kv_bytes_per_position=kv_b,
        attn_flops_per_pair=pair_f,
        window=window,
        router_params=router_p,
        router_bytes=router_p * bpp * scale,
        shared_params=shared_p,
        shared_bytes=shared_p * bpp * scale,
        ffn_params=ffn_p,
        ffn_bytes=ffn_p * bpp * scale,
        other_bytes=other_p * bpp * scale,
        expert_params=expert_params,
        expert_flops_per_token=np.full(trace.meta.n_layers, float(spec.expert_flops_per_token())),
        expert_format=tuple(expert_formats),
        vocab=spec.vocab_size,
        embedding_bytes_per_token=h * bpp * head_scale,
        lm_head_params=spec.vocab_size * h,
        lm_head_bytes=spec.vocab_size * h * bpp * head_scale,
        dense_dtype=dense_dtype if formats.known(dense_dtype) else "bf16",
        source=f"model spec {spec.name}" + (" (tied embeddings)" if tied else ""),
    )


def _format_from_bytes(object_bytes: int, spec: ModelSpec) -> str:
    """The spec's expert dtype when the trace's bytes agree with it, else the format nearest their bits per weight."""
    shipped = spec.default_dtype
    if object_bytes <= 0:
        return shipped
    if abs(object_bytes - spec.expert_bytes()) <= 0.01 * object_bytes:
        return shipped
    return formats.nearest_format(8.0 * object_bytes / max(spec.expert_params(), 1))
