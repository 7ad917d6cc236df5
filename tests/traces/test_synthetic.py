"""The synthetic generator: structure, determinism, and that each knob moves what it should."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.traces.stats import popularity, predictors
from moesim.traces.synth.fit import request_stats
from moesim.traces.synth.synthetic import LengthDist, SynthConfig, generate, help_table, preset
from moesim.traces.synth.schedule import build_schedule
from moesim.traces.format.trace_meta import DECODE, PREFILL

SMALL = SynthConfig(n_layers=4, n_experts=16, top_k=4, n_requests=6,
                    prefill=LengthDist.parse("4", 1), decode=LengthDist.parse("24", 0))


def _gen(**changes):
    return generate(dataclasses.replace(SMALL, **changes))


# ---- structure -----------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    n_experts=st.integers(2, 12),
    k_share=st.floats(0.0, 1.0),
    zipf=st.floats(0.0, 3.5),
    active=st.floats(0.0, 1.0),
    reuse=st.floats(0.0, 0.95),
    cross=st.floats(0.0, 1.0),
    block=st.integers(0, 6),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_token_routes_to_top_k_distinct_experts(n_experts, k_share, zipf, active, reuse, cross, block, batch, seed):
    k = 1 + int(k_share * (n_experts - 1))
    cfg = SynthConfig(n_layers=3, n_experts=n_experts, top_k=k, zipf=(zipf,), request_active=(max(active, 1e-9),),
                      reuse=reuse, cross_layer=cross, markov_block=block, n_requests=5, batch_size=batch,
                      prefill=LengthDist.parse("uniform:1:4", 1), decode=LengthDist.parse("uniform:0:12", 0), seed=seed)
    t = generate(cfg)
    t.validate()  # k entries per token, no expert twice in a token, ids in range
    rows = t.expert.reshape(-1, k)
    assert (np.sort(rows, axis=1)[:, 1:] != np.sort(rows, axis=1)[:, :-1]).all()


def test_same_config_gives_byte_identical_traces_and_another_seed_does_not():
    cfg = dataclasses.replace(SMALL, reuse=0.3, cross_layer=0.5, request_active=(0.5,), batch_size=3,
                              decode=LengthDist.parse("lognormal:3:0.5", 0), weights=True, seed=11)
    a, b = generate(cfg), generate(cfg)
    assert a.content_hash() == b.content_hash()
    for name in ("pass_phase", "pass_token_offsets", "token_request", "cell_offsets", "expert", "weight"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes()
    assert generate(dataclasses.replace(cfg, seed=12)).content_hash() != a.content_hash()


def test_continuous_batching_schedule():
    pre, dec = np.array([3, 2, 4, 1]), np.array([2, 5, 0, 3])
    s = build_schedule(pre, dec, batch_size=2)
    seq = s.seq_offsets
    request = np.searchsorted(seq, s.pass_tokens, side="right") - 1
    position = s.pass_tokens - seq[request]
    seen = defaultdict(list)
    for p in range(s.pass_phase.size):
        toks = slice(s.pass_token_offsets[p], s.pass_token_offsets[p + 1])
        reqs = request[toks].tolist()
        if s.pass_phase[p] == PREFILL:
            assert len(set(reqs)) == 1 and position[toks].tolist() == list(range(pre[reqs[0]]))
        else:
            assert len(reqs) == len(set(reqs)) <= 2  # at most B sequences, one token each
        for r, pos in zip(reqs, position[toks].tolist()):
            seen[r].append(pos)
    for r in range(4):  # every request: its prompt, then one decode token per step, in order
        assert seen[r] == list(range(pre[r] + dec[r]))
    # request 2 (no decode) and 3 wait for a slot: requests 0 and 1 hold both at the start
    assert s.pass_phase.tolist()[:3] == [PREFILL, PREFILL, DECODE]


def test_single_sequence_decode_has_one_prefill_and_one_pass_per_decode_token():
    t = _gen()
    assert t.n_passes == 6 * (1 + 24)
    assert (np.diff(t.pass_token_offsets)[t.pass_phase == DECODE] == 1).all()
    assert t.n_accesses == 6 * 28 * 4 * 4


def test_accesses_target_draws_requests_until_reached():
    cfg = dataclasses.replace(SMALL, accesses=5000, decode=LengthDist.parse("uniform:10:30", 0))
    t = generate(cfg)
    per_token = cfg.n_layers * cfg.top_k
    last = t.token_request.max()
    last_tokens = np.count_nonzero(t.token_request == last)
    assert t.n_accesses >= 5000 > t.n_accesses - last_tokens * per_token


def test_length_distributions():
    rng = np.random.default_rng(0)
    assert LengthDist.parse("7", 1).sample(rng, 5).tolist() == [7] * 5
    u = LengthDist.parse("uniform:3:5", 0).sample(rng, 2000)
    assert set(u.tolist()) == {3, 4, 5}
    ln = LengthDist.parse("lognormal:4:0.5", 1).sample(rng, 20000)
    assert np.median(ln) == pytest.approx(np.exp(4), rel=0.05)  # the median of a lognormal is e^mu
    for bad in ("uniform:5:3", "normal:1:2", "fixed:x", "uniform:4"):
        with pytest.raises(UserError):
            LengthDist.parse(bad, 0)


def test_gate_weights_sum_to_one_and_fall_with_rank():
    t = _gen(weights=True)
    w = t.weight.astype(np.float64).reshape(-1, 4)
    assert np.allclose(w.sum(axis=1), 1.0, atol=4e-3)  # float16
    assert (np.diff(w, axis=1) <= 0).all()
    assert _gen().weight is None


def test_memory_stays_under_four_bytes_per_access():
    t = generate(dataclasses.replace(preset("olmoe"), n_requests=20))
    assert t.nbytes() / t.n_accesses <= 4.0


# ---- knobs move their statistic --------------------------------------------------------------------
def test_higher_zipf_exponent_concentrates_routing():
    cov = []
    for z in (0.0, 0.5, 1.0, 1.5, 2.5):
        t = _gen(n_experts=64, zipf=(z,), n_requests=20, seed=3)
        cov.append(popularity.topk_coverage(popularity.layer_expert_counts(t), 4).mean())
    assert all(b > a + 0.02 for a, b in zip(cov, cov[1:]))
    # exponent 0 is uniform: 4 hottest of 64 carry about 4/64 (plus sampling noise of 2,240 draws)
    assert cov[0] == pytest.approx(4 / 64, abs=0.03)


def test_per_layer_zipf_applies_to_its_layer():
    t = _gen(n_experts=64, zipf=(0.0, 3.0, 0.0, 3.0), n_requests=20)
    cov = popularity.topk_coverage(popularity.layer_expert_counts(t), 4)
    assert cov[1] > cov[0] + 0.4 and cov[3] > cov[2] + 0.4


def test_reuse_sets_the_previous_token_overlap():
    """Without reuse, consecutive tokens are independent: lag 1 looks like lag 8. With reuse r,
    a slot repeats the previous token with probability r on top of the chance overlap."""
    base = dict(n_experts=64, zipf=(0.5,), n_requests=20, decode=LengthDist.parse("64", 0), seed=5)
    t0 = _gen(reuse=0.0, **base)
    lag1, lag8 = predictors.lag_overlap(t0, 1)[0], predictors.lag_overlap(t0, 8)[0]
    assert lag1 == pytest.approx(lag8, abs=0.02)
    t5 = _gen(reuse=0.5, **base)
    r1 = predictors.lag_overlap(t5, 1)[0]
    assert r1 == pytest.approx(0.5 + 0.5 * lag8, abs=0.04)
    assert predictors.lag_overlap(t5, 2)[0] < r1  # copies of copies decay with lag


def test_cross_layer_markov_gives_a_cross_layer_predictor_an_edge():
    base = dict(n_layers=6, n_experts=64, zipf=(0.8,), n_requests=12, decode=LengthDist.parse("64", 0),
                markov_block=0, seed=2)
    off = predictors.cross_layer_predictability(_gen(cross_layer=0.0, **base))
    on = predictors.cross_layer_predictability(_gen(cross_layer=0.8, **base))
    assert abs(off.gain) < 0.02
    assert on.gain > off.gain + 0.1


def test_request_active_limits_each_request_to_its_subset():
    # active share k / n_experts: each request routes every token to the same k experts per layer
    t = _gen(n_experts=16, request_active=(4 / 16,), n_requests=8)
    r = request_stats(t)
    assert r.distinct.tolist() == [4.0] * 4
    assert r.coverage.tolist() == [1.0] * 4
    # ... while different requests use different subsets
    assert popularity.distinct_per_layer(popularity.layer_expert_counts(t)).min() > 4


def test_presets_have_the_model_shapes():
    mib = 1 << 20
    shapes = {name: (c.n_layers, c.n_experts, c.top_k, c.bytes_per_layer()[0]) for name in ("olmoe", "qwen3", "mixtral")
              for c in [preset(name)]}
    assert shapes == {"olmoe": (16, 64, 8, 12 * mib), "qwen3": (48, 128, 8, 9 * mib),
                      "mixtral": (32, 8, 2, 336 * mib)}
    with pytest.raises(UserError, match="unknown preset"):
        preset("deepseek")


# ---- configuration -------------------------------------------------------------------------------
def test_settings_parse_with_units_and_round_trip():
    cfg = SynthConfig().with_settings(["object_bytes=12 MiB", "zipf=0.5", "prefill=uniform:8:16", "accesses=2M",
                                       "weights=yes", "request_active=0.5"])
    assert cfg.object_bytes == (12 * 2**20,) and cfg.zipf == (0.5,) and cfg.accesses == 2_000_000
    assert str(cfg.prefill) == "uniform:8:16" and cfg.weights and cfg.request_active == (0.5,)
    assert SynthConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("pair,message", [
    ("colour=red", "unknown setting 'colour'"),
    ("zipf", "expected key=value"),
    ("reuse=1.2", r"reuse must be in \[0, 1\)"),
    ("top_k=99", "top_k=99 exceeds n_experts=64"),
    ("zipf=1,2,3", "zipf has 3 values for 16 layers"),
    ("object_bytes=12", None),
    ("object_bytes=12 parsecs", "not a bytes unit"),
    ("request_active=0", r"request_active shares must be in \(0, 1\]"),
])
def test_bad_settings_are_user_errors_naming_the_setting(pair, message):
    if message is None:
        assert SynthConfig().with_settings([pair]).object_bytes == (12,)
        return
    with pytest.raises(UserError, match=message):
        SynthConfig().with_settings([pair])


def test_help_lists_every_setting():
    names = [name for name, _, _ in help_table()]
    assert names == [f.name for f in dataclasses.fields(SynthConfig)]
    assert all(help_ for _, _, help_ in help_table())


@pytest.mark.parametrize("name,model", [("olmoe", "olmoe-1b-7b"), ("qwen3", "qwen3-30b-a3b"), ("mixtral", "mixtral-8x7b")])
def test_a_model_name_takes_its_shapes_from_the_catalog(name, model):
    """The catalog computes expert bytes from the models' shapes: the presets must agree with it."""
    if importlib.util.find_spec("moesim.traces.models.catalog") is None:
        with pytest.raises(UserError, match="catalog is not available"):
            generate(SynthConfig(model=model))
        return
    got = SynthConfig(model=model).resolved()
    want = preset(name)
    assert (got.n_layers, got.n_experts, got.top_k, got.object_bytes) == (
        want.n_layers, want.n_experts, want.top_k, want.object_bytes)
    t = generate(SynthConfig(model=model, n_requests=1, decode=LengthDist.parse("2", 0)))
    assert (t.meta.n_layers, t.meta.n_experts, t.meta.top_k) == (want.n_layers, want.n_experts, want.top_k)
