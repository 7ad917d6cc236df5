"""The KTransformers anchor's synthetic trace has DeepSeek-V3's shapes and Q4_K_M expert sizes."""

from __future__ import annotations

from moesim.hw_profiles.loader import load_profile
from moesim.runs.anchors import ANCHORS, q4_k_m_expert_bytes, use_more_bits


def test_q4_k_m_expert_sizes_by_hand() -> None:
    sizes = q4_k_m_expert_bytes()
    assert len(sizes) == 58  # DeepSeek-V3: layers 3..60 are MoE
    matrix = 7168 * 2048
    q4k, q6k = matrix * 4.5 / 8, matrix * 6.5625 / 8  # bits per weight of Q4_K and Q6_K
    assert sizes[0] == 2 * q4k + q6k  # model layer 3 < 61 // 8: down in Q6_K
    assert sizes[5] == 3 * q4k  # model layer 8: (8 - 7) % 3 != 2
    assert sizes[6] == 2 * q4k + q6k  # model layer 9: (9 - 7) % 3 == 2
    assert use_more_bits(53, 61) is True and use_more_bits(52, 61) is False  # 7 * 61 // 8 = 53


def test_anchor_profiles_load_with_cpu_figures() -> None:
    for anchor in ANCHORS:
        profile = load_profile(anchor.profile)
        assert profile.compute.cpu_memory_bandwidth and profile.compute.cpu_flops
    two = load_profile("ktransformers-xeon6454s-2s-4090d").compute.cpu_memory_bandwidth
    one = load_profile("ktransformers-xeon6454s-1s-4090d").compute.cpu_memory_bandwidth
    assert two == 2 * one == 614.4e9
