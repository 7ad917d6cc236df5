"""vLLM routed-experts arrays and MoE-Infinity activation matrices, on small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE, PREFILL

# ---- vLLM ---------------------------------------------------------------------------------------

# 4 tokens x 2 layers x top-2, experts 0..5
IDS = np.array([
    [[0, 1], [2, 3]],
    [[1, 4], [3, 5]],
    [[5, 0], [1, 2]],
    [[2, 3], [4, 0]],
], dtype=np.int16)


def test_vllm_prefill_then_decode(tmp_path):
    np.save(tmp_path / "r.npy", IDS)
    trace = load_trace(tmp_path / "r.npy", prefill_len=2, n_experts=6, expert_bytes="1 MiB")
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE]
    assert np.diff(trace.pass_token_offsets).tolist() == [2, 1, 1]
    assert trace.token_position.tolist() == [0, 1, 2, 3]
    # prefill cells are layer-major: layer 0 holds tokens 0 and 1, then layer 1
    assert trace.cell_layer.tolist() == [0, 1, 0, 1, 0, 1]
    assert trace.expert.tolist() == [0, 1, 1, 4, 2, 3, 3, 5, 5, 0, 1, 2, 2, 3, 4, 0]
    assert trace.meta.top_k == 2 and trace.meta.object_bytes == [2**20, 2**20]


def test_vllm_all_decode_by_default_and_sequences(tmp_path):
    np.save(tmp_path / "r.npy", IDS.astype(np.int64))
    trace = load_trace(tmp_path / "r.npy")
    assert trace.n_passes == 4 and (trace.pass_phase == DECODE).all()
    assert trace.meta.n_experts == 6 and trace.meta.extra["n_experts_inferred"] is True
    assert trace.meta.extra["object_bytes_unknown"] is True
    two = load_trace(tmp_path / "r.npy", format="vllm", seq_lens="3,1", prefill_len="2,0")
    assert two.token_request.tolist() == [0, 0, 0, 1] and two.token_position.tolist() == [0, 1, 2, 0]
    assert two.pass_phase.tolist() == [PREFILL, DECODE, DECODE]


def test_vllm_sizes_from_the_catalog_when_the_model_is_named(tmp_path):
    np.save(tmp_path / "r.npy", IDS)
    trace = load_trace(tmp_path / "r.npy", format="vllm", model="Qwen/Qwen3-30B-A3B", n_experts=128)
    assert trace.meta.object_bytes == [3 * 2048 * 768 * 2] * 2  # SwiGLU, hidden 2048, expert ffn 768, bf16
    assert trace.meta.provenance["object_bytes_from"] == "model catalog entry qwen3-30b-a3b (bf16 experts)"
    # a catalog model with another expert count is not used for sizes
    assert load_trace(tmp_path / "r.npy", format="vllm", model="qwen3-30b-a3b").meta.extra["object_bytes_unknown"]


@pytest.mark.parametrize("change,options,message", [
    (lambda a: a.__setitem__((2, 1, 0), -1), {}, r"token 2: layer 1: expert id -1 is negative"),
    (lambda a: a.__setitem__((3, 0, 1), 2), {}, r"token 3: layer 0: expert 2 appears twice for one token"),
    (lambda a: None, {"n_experts": 5}, r"token 1: field 'expert': 5 outside 0..4"),
    (lambda a: None, {"seq_lens": "2,1"}, r"--option seq_lens: sums to 3 tokens; the array has 4"),
    (lambda a: None, {"prefill_len": 9}, r"sequence 0 has 4 tokens, fewer than its prefill 9"),
    (lambda a: None, {"bogus": 1}, r"unknown option 'bogus' for format 'vllm'"),
])
def test_vllm_errors(tmp_path, change, options, message):
    ids = IDS.copy()
    change(ids)
    np.save(tmp_path / "r.npy", ids)
    with pytest.raises(UserError, match=message):
        load_trace(tmp_path / "r.npy", format="vllm", **options)


def test_vllm_refuses_float_and_pickled_arrays(tmp_path):
    np.save(tmp_path / "f.npy", IDS.astype(np.float32))
    with pytest.raises(UserError, match="must be integers"):
        load_trace(tmp_path / "f.npy", format="vllm")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="Python objects"):
        load_trace(tmp_path / "o.npy", format="vllm")


# ---- MoE-Infinity -------------------------------------------------------------------------------


def test_moe_infinity_cells_carry_the_counts(tmp_path):
    counts = np.zeros((3, 2, 4), dtype=np.float32)
    counts[0, 0] = [2, 1, 1, 0]   # 2 tokens at top-2
    counts[0, 1] = [0, 2, 2, 0]
    counts[2, 1] = [1, 0, 0, 1]   # sequence 1 is an empty slot; sequence 2 routes only at layer 1
    np.save(tmp_path / "eam.npy", counts)
    trace = load_trace(tmp_path / "eam.npy", top_k=2)
    assert trace.n_passes == 2 and trace.meta.extra["skipped_empty_sequences"] == 1
    assert trace.token_request.tolist() == [0, 0, 2]
    assert trace.cell_layer.tolist() == [0, 1, 1] and trace.cell_tokens.tolist() == [2, 2, 1]
    for c, (s, layer) in enumerate([(0, 0), (0, 1), (2, 1)]):
        cell = trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]]
        assert np.bincount(cell, minlength=4).tolist() == counts[s, layer].astype(int).tolist()
    assert "lossy" in trace.meta.extra


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(2, 6), st.integers(1, 5), st.data())
def test_moe_infinity_round_robin_keeps_counts_and_distinct_experts(tmp_path_factory, k, n_experts, tokens, data):
    k = min(k, n_experts)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    counts = np.zeros((1, 1, n_experts), dtype=np.int64)
    for _ in range(tokens):  # each token picks k distinct experts
        counts[0, 0, rng.choice(n_experts, size=k, replace=False)] += 1
    path = tmp_path_factory.mktemp("eam") / "c.npy"
    np.save(path, counts)
    trace = load_trace(path, format="moe-infinity", top_k=k)
    assert np.bincount(trace.expert, minlength=n_experts).tolist() == counts[0, 0].tolist()
    per_token = trace.expert.reshape(-1, k)
    assert all(len(set(row)) == k for row in per_token.tolist())


@pytest.mark.parametrize("cell,options,message", [
    ([1, 1, 1, 0], {"top_k": 2}, r"sequence 0, layer 0: 3 routed experts is not a multiple of top-2"),
    ([2, 0, 0, 0], {"top_k": 1}, None),
    ([3, 1, 0, 0], {"top_k": 2}, r"expert 0 served 3 tokens of only 2"),
    ([1.5, 0.5, 0, 0], {"top_k": 1}, r"count 1.5 is not a non-negative integer"),
    ([1, 1, 0, 0], {}, r"pass --option top_k=N"),
])
def test_moe_infinity_errors(tmp_path, cell, options, message):
    counts = np.zeros((1, 1, 4), dtype=np.float32)
    counts[0, 0] = cell
    np.save(tmp_path / "eam.npy", counts)
    if message is None:
        assert load_trace(tmp_path / "eam.npy", **options).n_accesses == 2
    else:
        with pytest.raises(UserError, match=message):
            load_trace(tmp_path / "eam.npy", **options)


def test_integer_counts_need_the_format_hint(tmp_path):
    counts = np.zeros((1, 2, 4), dtype=np.int32)
    counts[0, 0] = [1, 1, 0, 0]
    counts[0, 1] = [0, 1, 1, 0]
    np.save(tmp_path / "eam.npy", counts)
    with pytest.raises(UserError, match=r"needs --format moe-infinity"):  # read as vLLM ids by default
        load_trace(tmp_path / "eam.npy")
    assert load_trace(tmp_path / "eam.npy", format="moe-infinity", top_k=2).n_accesses == 4
