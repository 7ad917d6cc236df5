"""A processor's matrix-matrix rate (`batched_flops`, moesim/sim/compute/processors.py matrix_rate) against
times worked out by hand, and its absence giving the one-rate roofline.

The small model is tests/sim/test_compute_operators.py's (per layer at 2 B/param: attention 12288 params,
24576 B + norms 256 B, KV 128 B per position, 256 FLOPs per (query, position) pair; router 256 params,
512 B; shared expert 9216 params, 18432 B; one routed expert 6144 params, 12288 B, 12288 FLOPs per
token; LM head 6400 params, 12800 B; one embedding row 128 B). The processor reads at 1 GB/s, runs
matrix-vector work at 0.5 GFLOP/s and, where stated, matrix-matrix work at 2 GFLOP/s: chosen so that
every operator below is FLOP-bound and the rate it used shows in its time.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from moesim.errors import UserError
from moesim.hw_profiles.loader import PROFILES_DIR, profile_from_mapping, profile_to_document, profile_values
from moesim.hw_profiles.profile import profile_record
from moesim.sim.compute import compute_model, expert_cell_times, expert_request_times, non_expert_cell_times
from moesim.sim.compute.operators import roofline
from moesim.sim.compute.processors import Processor, matrix_rate
from moesim.traces.format.trace_meta import DECODE, PREFILL
from tests.sim.test_compute_operators import EXPERT_BYTES, US, _Profile, tiny_spec, tiny_trace

VECTOR, BATCHED = 0.5e9, 2e9


def _proc(batched: float | None) -> Processor:
    return Processor("gpu", "gpu", "vram", {"bf16": VECTOR}, 1e9, 0.0, batched_flops=batched)


def test_matrix_rate_picks_the_batched_figure_only_above_one_token() -> None:
    assert matrix_rate(_proc(BATCHED), "bf16", np.array([0.0, 1.0, 2.0, 512.0])).tolist() == \
        [VECTOR, VECTOR, BATCHED, BATCHED]
    assert matrix_rate(_proc(None), "bf16", np.array([1.0, 2.0, 512.0])).tolist() == [VECTOR] * 3


def test_prefill_operators_run_at_the_batched_rate_by_hand() -> None:
    """One prefill pass of 4 tokens (positions 0-3), every token to experts 0 and 1, 2 layers, fused.
    Per layer (T = 4, pairs 1 + 2 + 3 + 4 = 10, positions read R = 4 and written 4):
      attention  bytes 24576 + 256 + 8 x 128 = 25856 (25.856 us); FLOPs 2 x 12288 x 4 + 10 x 256 = 100864
                 -> at 2 GFLOP/s 50.432 us   (at 0.5: 201.728 us)
      router     512 B (0.512 us); FLOPs 2 x 256 x 4 = 2048 -> 1.024 us   (at 0.5: 4.096 us)
      shared     18432 B (18.432 us); FLOPs 2 x 9216 x 4 = 73728 -> 36.864 us   (at 0.5: 147.456 us)
    LM head (last layer, one sequence: one logits row, matrix-vector whatever the prompt): 12800 B
      (12.8 us), FLOPs 2 x 6400 = 12800 -> at 0.5 GFLOP/s 25.6 us in both cases.
    Embedding: 4 rows of 128 B -> 0.512 us. Experts: 4 tokens each, 49152 FLOPs -> 24.576 us at
      2 GFLOP/s (bytes 12.288 us); at 0.5: 98.304 us. Grouped cell of two: max(24.576, 49.152) us."""
    spec = tiny_spec()
    trace = tiny_trace([0, 1, 2, 3], phase=PREFILL)
    cases = {BATCHED: (50.432, 1.024, 36.864, 24.576), None: (201.728, 4.096, 147.456, 98.304)}
    for batched, (attn, router, shared, expert) in cases.items():
        model = compute_model(trace, _Profile(_proc(batched)), spec)
        ops = non_expert_cell_times(trace, model).by_operator
        assert ops["attention"].tolist() == pytest.approx([attn * US] * 2, rel=1e-12)
        assert ops["router"].tolist() == pytest.approx([router * US] * 2, rel=1e-12)
        assert ops["shared"].tolist() == pytest.approx([shared * US] * 2, rel=1e-12)
        assert ops["lm_head"].tolist() == pytest.approx([0.0, 25.6 * US], rel=1e-12)
        assert ops["embedding"].tolist() == pytest.approx([0.512 * US, 0.0], rel=1e-12)
        layer, nbytes, tokens = np.array([0, 0]), np.array([EXPERT_BYTES] * 2), np.array([4, 4])
        assert expert_request_times(model, layer, nbytes, tokens).tolist() == pytest.approx([expert * US] * 2,
                                                                                             rel=1e-12)
        assert expert_cell_times(model, np.array([0, 0]), layer, nbytes, tokens, 1).tolist() == \
            pytest.approx([2 * expert * US], rel=1e-12)


def test_one_token_requests_keep_the_vector_rate_beside_batched_ones() -> None:
    """A prefill cell where one expert gets 1 token and another 3: 12288 FLOPs at 0.5 GFLOP/s = 24.576 us
    (not 12.288 us, bytes-bound, as the batched rate would give) and 36864 at 2 GFLOP/s = 18.432 us;
    grouped: max(24.576 us of bytes, 24.576 + 18.432 = 43.008 us of FLOPs)."""
    model = compute_model(tiny_trace([0, 1, 2, 3], phase=PREFILL), _Profile(_proc(BATCHED)), tiny_spec())
    layer, nbytes, tokens = np.array([0, 0]), np.array([EXPERT_BYTES] * 2), np.array([1, 3])
    assert expert_request_times(model, layer, nbytes, tokens).tolist() == pytest.approx([24.576 * US, 18.432 * US],
                                                                                         rel=1e-12)
    assert expert_cell_times(model, np.array([0, 0]), layer, nbytes, tokens, 1).tolist() == \
        pytest.approx([43.008 * US], rel=1e-12)
    # two tokens are already matrix-matrix work: 24576 FLOPs at 2 GFLOP/s = 12.288 us (49.152 at 0.5)
    assert expert_request_times(model, np.array([0]), np.array([EXPERT_BYTES]), np.array([2])).tolist() == \
        pytest.approx([12.288 * US], rel=1e-12)


def test_a_roofline_without_a_token_count_is_matrix_vector_work() -> None:
    """roofline's default is one token per weight read: 1 MFLOP at the 0.5 GFLOP/s vector rate = 2 ms,
    although the processor states a batched rate."""
    assert roofline(0.0, 1e6, _proc(BATCHED), "bf16").tolist() == pytest.approx(2e-3, rel=1e-12)
    assert roofline(0.0, 1e6, _proc(BATCHED), "bf16", 2.0).tolist() == pytest.approx(0.5e-3, rel=1e-12)


def test_decode_at_batch_one_ignores_the_batched_figure() -> None:
    spec = tiny_spec()
    trace = tiny_trace([9], phase=DECODE)
    with_b = non_expert_cell_times(trace, compute_model(trace, _Profile(_proc(BATCHED)), spec))
    without = non_expert_cell_times(trace, compute_model(trace, _Profile(_proc(None)), spec))
    for name, values in without.by_operator.items():
        assert with_b.by_operator[name].tolist() == values.tolist(), name


def test_the_profile_field_loads_shows_and_round_trips() -> None:
    doc = yaml.safe_load((PROFILES_DIR / "phone-oneplus-15r.yaml").read_text())
    assert profile_from_mapping(doc, "doc").processors["cpu"].batched_flops is None  # absent: None
    doc["processors"]["cpu"]["batched_flops"] = {"value": "47.3 GFLOP/s", "provenance": "measured: a test"}
    profile = profile_from_mapping(doc, "doc")
    assert profile.processors["cpu"].batched_flops == 47.3e9
    shown = profile_values(profile)["processors"]["cpu"]["batched_flops"]
    assert shown == {"value": 47.3e9, "unit": "FLOP/s", "provenance": "measured: a test"}
    assert profile_from_mapping(profile_to_document(profile), "doc") == profile
    # results record it when stated and leave it out when absent (records and sweep hashes of other profiles stay)
    assert profile_record(profile)["processors"]["cpu"]["batched_flops"] == 47.3e9
    assert "batched_flops" not in profile_record(profile_from_mapping(yaml.safe_load(
        (PROFILES_DIR / "phone-oneplus-15r.yaml").read_text()), "doc"))["processors"]["cpu"]
    doc["processors"]["cpu"]["batched_flops"] = {"value": "47.3 GB/s", "provenance": "wrong unit"}
    with pytest.raises(UserError, match="batched_flops"):
        profile_from_mapping(doc, "doc")
