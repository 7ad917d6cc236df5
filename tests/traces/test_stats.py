"""Trace statistics against hand-computed cases, a naive pure-Python reference, and the numbers
BigMoeOnEdge's findings.md reports for its qwen and gemma traces."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.traces.stats import popularity, predictors, summary, working_set
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace, simple_trace

REPO = Path(__file__).resolve().parents[2]


# ---- hand-computed -----------------------------------------------------------------------------
def _tiny():
    """One request: a prefill pass of tokens [2,3], [2,1], then decode [0,1], [0,2], [0,1].
    One layer, 4 experts of 10 bytes, top-2."""
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=2, object_bytes=[10])
    passes = [{"phase": PREFILL, "tokens": [(0, 0), (0, 1)], "cells": [(0, [[2, 3], [2, 1]])]}]
    for i, row in enumerate(([0, 1], [0, 2], [0, 1])):
        passes.append({"phase": DECODE, "tokens": [(0, 2 + i)], "cells": [(0, [row])]})
    return build_trace(meta, passes)


def test_popularity_of_a_tiny_decode_by_hand():
    counts = popularity.layer_expert_counts(_tiny(), "decode")
    assert counts.tolist() == [[3, 2, 1, 0]]
    assert popularity.distinct_per_layer(counts).tolist() == [3]
    expected_h = -(0.5 * math.log2(0.5) + (1 / 3) * math.log2(1 / 3) + (1 / 6) * math.log2(1 / 6))
    assert popularity.entropy_bits(counts)[0] == pytest.approx(expected_h)
    assert popularity.topk_coverage(counts, 1)[0] == pytest.approx(3 / 6)
    assert popularity.topk_coverage(counts, 2)[0] == pytest.approx(5 / 6)


def test_all_phase_counts_include_the_prompt():
    assert popularity.layer_expert_counts(_tiny(), "all").tolist() == [[3, 3, 3, 1]]
    assert popularity.layer_expert_counts(_tiny(), "prefill").tolist() == [[0, 1, 2, 1]]


def test_temporal_predictor_by_hand():
    t = _tiny()
    # decode sets {0,1},{0,2},{0,1}: lag 1 shares 1 of 2 twice; lag 2 shares 2 of 2 once
    assert predictors.lag_overlap(t, 1)[0] == pytest.approx(0.5)
    assert predictors.lag_overlap(t, 2)[0] == pytest.approx(1.0)
    assert math.isnan(predictors.lag_overlap(t, 3)[0])


def test_static_predictors_by_hand():
    t = _tiny()
    # decode hottest two: 0 (3 uses), 1 (2); scored on decode steps 2 and 3: {0,2} -> 1/2, {0,1} -> 2/2
    assert predictors.static_coverage(t, "decode")[0] == pytest.approx(0.75)
    # prompt hottest two: 2 (2 uses), then 3 and 1 tie at 1 -> 3 was seen first; scored on every
    # decode step: {0,1} -> 0, {0,2} -> 1/2, {0,1} -> 0
    assert predictors.static_coverage(t, "prefill", paired=False)[0] == pytest.approx(1 / 6)
    p = predictors.predictor_stats(t, lags=(1, 2))
    assert (p.temporal, p.static, p.static_prompt, p.random) == pytest.approx((0.5, 0.75, 1 / 6, 0.5))
    assert p.lag_profile == pytest.approx({1: 0.5, 2: 1.0})
    assert p.scored_rows == 2


def test_reuse_distance_and_working_sets_by_hand():
    t = _tiny()
    # uses (object: passes): 0: 1,2,3  1: 0,1,3  2: 0,2  3: 0
    # distances: 0 -> 1,1 ; 1 -> 1,2 ; 2 -> 2  => bucket "1": 3, bucket "2-3": 2; first uses 4
    hist, first = working_set.reuse_distance_histogram(t)
    assert hist.tolist() == [[3, 2]]
    assert first.tolist() == [4]
    assert working_set.reuse_bucket_labels(4) == ["1", "2-3", "4-7", "8-15"]
    assert working_set.pass_working_set(t).tolist() == [3, 2, 2, 2]
    assert working_set.pass_working_set_bytes(t).tolist() == [30, 20, 20, 20]
    assert working_set.cell_distinct_experts(t).tolist() == [3, 2, 2, 2]
    s = summary.trace_summary(t)
    assert s["accesses"] == 10 and s["passes"] == {"prefill": 1, "decode": 3}
    assert s["tokens"] == {"prefill": 2, "decode": 3} and s["requests"] == 1
    assert s["routed_bytes"] == 90 and s["distinct_objects"] == 4 and s["bytes_touched"] == 40
    assert s["touched_share"] == 1.0
    d = summary.trace_summary(t, "decode")
    assert d["accesses"] == 6 and d["distinct_objects"] == 3 and d["routed_bytes"] == 60


def test_predecessor_is_the_same_requests_previous_token_in_batched_decode():
    """Two requests decode in the same passes; a token is compared with its own request's
    previous token, never with the other request's token beside it."""
    meta = TraceMeta(n_layers=1, n_experts=6, top_k=2, object_bytes=[1])
    passes = [
        {"phase": DECODE, "tokens": [(0, 5), (1, 3)], "cells": [(0, [[0, 1], [2, 3]])]},
        {"phase": DECODE, "tokens": [(1, 4), (0, 6)], "cells": [(0, [[2, 4], [0, 5]])]},
    ]
    t = build_trace(meta, passes)
    # request 0: {0,1} -> {0,5} shares 1; request 1: {2,3} -> {2,4} shares 1; across requests nothing
    assert predictors.lag_overlap(t, 1)[0] == pytest.approx(0.5)


def test_a_cell_with_fewer_tokens_holds_the_pass_last_tokens():
    """llama.cpp routes only the output token through a prefill's last layer."""
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=1, object_bytes=[1, 1])
    t = build_trace(meta, [{"phase": PREFILL, "tokens": [(0, 0), (0, 1), (0, 2)],
                            "cells": [(0, [[0], [1], [2]]), (1, [[3]])]}])
    rows = predictors.token_rows(t)
    assert rows.layer.tolist() == [0, 0, 0, 1]
    assert rows.position.tolist() == [0, 1, 2, 2]


def test_token_statistics_need_a_fixed_top_k():
    t = simple_trace([[[0, 1]], [[2]]], n_layers=1, n_experts=4)
    with pytest.raises(UserError, match="fixed top_k"):
        predictors.token_rows(t)
    result = summary.compute_stats(t)  # the per-layer and whole-trace parts still work
    assert result.predictors is None and result.summary["accesses"] == 3


def test_bad_phase_is_a_user_error():
    with pytest.raises(UserError, match="phase must be one of"):
        popularity.layer_expert_counts(_tiny(), "warmup")


# ---- a naive reference on random traces --------------------------------------------------------
def _random_trace(seed: int):
    """Requests of random lengths served in batched decode passes; experts drawn at random."""
    rng = np.random.default_rng(seed)
    n_layers, k = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    n_experts = int(rng.integers(k, 8))
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=k,
                     object_bytes=[int(b) for b in rng.integers(1, 100, n_layers)])
    n_req = int(rng.integers(1, 4))
    prompt = rng.integers(1, 4, n_req)
    decode = rng.integers(0, 7, n_req)
    skew = rng.random(n_experts) ** 3 + 0.01

    def route(n_tok: int):
        return [[int(e) for e in rng.choice(n_experts, k, replace=False, p=skew / skew.sum())]
                for _ in range(n_tok)]

    passes = []
    for r in range(n_req):
        toks = [(r, i) for i in range(int(prompt[r]))]
        passes.append({"phase": PREFILL, "tokens": toks, "cells": [(l, route(len(toks))) for l in range(n_layers)]})
    step = [0] * n_req
    while any(step[r] < decode[r] for r in range(n_req)):
        live = [r for r in rng.permutation(n_req) if step[r] < decode[r] and rng.random() < 0.8]
        if not live:
            continue
        toks = [(int(r), int(prompt[r] + step[r])) for r in live]
        for r in live:
            step[r] += 1
        passes.append({"phase": DECODE, "tokens": toks, "cells": [(l, route(len(toks))) for l in range(n_layers)]})
    trace = build_trace(meta, passes)
    trace.validate()
    return trace


def _naive_rows(trace):
    out = []
    for p in range(trace.n_passes):
        toks = list(zip(trace.token_request[trace.pass_token_offsets[p]:trace.pass_token_offsets[p + 1]].tolist(),
                        trace.token_position[trace.pass_token_offsets[p]:trace.pass_token_offsets[p + 1]].tolist()))
        for c in range(trace.pass_cell_offsets[p], trace.pass_cell_offsets[p + 1]):
            ex = trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]].tolist()
            k = trace.meta.top_k
            n = len(ex) // k
            for j, tok in enumerate(toks[len(toks) - n:]):
                out.append({"pass": p, "phase": int(trace.pass_phase[p]), "layer": int(trace.cell_layer[c]),
                            "request": tok[0], "position": tok[1], "experts": ex[j * k:(j + 1) * k]})
    return out


def _naive_sequences(rows):
    seqs = defaultdict(list)
    for r in rows:
        if r["phase"] == DECODE:
            seqs[(r["layer"], r["request"])].append(r)
    return {key: sorted(v, key=lambda r: r["position"]) for key, v in seqs.items()}


def _naive_lag(rows, k, lag):
    vals = [len(set(s[i]["experts"]) & set(s[i - lag]["experts"])) / k
            for s in _naive_sequences(rows).values() for i in range(lag, len(s))]
    return sum(vals) / len(vals) if vals else float("nan")


def _naive_hot(rows, k, phase):
    counts: dict[int, dict[int, int]] = defaultdict(dict)  # insertion order = first appearance
    for r in rows:
        if r["phase"] == phase:
            for e in r["experts"]:
                counts[r["layer"]][e] = counts[r["layer"]].get(e, 0) + 1
    return {layer: set(sorted(c, key=lambda e: -c[e])[:k]) for layer, c in counts.items()}


def _naive_static(rows, k, phase, paired):
    hot = _naive_hot(rows, k, phase)
    vals = [len(hot.get(s[i]["layer"], set()) & set(s[i]["experts"])) / k
            for s in _naive_sequences(rows).values() for i in range(1 if paired else 0, len(s))]
    return sum(vals) / len(vals) if vals else float("nan")


def _naive_cross(rows, k, n_experts):
    by_tok = defaultdict(dict)
    for r in rows:
        if r["phase"] == DECODE:
            by_tok[(r["request"], r["position"])][r["layer"]] = r["experts"]
    hits_t = hits_f = n = 0
    for req in sorted({key[0] for key in by_tok}):
        toks = [v for key, v in by_tok.items() if key[0] == req]
        pairs = [(layer, lay[layer], lay[layer + 1]) for lay in toks for layer in lay if layer + 1 in lay]
        for layer, a, b in pairs:
            others = [(x, y) for (ly, x, y) in pairs if ly == layer]
            others.remove((a, b))
            trans = defaultdict(int)
            freq = defaultdict(int)
            for x, y in others:
                for e2 in y:
                    freq[e2] += 1
                    for e1 in x:
                        if e1 in a:
                            trans[e2] += 1
            key_t = sorted(range(n_experts), key=lambda e: (-trans[e], -freq[e], e))[:k]
            key_f = sorted(range(n_experts), key=lambda e: (-freq[e], e))[:k]
            hits_t += len(set(key_t) & set(b))
            hits_f += len(set(key_f) & set(b))
            n += 1
    return (hits_t / (n * k), hits_f / (n * k)) if n else (float("nan"), float("nan"))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6))
def test_predictors_match_a_naive_reference(seed):
    t = _random_trace(seed)
    rows, k = _naive_rows(t), t.meta.top_k
    for lag in (1, 2, 3):
        assert _same(predictors.lag_overlap(t, lag)[0], _naive_lag(rows, k, lag))
    assert _same(predictors.static_coverage(t, "decode")[0], _naive_static(rows, k, DECODE, True))
    assert _same(predictors.static_coverage(t, "prefill", paired=False)[0], _naive_static(rows, k, PREFILL, False))
    cross = predictors.cross_layer_predictability(t)
    ref_t, ref_f = _naive_cross(rows, k, t.meta.n_experts)
    assert _same(cross.transition, ref_t) and _same(cross.frequency, ref_f)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6))
def test_reuse_and_working_sets_match_a_naive_reference(seed):
    t = _random_trace(seed)
    rows = _naive_rows(t)
    n_experts = t.meta.n_experts
    uses = defaultdict(set)
    per_pass = defaultdict(set)
    for r in rows:
        for e in r["experts"]:
            obj = r["layer"] * n_experts + e
            uses[obj].add(r["pass"])
            per_pass[r["pass"]].add(obj)
    hist, first = working_set.reuse_distance_histogram(t)
    ref = defaultdict(int)
    ref_first = defaultdict(int)
    for obj, ps in uses.items():
        ps = sorted(ps)
        ref_first[obj // n_experts] += 1
        for a, b in zip(ps, ps[1:]):
            ref[(obj // n_experts, int(math.floor(math.log2(b - a))))] += 1
    got = {(layer, b): int(v) for (layer, b), v in np.ndenumerate(hist) if v}
    assert got == dict(ref)
    assert {i: int(v) for i, v in enumerate(first) if v} == dict(ref_first)
    assert working_set.pass_working_set(t).tolist() == [len(per_pass[p]) for p in range(t.n_passes)]
    sizes = t.meta.object_bytes
    assert summary.trace_summary(t)["routed_bytes"] == sum(sizes[o // n_experts] for p in per_pass.values() for o in p)
    counts = popularity.layer_expert_counts(t)
    for layer in range(t.meta.n_layers):
        ref_counts = np.zeros(n_experts, dtype=int)
        for r in rows:
            if r["layer"] == layer:
                ref_counts[r["experts"]] += 1
        assert counts[layer].tolist() == ref_counts.tolist()


# ---- BigMoeOnEdge findings.md §1 and "What the routing looks like" ---------------------------------
def _findings_trace(name: str):
    """The shared BigMoeOnEdge CSV through the project's importer: ../shared/traces beside the
    repository, or MOESIM_SHARED_TRACES, or ../../shared/traces for a worktree one level deeper."""
    from moesim.traces.format import io
    roots = [Path(os.environ["MOESIM_SHARED_TRACES"])] if "MOESIM_SHARED_TRACES" in os.environ else []
    roots += [REPO.parent / "shared" / "traces", REPO.parent.parent / "shared" / "traces"]
    for root in roots:
        path = root / "bigmoeonedge" / f"{name}.route.csv"
        if path.exists():
            return io.load_trace(path)
    pytest.skip(f"{name}.route.csv is not in ../shared/traces/bigmoeonedge (set MOESIM_SHARED_TRACES)")


# findings.md §1: temporal, static, static from the prompt (percent); lag profile for qwen
FINDINGS = {"qwen": (38.0, 37.6, 17.9), "gemma": (35.7, 39.6, 26.8)}


@pytest.mark.parametrize("name", ["qwen", "gemma"])
def test_predictors_reproduce_findings_section_1(name):
    p = predictors.predictor_stats(_findings_trace(name))
    temporal, static, prompt = FINDINGS[name]
    # the required tolerance is 0.2 percentage points; these definitions hit the printed digit
    assert 100 * p.temporal == pytest.approx(temporal, abs=0.2)
    assert 100 * p.static == pytest.approx(static, abs=0.2)
    assert 100 * p.static_prompt == pytest.approx(prompt, abs=0.2)
    assert (round(100 * p.temporal, 1), round(100 * p.static, 1), round(100 * p.static_prompt, 1)) == FINDINGS[name]
    assert round(100 * p.random, 1) == 4.7


def test_qwen_lag_profile_and_prompt_budget_reproduce_findings():
    t = _findings_trace("qwen")
    p = predictors.predictor_stats(t)
    assert round(100 * p.lag_profile[1], 1) == 38.0
    assert round(100 * p.lag_profile[8], 1) == 26.7
    # "It improves with budget (qwen reaches 52.0 % at 24 experts/layer)"
    assert round(100 * predictors.static_coverage(t, "prefill", paired=False, budget=24)[0], 1) == 52.0


@pytest.mark.parametrize("name,mean,lo,hi,touched_mib,share", [("qwen", 64, 33, 107, 8386, 50), ("gemma", 67, 52, 97, 7576, 53)])
def test_routing_shape_reproduces_findings(name, mean, lo, hi, touched_mib, share):
    t = _findings_trace(name)
    distinct = popularity.distinct_per_layer(popularity.layer_expert_counts(t, "decode"))
    assert (round(distinct.mean()), distinct.min(), distinct.max()) == (mean, lo, hi)
    s = summary.trace_summary(t, "decode")
    assert round(s["bytes_touched"] / 2**20) == touched_mib
    assert round(100 * s["touched_share"]) == share


def test_qwen_early_layers_route_almost_uniformly_as_findings_section_4_says():
    counts = popularity.layer_expert_counts(_findings_trace("qwen"), "decode")
    cov8 = popularity.topk_coverage(counts, 8)
    assert popularity.distinct_per_layer(counts)[0] == 107
    assert (round(100 * cov8[0], 1), round(100 * cov8[5], 1), round(100 * cov8.mean(), 1)) == (21.5, 43.2, 44.5)
