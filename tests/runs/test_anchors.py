"""The KTransformers anchors: the synthetic trace has DeepSeek-V3's shapes and Q4_K_M sizes; rows and profiles."""

from __future__ import annotations

import pytest

from moesim.hw_profiles.loader import load_profile
from moesim.runs.anchors import (ANCHORS, FIT, PREDICT, anchor_trace, q4_k_m_dense_bytes, q4_k_m_expert_bytes,
                                 use_more_bits)


def test_q4_k_m_expert_sizes_by_hand() -> None:
    sizes = q4_k_m_expert_bytes()
    assert len(sizes) == 58  # DeepSeek-V3: layers 3..60 are MoE
    matrix = 7168 * 2048
    q4k, q6k = matrix * 4.5 / 8, matrix * 6.5625 / 8  # bits per weight of Q4_K and Q6_K
    assert sizes[0] == 2 * q4k + q6k  # model layer 3 < 61 // 8: down in Q6_K
    assert sizes[5] == 3 * q4k  # model layer 8: (8 - 7) % 3 != 2
    assert sizes[6] == 2 * q4k + q6k  # model layer 9: (9 - 7) % 3 == 2
    assert use_more_bits(53, 61) is True and use_more_bits(52, 61) is False  # 7 * 61 // 8 = 53


def test_q4_k_m_dense_bytes_of_layer_3_by_hand() -> None:
    """DeepSeek-V3's config.json: MLA q_a 7168x1536, q_b 1536x(128x192), kv_a 7168x576, kv_b 512x(128x256),
    o (128x128)x7168 = 187,105,280; norms 7168 + 7168 + 1536 + 512; router 256x7168 (+256 bias);
    one shared expert 3 x 7168 x 2048 = 44,040,192: 232,997,120 weights. Router in F32 (4 B), the shared
    down projection in Q6_K on layer 3 (a use_more_bits layer), the rest in Q4_K."""
    router, shared_down = 256 * 7168, 7168 * 2048
    rest = 187_105_280 + 16_384 + 256 + 2 * shared_down
    assert rest + router + shared_down == 232_997_120
    expected = rest * 144 / 256 + router * 4 + shared_down * 210 / 256
    assert q4_k_m_dense_bytes()[0] == int(expected)
    assert q4_k_m_dense_bytes()[5] == int(rest * 144 / 256 + router * 4 + shared_down * 144 / 256)  # layer 8


@pytest.mark.parametrize("experts", [8, 6])
def test_anchor_trace_keeps_the_gguf_sizes(experts: int) -> None:
    """The synthetic config resolves the catalog's fp8 sizes; the trace must carry Q4_K_M's instead."""
    trace = anchor_trace(decode_tokens=2, prompt_tokens=4, experts=experts)
    assert list(trace.meta.object_bytes) == q4_k_m_expert_bytes()
    assert trace.meta.dense_bytes == q4_k_m_dense_bytes()
    assert (trace.meta.n_layers, trace.meta.n_experts, trace.meta.top_k) == (58, 256, experts)
    assert trace.n_passes == 1 + 2


def test_rows_fit_on_two_sockets_and_predict_the_rest() -> None:
    fitted = [a for a in ANCHORS if a.role == FIT]
    assert {a.profile for a in fitted} == {"ktransformers-xeon6454s-2s-4090d"} and len(fitted) == 2
    assert {a.experts for a in fitted} == {6, 8}  # two rows that split the per-expert from the fixed cost
    predicted = [a for a in ANCHORS if a.role == PREDICT]
    assert any(a.profile == "ktransformers-xeon6454s-1s-4090d" for a in predicted)
    llama = [a for a in ANCHORS if a.engine.startswith("llama.cpp")]
    assert llama and all(a.placement.startswith("cpu-only") and not a.engine_figures for a in llama)


def test_anchor_profiles_state_the_machine() -> None:
    two = load_profile("ktransformers-xeon6454s-2s-4090d").processors["cpu"]
    one = load_profile("ktransformers-xeon6454s-1s-4090d").processors["cpu"]
    assert two.memory_bandwidth == 2 * one.memory_bandwidth == 614.4e9  # 8 x DDR5-4800 x 8 B a socket
    assert (two.numa_nodes, one.numa_nodes) == (2, 1)
    assert two.numa_link_bandwidth == 4 * 16e9 * 2  # 4 UPI links x 16 GT/s x 2 B, per direction
    assert two.kernel_overhead == one.kernel_overhead == 0.0  # nothing fitted in the shipped files
