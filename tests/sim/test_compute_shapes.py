"""Operator shapes (moesim/sim/compute/shapes.py) from published configs and hand arithmetic.

MLA figures are DeepSeek's published config.json values (catalog files moesim/traces/models/
deepseek-v3.yaml and deepseek-v2-lite.yaml): V3 hidden 7168, 128 heads, q_lora_rank 1536,
kv_lora_rank 512, qk_nope 128, qk_rope 64, v_head 128; V2-Lite the same heads' dims with 16 heads,
hidden 2048 and no q compression. The small GQA model is tests/sim/test_compute_operators.py's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from moesim.sim.compute.shapes import attention_shape, operator_shapes, trace_layer_map
from moesim.traces.models.catalog import load_model, model_from_mapping
from moesim.traces.format.trace_meta import DECODE, TraceMeta
from moesim.traces.format.build import build_trace
from tests.sim.test_compute_operators import TINY, tiny_spec


def test_mla_attention_shape_of_deepseek_v3() -> None:
    """q: 7168 x 1536 + 1536 x 128 x (128 + 64) = 11,010,048 + 37,748,736 = 48,758,784
    kv down: 7168 x (512 + 64) = 4,128,768;  kv up: 512 x 128 x (128 + 128) = 16,777,216
    o: 128 x 128 x 7168 = 117,440,512;  total 187,105,280 (DeepSeek-V3's ~187M attention weights a layer)
    KV cache per position: 2 B x (512 latent + 64 rope key) = 1152 B
    FLOPs per (query, position), absorbed: 2 x 128 heads x (512 + 64 scores + 512 values) = 278,528"""
    assert attention_shape(load_model("deepseek-v3"), 5) == (187_105_280, 1152.0, 278_528.0)


def test_mla_attention_shape_without_q_compression_deepseek_v2_lite() -> None:
    """q: 2048 x 16 x (128 + 64) = 6,291,456; kv down 2048 x 576 = 1,179,648; kv up 512 x 16 x 256 =
    2,097,152; o 16 x 128 x 2048 = 4,194,304; total 13,762,560. KV 1152 B; pair FLOPs 2 x 16 x 1088 = 34,816."""
    assert attention_shape(load_model("deepseek-v2-lite"), 5) == (13_762_560, 1152.0, 34_816.0)


def test_gqa_layers_with_their_own_kv_heads_and_head_dim_gemma_4() -> None:
    """Gemma-4-26B-A4B (moesim/traces/models/gemma-4-26b-a4b.yaml): hidden 2816, 16 heads; windowed
    layers 8 kv heads of 256, full-attention layers (5, 11, ...) 2 kv heads of 512.
    layer 0: q 16 x 256 = 4096, kv 8 x 256 = 2048: 2 x 2816 x 4096 + 2 x 2816 x 2048 = 34,603,008 params;
             KV 2 B x 2 x 2048 = 8192 B per position; pair FLOPs 2 x 16 x 256 x 2 = 16,384
    layer 5: q 16 x 512 = 8192, kv 2 x 512 = 1024: 46,137,344 + 5,767,168 = 51,904,512; 4096 B; 32,768"""
    spec = load_model("gemma-4-26b-a4b")
    assert attention_shape(spec, 0) == (34_603_008, 8192.0, 16_384.0)
    assert attention_shape(spec, 5) == (51_904_512, 4096.0, 32_768.0)
    shapes = operator_shapes(_trace(30, object_bytes=10**6), spec)
    assert shapes.attn_params[[0, 5]].tolist() == [34_603_008, 51_904_512]
    assert shapes.kv_bytes_per_position[[0, 5]].tolist() == [8192.0, 4096.0]
    assert shapes.window[[0, 5]].tolist() == [1024.0, 0.0]


def test_a_model_without_attention_heads_has_no_attention_cost() -> None:
    assert attention_shape(replace(tiny_spec(), n_heads=0), 0) == (0, 0.0, 0.0)
    assert attention_shape(replace(tiny_spec(), head_dim=0), 0) == (0, 0.0, 0.0)


def _trace(n_layers: int, object_bytes: int = 12288, **meta: object):
    m = TraceMeta(n_layers=n_layers, n_experts=4, top_k=1, object_bytes=[object_bytes] * n_layers, **meta)
    return build_trace(m, [{"phase": DECODE, "tokens": [(0, 0)], "cells": [(layer, [[0]]) for layer in range(n_layers)]}])


def test_trace_layers_map_by_layer_ids_then_count_then_moe_layers_then_clamped() -> None:
    """DeepSeek-V2-Lite: 27 layers, MoE layers 1..26."""
    spec = load_model("deepseek-v2-lite")
    assert trace_layer_map(_trace(3, layer_ids=[0, 5, 26]), spec).tolist() == [0, 5, 26]
    # a layer id outside the model (27) makes the ids unusable: three trace layers, neither 27 nor 26,
    # map one to one, clamped to the last model layer
    assert trace_layer_map(_trace(3, layer_ids=[0, 27, 5]), spec).tolist() == [0, 1, 2]
    assert trace_layer_map(_trace(27), spec).tolist() == list(range(27))
    assert trace_layer_map(_trace(26), spec).tolist() == list(range(1, 27))
    assert trace_layer_map(_trace(30), spec).tolist() == list(range(27)) + [26, 26, 26]


def test_expert_format_from_the_trace_bytes() -> None:
    """One tiny expert has 6144 weights: 12288 B in bf16. Bytes within 1 % of the spec's keep its dtype;
    others take the format nearest their bits per weight: 3264 B = 4.25 bits -> mxfp4; 6528 B = 8.5 ->
    q8_0; 1 B -> the fewest bits (q2_K). No bytes at all: the spec's dtype."""
    spec = tiny_spec()

    def fmt(nbytes: int, s=spec) -> str:
        return operator_shapes(_trace(1, nbytes), s).expert_format[0]

    assert [fmt(b) for b in (12288, 12349, 3264, 6528, 1)] == ["bf16", "bf16", "mxfp4", "q8_0", "q2_K"]
    # an fp16 model: bf16 and fp16 weigh the same, so only the spec can say fp16 (12349 B: within 1 %)
    fp16 = model_from_mapping({**TINY, "default_dtype": "fp16"}, "tiny")
    assert [fmt(b, fp16) for b in (12288, 12349, 0)] == ["fp16", "fp16", "fp16"]
    # 1 % exactly: tiny with intermediate 33 has 3 x 64 x 33 = 6336 weights = 12672 B; 12800 B is
    # 128 B = 1 % of 12800 away: still the spec's dtype (fp16, not the nearest bf16)
    fp16_33 = model_from_mapping({**TINY, "default_dtype": "fp16",
                                  "experts": {**TINY["experts"], "intermediate_size": 33}}, "tiny")
    assert fmt(12800, fp16_33) == "fp16"


def test_a_trace_own_dense_bytes_scale_the_dense_operators() -> None:
    """Tiny's dense part is 21888 params a layer (attention 12288, norms 128, router 256, shared 9216),
    43776 B in bf16. A trace stating 21888 B for layer 0 and 43776 B for layer 1 halves layer 0's
    operator bytes; the embedding and LM head take the mean ratio 0.75 (12800 x 0.75 = 9600 B;
    one row 128 x 0.75 = 96 B)."""
    spec = tiny_spec()
    shapes = operator_shapes(_trace(2, dense_bytes=[21888, 43776]), spec)
    assert shapes.attn_bytes.tolist() == [12288.0, 24576.0]
    assert shapes.other_bytes.tolist() == [128.0, 256.0]
    assert shapes.router_bytes.tolist() == [256.0, 512.0]
    assert shapes.shared_bytes.tolist() == [9216.0, 18432.0]
    assert (shapes.lm_head_bytes, shapes.embedding_bytes_per_token) == (9600.0, 96.0)
    assert (shapes.lm_head_params, shapes.vocab) == (6400, 100)
    # without the trace's figures: 2 B per parameter
    plain = operator_shapes(_trace(2), spec)
    assert plain.attn_bytes.tolist() == [24576.0, 24576.0] and plain.lm_head_bytes == 12800.0
    assert plain.expert_params.tolist() == [6144.0, 6144.0]
    assert plain.expert_flops_per_token.tolist() == [12288.0, 12288.0]
    assert np.array_equal(plain.kv_bytes_per_position, [128.0, 128.0])
    assert plain.attn_flops_per_pair.tolist() == [256.0, 256.0]
    assert plain.hidden == 64 and plain.source == "model spec tiny"
    tied = model_from_mapping({**TINY, "tie_word_embeddings": True}, "tiny")
    assert operator_shapes(_trace(2), tied).source == "model spec tiny (tied embeddings)"


def test_trace_dense_bytes_of_zero_are_ignored_and_one_byte_is_taken() -> None:
    """dense_bytes [0, 1]: layer 0 keeps the spec's 2 B per parameter (0 means unknown); layer 1 holds
    1 B for its 21888 parameters: attention 24576 / 43776 B. Embedding and LM head: the mean ratio
    (1 + 1 / 43776) / 2."""
    shapes = operator_shapes(_trace(2, dense_bytes=[0, 1]), tiny_spec())
    assert shapes.attn_bytes.tolist() == pytest.approx([24576.0, 24576 / 43776], rel=1e-12)
    assert shapes.lm_head_bytes == pytest.approx(12800 * (1 + 1 / 43776) / 2, rel=1e-12)


def test_a_dense_ffn_layer_scales_with_the_trace_and_has_no_router() -> None:
    """Model layer 0 dense (FFN 3 x 64 x 96 = 18432 params), layers 1-2 MoE; the trace states layer 0
    at half the spec's bytes: dense params 12288 + 128 + 18432 = 30848 -> 61696 B at 2 B, given 30848 B."""
    spec = model_from_mapping({**TINY, "n_layers": 3, "moe_layers": [1, 2], "dense_ffn": {"intermediate_size": 96}},
                              "tiny3")
    shapes = operator_shapes(_trace(3, dense_bytes=[30848, 43776, 43776]), spec)
    assert shapes.ffn_params.tolist() == [18432.0, 0.0, 0.0]
    assert shapes.ffn_bytes.tolist() == [18432.0, 0.0, 0.0]
    assert shapes.router_params.tolist() == [0.0, 256.0, 256.0] and shapes.shared_params.tolist() == [0, 9216, 9216]
    assert shapes.other_bytes.tolist() == [128.0, 256.0, 256.0]


def test_norms_and_the_rest_are_what_the_operators_leave_of_the_dense_parameters() -> None:
    """other = dense params - attention - router - shared - FFN, never below 0: a spec whose dense
    count is exactly the operators' (21760) or less has no other weights."""
    for dense in (21760, 20000):
        spec = replace(tiny_spec(), dense_params_per_layer=dense, dense_params_by_layer=())
        assert operator_shapes(_trace(2), spec).other_bytes.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("dense_dtype, bytes_per_param", [("fp32", 4.0), ("fp8", 1.0)])
def test_dense_bytes_follow_the_dense_dtype(dense_dtype: str, bytes_per_param: float) -> None:
    spec = model_from_mapping({**TINY, "dense_dtype": dense_dtype}, "tiny")
    shapes = operator_shapes(_trace(2), spec)
    assert shapes.dense_dtype == dense_dtype
    assert shapes.attn_bytes.tolist() == [12288 * bytes_per_param] * 2
    assert shapes.lm_head_bytes == 6400 * bytes_per_param
