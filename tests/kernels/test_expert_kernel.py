"""The Triton grouped SwiGLU kernel against the float64 torch reference (CPU interpreter or GPU).

Slots not mapped by the slot table are filled with NaN: a kernel that followed the wrong slot, read
past a slot, or read a padding row would turn the output into NaN, which never passes.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
from hypothesis import given, settings, strategies as st  # noqa: E402

from moesim.kernels.expert_kernel import CPU_TEST_CONFIG, align_routing, grouped_swiglu  # noqa: E402
from moesim.kernels.reference import moe_reference, pool_weights  # noqa: E402

# Relative max error vs float64 (gpu_method.md §7: exact numpy math on CPU; bf16 rounds h and y).
TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 3e-2}


def make_case(dtype, device, n_tokens=7, top_k=2, hidden=40, inter=24, n_experts=6, seed=0,
              skew=False):
    """A pool of 8 slots, NaN except the mapped ones, and a permuted slot table (expert 1 absent)."""
    g = torch.Generator().manual_seed(seed)
    elems = 3 * hidden * inter
    pool = torch.full((8, elems + 3), float("nan"), dtype=torch.float32)
    slot_of = torch.tensor([3, -1, 0, 7, 5, 1][:n_experts], dtype=torch.int32)
    for slot in slot_of.tolist():
        if slot >= 0:
            pool[slot, :elems] = torch.randn(elems, generator=g) * 0.2
    usable = [e for e in range(n_experts) if slot_of[e] >= 0]
    if skew:  # every token routes to expert 0 first: a run longer than one BLOCK_M tile
        rest = torch.tensor([e for e in usable if e != 0])
        ids = torch.stack([torch.cat([torch.tensor([0]), rest[torch.randperm(len(rest), generator=g)[: top_k - 1]]])
                           for _ in range(n_tokens)])
    else:
        choice = torch.tensor(usable)
        ids = torch.stack([choice[torch.randperm(len(usable), generator=g)[:top_k]] for _ in range(n_tokens)])
    weights = torch.rand(n_tokens, top_k, generator=g)
    x = torch.randn(n_tokens, hidden, generator=g)
    return (x.to(dtype).to(device), ids.to(device), weights.to(device), pool.to(dtype).to(device),
            slot_of.to(device), hidden, inter)


def rel_error(y: "torch.Tensor", ref: "torch.Tensor") -> float:
    assert not torch.isnan(y).any()
    return float((y.double().cpu() - ref.cpu()).abs().max() / ref.abs().max().cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_kernel_matches_float64_reference(dtype, device):
    x, ids, w, pool, slot_of, h, i = make_case(dtype, device)
    y = grouped_swiglu(x, ids, w, pool, slot_of, h, i, config=CPU_TEST_CONFIG)
    ref = moe_reference(x, ids, w, pool_weights(pool, slot_of, h, i))
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_error(y, ref) < TOLERANCE[dtype]


def test_an_expert_with_more_tokens_than_a_tile_spans_several_tiles(device):
    x, ids, w, pool, slot_of, h, i = make_case(torch.float32, device, n_tokens=20, top_k=3, skew=True)
    routing = align_routing(ids, slot_of.numel(), CPU_TEST_CONFIG.block_m)
    assert int((routing.tile_expert == 0).sum()) == 2  # 20 tokens of expert 0 need two 16-row tiles
    y = grouped_swiglu(x, ids, w, pool, slot_of, h, i, config=CPU_TEST_CONFIG)
    assert rel_error(y, moe_reference(x, ids, w, pool_weights(pool, slot_of, h, i))) < 1e-5


def test_a_token_routed_twice_to_one_expert_gets_both_contributions(device):
    x, ids, w, pool, slot_of, h, i = make_case(torch.float32, device, n_tokens=3)
    ids[1] = torch.tensor([2, 2], device=device)
    y = grouped_swiglu(x, ids, w, pool, slot_of, h, i, config=CPU_TEST_CONFIG)
    gate, up, down = pool_weights(pool, slot_of, h, i)(2)
    xd = x[1].double()
    single = (torch.nn.functional.silu(xd @ gate.double()) * (xd @ up.double())) @ down.double()
    expected = (w[1, 0] + w[1, 1]).double() * single
    assert torch.allclose(y[1].double(), expected, rtol=1e-5, atol=1e-6)


def test_reference_agrees_with_a_per_token_numpy_loop():
    """The oracle itself, against the formula written out token by token in numpy."""
    x, ids, w, pool, slot_of, h, i = make_case(torch.float32, "cpu", n_tokens=4)
    ref = moe_reference(x, ids, w, pool_weights(pool, slot_of, h, i)).numpy()
    xn, pn = x.double().numpy(), pool.double().numpy()
    for t in range(4):
        acc = np.zeros(h)
        for k in range(ids.shape[1]):
            flat = pn[int(slot_of[ids[t, k]])]
            g_, u_, d_ = (flat[: h * i].reshape(h, i), flat[h * i: 2 * h * i].reshape(h, i),
                          flat[2 * h * i: 3 * h * i].reshape(i, h))
            a = xn[t] @ g_
            acc += float(w[t, k]) * (((a / (1 + np.exp(-a))) * (xn[t] @ u_)) @ d_)
        np.testing.assert_allclose(ref[t], acc, rtol=1e-12, atol=1e-12)


def test_no_tokens_gives_an_empty_output(device):
    x, ids, w, pool, slot_of, h, i = make_case(torch.float32, device, n_tokens=2)
    y = grouped_swiglu(x[:0], ids[:0], w[:0], pool, slot_of, h, i, config=CPU_TEST_CONFIG)
    assert y.shape == (0, h)


@settings(max_examples=40, deadline=None)
@given(n_tokens=st.integers(0, 30), top_k=st.integers(1, 4), n_experts=st.integers(1, 9),
       block_m=st.sampled_from([1, 4, 16]), seed=st.integers(0, 2**16))
def test_alignment_groups_every_pair_once_by_expert(n_tokens, top_k, n_experts, block_m, seed):
    ids = torch.from_numpy(np.random.default_rng(seed).integers(0, n_experts, (n_tokens, top_k)))
    r = align_routing(ids, n_experts, block_m)
    flat = ids.reshape(-1)
    pairs = r.sorted_pairs.view(r.n_tiles, block_m)
    real = r.sorted_pairs[r.sorted_pairs < r.n_pairs]
    assert sorted(real.tolist()) == list(range(n_tokens * top_k))  # every pair exactly once
    for t in range(r.n_tiles):
        row = pairs[t][pairs[t] < r.n_pairs]
        expert = int(r.tile_expert[t])
        if expert < 0:
            assert row.numel() == 0
        else:
            assert (flat[row.long()] == expert).all()
    # the tile count per expert is the ceiling of its token count over block_m
    counts = np.bincount(flat.numpy(), minlength=n_experts)
    tiles = np.bincount(r.tile_expert[r.tile_expert >= 0].numpy(), minlength=n_experts)
    np.testing.assert_array_equal(tiles, -(-counts // block_m))


@pytest.mark.gpu
@pytest.mark.parametrize("n_tokens", [1, 16, 256])
def test_kernel_on_real_olmoe_shapes_in_bf16(n_tokens):
    """OLMoE-1B-7B layer (H=2048, I=1024, 64 experts, top-8) from a 40-slot pool, vs an fp32 reference."""
    from moesim.kernels.expert_kernel import default_config

    dev = torch.device("cuda")
    h, i, e, k, slots = 2048, 1024, 64, 8, 40
    g = torch.Generator(device=dev).manual_seed(0)
    pool = torch.full((slots, 3 * h * i), float("nan"), device=dev, dtype=torch.bfloat16)
    resident = torch.randperm(e, generator=g, device=dev)[:slots].tolist()
    slot_of = torch.full((e,), -1, dtype=torch.int32, device=dev)
    for s, expert in enumerate(resident):
        slot_of[expert] = s
        pool[s] = (torch.randn(3 * h * i, generator=g, device=dev) / h**0.5).to(torch.bfloat16)
    choice = torch.tensor(resident, device=dev)
    ids = torch.stack([choice[torch.randperm(slots, generator=g, device=dev)[:k]] for _ in range(n_tokens)])
    w = torch.softmax(torch.randn(n_tokens, k, generator=g, device=dev), dim=1)
    x = torch.randn(n_tokens, h, generator=g, device=dev).to(torch.bfloat16)
    y = grouped_swiglu(x, ids, w, pool, slot_of, h, i, config=default_config(n_tokens * k / slots))
    ref = moe_reference(x, ids, w, pool_weights(pool, slot_of, h, i), compute_dtype=torch.float32)
    assert not torch.isnan(y).any()
    assert float((y.float() - ref).abs().max() / ref.abs().max()) < 2e-2
