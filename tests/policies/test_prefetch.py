"""Prefetch policies, driven cell by cell by a tiny local loop (observe, propose), not by the engine.

Expected proposals are hand-computed on small traces; the Markov scores are also checked against
an independent dict-based count of the documented formula; the noisy oracle's precision and recall
are measured over a long synthetic stream; score-budget's byte budget is checked as a property.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchView
from moesim.policies.registry import available, parse_spec
from moesim.sim.plan_policies import make_context
from moesim.traces.format.trace_meta import TraceMeta
from moesim.traces.format.build import build_trace, simple_trace

# ---- helpers ---------------------------------------------------------------------------------


def make_ctx(trace, with_trace: bool = True, trace_name: str | None = None) -> PolicyContext:
    """The run's context as the planner builds it (seed 0, no future), with the trace when asked."""
    return dataclasses.replace(make_context(trace, 0, None, offline=with_trace), trace_name=trace_name)


def build(spec: str, trace, **ctx_kw):
    return parse_spec(spec, "prefetch").build(make_ctx(trace, **ctx_kw))


def view_of(trace, c: int, present=frozenset(), link: float = 0.0, window: float = 0.0,
            cell_pass=None, objs=None) -> PrefetchView:
    cell_pass = trace.cell_pass() if cell_pass is None else cell_pass
    objs = trace.object_ids() if objs is None else objs
    lo, hi = trace.cell_offsets[c], trace.cell_offsets[c + 1]
    return PrefetchView(
        pass_index=int(cell_pass[c]),
        cell=c,
        layer=int(trace.cell_layer[c]),
        routed=objs[lo:hi],
        resident=lambda obj: obj in present,
        link_bytes_per_s=link,
        compute_window_s=window,
    )


def drive(policy, trace, present=frozenset(), link: float = 0.0, window: float = 0.0,
          observe_first: bool = False) -> list[list[tuple[int, float]]]:
    """Proposals (obj, priority) after every cell starts; the policy observes every served cell."""
    out = []
    objs = trace.object_ids()
    cell_pass = trace.cell_pass()
    for c in range(trace.n_cells):
        lo, hi = trace.cell_offsets[c], trace.cell_offsets[c + 1]
        args = (int(cell_pass[c]), c, int(trace.cell_layer[c]), objs[lo:hi])
        if observe_first:
            policy.observe(*args)
        proposals = policy.propose(view_of(trace, c, present, link, window, cell_pass, objs))
        if not observe_first:
            policy.observe(*args)
        out.append([(r.obj, r.priority) for r in proposals])
    return out


def objs_of(proposals: list[tuple[int, float]]) -> list[int]:
    return [o for o, _ in proposals]


# 3 layers x 4 experts, one token per pass, top-2; object id = layer * 4 + expert
T1_CELLS = [
    [[0, 1], [2, 3], [1, 2]],
    [[1, 3], [2, 0], [3, 1]],
    [[0, 1], [2, 3], [0, 2]],
]


def t1(object_bytes=1):
    return simple_trace(T1_CELLS, n_layers=3, n_experts=4, top_k=2, object_bytes=object_bytes)


def random_trace(n_passes: int, n_layers: int, n_experts: int, top_k: int, seed: int):
    rng = np.random.default_rng(seed)
    cells = [[sorted(rng.choice(n_experts, top_k, replace=False).tolist()) for _ in range(n_layers)]
             for _ in range(n_passes)]
    return simple_trace(cells, n_layers=n_layers, n_experts=n_experts, top_k=top_k)


# ---- registry --------------------------------------------------------------------------------

REQUIRED = ["none", "oracle", "previous-pass", "frequency", "markov", "gate-lookahead", "score-budget",
            "noisy-oracle"]  # DESIGN.md's required set
ALL = [r.name for r in available("prefetch")]  # every registered one: a new policy is tested with no edit here


def test_every_prefetch_policy_is_registered_with_documented_params():
    entries = {r.name: r for r in available("prefetch")}
    assert set(REQUIRED) <= set(entries)
    for name in ALL:
        entry = entries[name]
        assert entry.doc, name
        ptype = entry.params_type()
        if ptype is not None:
            for f in dataclasses.fields(ptype):
                assert f.metadata.get("help"), (name, f.name)
    assert entries["oracle"].cls.offline and entries["noisy-oracle"].cls.offline
    assert not entries["markov"].cls.offline and not entries["gate-lookahead"].cls.offline


@pytest.mark.parametrize("spec", [
    "oracle:lookahead=0", "previous-pass:lookahead=0", "frequency:k=-1", "markov:alpha=0",
    "markov:n=-2", "score-budget:source=psychic", "score-budget:min_score=1", "noisy-oracle:precision=0",
    "noisy-oracle:recall=1.5", "noisy-oracle:seed=-1", "gate-lookahead:lookahead=0", "oracle:depth=2",
])
def test_bad_parameters_are_user_errors(spec):
    with pytest.raises(UserError):
        parse_spec(spec, "prefetch")


@pytest.mark.parametrize("name", ["oracle", "noisy-oracle", "gate-lookahead"])
def test_trace_reading_policies_refuse_a_context_without_trace(name):
    with pytest.raises(UserError, match=name):
        build(name, t1(), with_trace=False)


# ---- none and oracle -------------------------------------------------------------------------


def test_none_proposes_nothing():
    assert all(p == [] for p in drive(build("none", t1()), t1()))


def test_oracle_proposes_the_next_cell_of_the_pass():
    got = [objs_of(p) for p in drive(build("oracle", t1()), t1())]
    # pass 0: l1 = {6, 7}, l2 = {9, 10}; pass 1: l1 experts 2, 0 -> 6, 4 (first-request order)
    assert got == [[6, 7], [9, 10], [], [6, 4], [11, 9], [], [6, 7], [8, 10], []]


def test_oracle_lookahead_two_puts_the_nearer_layer_first():
    props = drive(build("oracle:lookahead=2", t1()), t1())
    assert props[0] == [(6, -1.0), (7, -1.0), (9, -2.0), (10, -2.0)]
    assert props[1] == [(9, -1.0), (10, -1.0)]  # never into the next pass
    assert props[2] == []


def test_oracle_proposes_present_objects_too_so_the_planner_protects_them_and_dedupes_tokens():
    trace = simple_trace([[[0, 1], [2, 3, 3, 1]]], n_layers=2, n_experts=4, top_k=2)
    assert objs_of(drive(build("oracle", trace), trace, present={7})[0]) == [6, 7, 5]


# ---- previous-pass ---------------------------------------------------------------------------


def test_previous_pass_proposes_what_the_layer_used_last_pass():
    got = [objs_of(p) for p in drive(build("previous-pass", t1()), t1())]
    assert got == [[], [], [], [6, 7], [9, 10], [], [6, 4], [11, 9], []]


def test_previous_pass_lookahead_two_and_priorities():
    props = drive(build("previous-pass:lookahead=2", t1()), t1())
    assert props[3] == [(6, -0.5), (7, -0.5), (9, -1.5), (10, -1.5)]


def test_previous_pass_orders_a_multi_token_layer_by_token_count():
    # pass 0 layer 1: expert 3 routed by two tokens, 1 and 2 by one each
    trace = simple_trace([[[0, 1], [1, 3, 3, 2]], [[0, 1], [0, 2]]], n_layers=2, n_experts=4, top_k=2)
    props = drive(build("previous-pass", trace), trace)
    assert props[2] == [(7, -0.5), (5, -0.75), (6, -0.75)]


def test_previous_pass_never_offers_the_current_pass_as_the_previous_one():
    # a pass whose cells are out of layer order: layer 1 runs before layer 0
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=1, object_bytes=[1, 1])
    trace = build_trace(meta, [{"cells": [(0, [[0]]), (1, [[1]])]}, {"cells": [(1, [[2]]), (0, [[3]])]}])
    props = drive(build("previous-pass", trace), trace)
    # pass 1, layer 0 (cell 3): layer 1 already ran in this pass (expert 2); the previous pass used 1
    assert props[3] == [(5, -0.5)]


# ---- frequency -------------------------------------------------------------------------------


def test_frequency_top_k_counts_cells_so_far():
    props = drive(build("frequency:k=2", t1()), t1())
    assert props[0] == []  # nothing counted yet
    # after passes 0 and 1, layer 1 used e2 twice, e0 and e3 once (tie -> lower id)
    assert props[6] == [(6, -0.5), (4, -0.75)]
    # layer 2 used e1 twice, e2 and e3 once
    assert objs_of(props[7]) == [9, 10]
    assert objs_of(drive(build("frequency:k=1", t1()), t1())[6]) == [6]
    # k = 0: as many as the current cell uses (2)
    assert drive(build("frequency", t1()), t1())[6] == props[6]


def test_frequency_counts_cells_not_tokens():
    # layer 1: four tokens of one cell use expert 3; expert 2 is used by two cells of one token each
    trace = simple_trace([[[0], [3, 3, 3, 3]], [[0], [2]], [[0], [2]], [[0], [1]]],
                         n_layers=2, n_experts=4, top_k=1)
    assert objs_of(drive(build("frequency:k=1", trace), trace)[6]) == [6]


# ---- markov ----------------------------------------------------------------------------------


def test_markov_hand_computed_scores():
    props = drive(build("markov:n=3", t1()), t1())
    # at pass 2 layer 0 (experts 0, 1): mean P(y|x) = e2 1, e3 0.625, e0 0.375 (see estimators.py)
    assert props[6] == [(6, -0.5), (7, -1 + 0.5 * 0.625), (4, -1 + 0.5 * 0.375)]
    assert drive(build("markov", t1()), t1())[6] == props[6][:2]


def test_markov_lookahead_two_chains_the_estimate():
    props = drive(build("markov:lookahead=2", t1()), t1())
    # layer 2 scores: e1 1, e2 0.53125, e3 0.46875 (hand-computed chain through layer 1)
    assert props[6][2:] == [(9, -1.5), (10, -2 + 0.5 * 0.53125)]


def _reference_markov_scores(trace, upto_cell: int, layer: int, current: list[int], alpha: float) -> dict:
    """P(y at layer+1) by plain counting of the documented formula, over cells before `upto_cell`."""
    n_e = trace.meta.n_experts
    pair: Counter = Counter()
    src: Counter = Counter()
    used: Counter = Counter()
    cells_at: Counter = Counter()
    prev = None
    cell_pass = trace.cell_pass()
    for c in range(upto_cell):
        lyr = int(trace.cell_layer[c])
        es = set(int(e) for e in trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]])
        cells_at[lyr] += 1
        for e in es:
            used[(lyr, e)] += 1
        if prev is not None and prev[0] == cell_pass[c] and prev[1] == lyr - 1:
            for x in prev[2]:
                src[(lyr - 1, x)] += 1
                for y in es:
                    pair[(lyr - 1, x, y)] += 1
        prev = (cell_pass[c], lyr, es)
    scores = {}
    for y in range(n_e):
        if used[(layer + 1, y)] == 0:
            continue
        f = used[(layer + 1, y)] / cells_at[layer + 1]
        scores[y] = sum((pair[(layer, x, y)] + alpha * f) / (src[(layer, x)] + alpha) for x in current) / len(current)
    return scores


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), alpha=st.sampled_from([0.1, 1.0, 4.0]))
def test_markov_matches_an_independent_count(seed, alpha):
    trace = random_trace(n_passes=12, n_layers=3, n_experts=6, top_k=2, seed=seed)
    props = drive(build(f"markov:n=6:alpha={alpha}", trace), trace)
    for c in range(trace.n_cells):
        layer = int(trace.cell_layer[c])
        if layer == 2:
            assert props[c] == []
            continue
        current = sorted(set(int(e) for e in trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]]))
        ref = _reference_markov_scores(trace, c, layer, current, alpha)
        got = {o - (layer + 1) * 6: p for o, p in props[c]}
        assert set(got) == set(ref)
        for y, score in ref.items():
            assert got[y] == pytest.approx(-1 + 0.5 * score, abs=1e-12)


def test_markov_learns_a_deterministic_chain():
    """Layer l+1 uses sigma_l(x) for each expert x of layer l; the partner expert is random."""
    n_layers, n_e, k = 4, 16, 2
    rng = np.random.default_rng(7)
    passes = []
    for _ in range(100):
        cur = rng.choice(n_e, k, replace=False).tolist()
        cells = [sorted(cur)]
        for lyr in range(n_layers - 1):
            cur = [(5 * x + lyr + 1) % n_e for x in cur]
            cells.append(sorted(cur))
        passes.append(cells)
    trace = simple_trace(passes, n_layers=n_layers, n_experts=n_e, top_k=k)
    markov = drive(build("markov", trace), trace)
    freq = drive(build("frequency", trace), trace)
    oracle = drive(build("oracle", trace), trace)
    start = 60 * n_layers  # after a warm-up every expert has been a source many times
    for c in range(start, trace.n_cells):
        assert sorted(objs_of(markov[c])) == sorted(objs_of(oracle[c])), c
    # the frequency predictor cannot know the chain: it misses often
    wrong = sum(sorted(objs_of(freq[c])) != sorted(objs_of(oracle[c])) for c in range(start, trace.n_cells))
    assert wrong > (trace.n_cells - start) // 2


def test_markov_learns_only_from_adjacent_layers():
    # pass 1 has no layer-1 cell: its layer 0 -> layer 2 pair must not count as a layer 1 -> 2 transition
    trace = simple_trace([[[0], [1], [2]], [[3], None, [0]], [[1], [3], [2]]], n_layers=3, n_experts=4, top_k=1)
    props = drive(build("markov:n=2", trace), trace)
    # cell 6 (pass 2, layer 1, expert 3, never a layer-1 source): P(y | 3) = f_2(y) = 1/2 for e0 and e2
    assert props[6] == [(8, -0.75), (10, -0.75)]


def test_markov_refuses_a_table_too_large():
    trace = simple_trace([[[0], [1]]], n_layers=2, n_experts=20_000, top_k=1)
    with pytest.raises(UserError, match="too large"):
        build("markov", trace)


@pytest.mark.parametrize("spec", ["previous-pass:lookahead=2", "frequency:lookahead=2", "markov:lookahead=2",
                                  "score-budget:source=markov:lookahead=2"])
def test_online_policies_do_not_depend_on_observe_order(spec):
    trace = random_trace(n_passes=10, n_layers=4, n_experts=8, top_k=2, seed=3)
    a = drive(build(spec, trace), trace, link=1e9, window=1.0)
    b = drive(build(spec, trace), trace, link=1e9, window=1.0, observe_first=True)
    assert a == b


# ---- gate-lookahead --------------------------------------------------------------------------


def t1_with_predictions(scores: bool = True):
    trace = t1()
    # row c: layer(c)+1 picks from layer(c)'s state; the last layer's rows are padding
    ids = np.array([[3, 2], [1, 0], [-1, -1], [2, 1], [3, 1], [-1, -1], [2, 3], [0, 3], [-1, -1]], dtype=np.int16)
    trace.predictions["lookahead_1"] = ids
    if scores:
        trace.predictions["lookahead_1_score"] = np.array(
            [[0.3, 0.6], [0.5, 0.2], [np.nan, np.nan], [0.7, 0.2], [0.4, 0.4], [0, 0], [0.5, 0.5], [0.1, 0.9],
             [0, 0]], dtype=np.float32)
    return trace


def test_gate_lookahead_proposes_the_recorded_picks_by_probability():
    trace = t1_with_predictions()
    props = drive(build("gate-lookahead", trace), trace)
    assert props[0] == [(6, pytest.approx(-1 + 0.5 * 0.6)), (7, pytest.approx(-1 + 0.5 * 0.3))]
    assert [objs_of(p) for p in props] == [[6, 7], [9, 8], [], [6, 5], [11, 9], [], [6, 7], [11, 8], []]


def test_gate_lookahead_without_scores_keeps_the_recorded_order():
    trace = t1_with_predictions(scores=False)
    props = drive(build("gate-lookahead", trace), trace, present={9})
    assert props[0] == [(7, -0.75), (6, -0.75)]
    assert objs_of(props[1]) == [8]


def test_gate_lookahead_combines_tokens_picking_the_same_expert():
    trace = simple_trace([[[0, 1, 2, 3], [0, 1, 2, 3]]], n_layers=2, n_experts=4, top_k=2)
    trace.predictions["lookahead_1"] = np.array([[2, 3, 2, 1], [-1, -1, -1, -1]], dtype=np.int16)
    trace.predictions["lookahead_1_score"] = np.array([[0.5, 0.4, 0.5, 0.1], [0, 0, 0, 0]], dtype=np.float32)
    props = drive(build("gate-lookahead", trace), trace)
    # expert 2: 1 - 0.5 * 0.5 = 0.75
    assert [o for o, _ in props[0]] == [6, 7, 5]
    assert props[0][0][1] == pytest.approx(-1 + 0.5 * 0.75)


def test_gate_lookahead_names_the_trace_and_the_missing_predictions():
    with pytest.raises(UserError) as err:
        build("gate-lookahead", t1(), trace_name="traces/olmoe.parquet")
    text = str(err.value)
    assert "traces/olmoe.parquet" in text and "lookahead_1" in text and "\n" not in text
    with pytest.raises(UserError, match="lookahead_2"):
        build("gate-lookahead:lookahead=2", t1_with_predictions(), trace_name="t.parquet")


def test_gate_lookahead_rejects_malformed_predictions():
    trace = t1_with_predictions()
    trace.predictions["lookahead_1"] = trace.predictions["lookahead_1"].copy()
    trace.predictions["lookahead_1"][4, 0] = 4  # only 4 experts
    with pytest.raises(UserError, match="cell 4"):
        build("gate-lookahead", trace)
    trace = t1_with_predictions()
    trace.predictions["lookahead_1_score"][1, 1] = np.nan  # a real pick with no probability
    with pytest.raises(UserError, match="cell 1"):
        build("gate-lookahead", trace)


# ---- score-budget ----------------------------------------------------------------------------


def test_score_budget_recorded_spends_exactly_the_window():
    trace = t1_with_predictions()
    trace.meta.object_bytes = [10, 10, 10]
    # budget 25 bytes per window: two 10-byte objects fit, a third would not
    props = drive(build("score-budget", trace), trace, link=25.0, window=1.0)
    assert props[0] == [(6, pytest.approx(0.6)), (7, pytest.approx(0.3))]
    props = drive(build("score-budget:source=recorded", trace), trace, link=19.0, window=1.0)
    assert [objs_of(p) for p in props] == [[6], [9], [], [6], [11], [], [6], [11], []]
    # min_score cuts low probabilities
    props = drive(build("score-budget:min_score=0.35", trace), trace, link=100.0, window=1.0)
    assert objs_of(props[0]) == [6] and objs_of(props[7]) == [11]
    assert all(p == [] for p in drive(build("score-budget", trace), trace, link=0.0, window=1.0))


def test_score_budget_stops_at_the_first_object_that_does_not_fit():
    # lookahead 2 with layer 2 objects three times larger
    trace = simple_trace(T1_CELLS, n_layers=3, n_experts=4, top_k=2, object_bytes=[10, 10, 30])
    trace.predictions["lookahead_1"] = np.array([[2, 3]] * 9, dtype=np.int16)
    trace.predictions["lookahead_1_score"] = np.array([[0.9, 0.2]] * 9, dtype=np.float32)
    trace.predictions["lookahead_2"] = np.array([[1, 0]] * 9, dtype=np.int16)
    trace.predictions["lookahead_2_score"] = np.array([[0.5, 0.1]] * 9, dtype=np.float32)
    policy = build("score-budget:lookahead=2", trace)
    # order by probability: 6 (0.9, 10 B), 9 (0.5, 30 B), 7 (0.2, 10 B), 8 (0.1, 30 B)
    got = policy.propose(view_of(trace, 0, link=45.0, window=1.0))
    assert [r.obj for r in got] == [6, 9]
    got = policy.propose(view_of(trace, 0, link=35.0, window=1.0))
    assert [r.obj for r in got] == [6]  # 9 does not fit: stop, do not jump to the smaller 7
    got = policy.propose(view_of(trace, 0, present={9}, link=35.0, window=1.0))
    assert [r.obj for r in got] == [6, 7]  # a present object costs nothing


def test_score_budget_frequency_and_markov_sources():
    trace = t1()
    props = drive(build("score-budget:source=frequency", trace), trace, link=2.0, window=1.0)
    # before pass 2 layer 1 frequencies: e2 1.0, e0 0.5, e3 0.5 (stable: e0 before e3)
    assert props[6] == [(6, 1.0), (4, 0.5)]
    props = drive(build("score-budget:source=markov", trace), trace, link=3.0, window=1.0)
    assert props[6] == [(6, 1.0), (7, 0.625), (4, 0.375)]
    assert build("score-budget", trace).source == "markov"
    assert build("score-budget", t1_with_predictions()).source == "recorded"
    assert build("score-budget", t1_with_predictions(scores=False)).source == "markov"


def test_score_budget_recorded_needs_scores():
    with pytest.raises(UserError, match="lookahead_1_score"):
        build("score-budget:source=recorded", t1_with_predictions(scores=False), trace_name="t.parquet")


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.floats(0.01, 1.0), st.integers(1, 50), st.booleans()), min_size=1, max_size=8),
    budget=st.floats(0.0, 300.0),
)
def test_score_budget_respects_the_byte_budget_exactly(data, budget):
    """Proposals are the longest prefix of the non-present candidates (by probability) that fits."""
    n = len(data)
    trace = simple_trace([[[0], [0]]], n_layers=2, n_experts=n, top_k=1)
    ids = np.arange(n, dtype=np.int16)[None, :].repeat(2, axis=0)
    trace.predictions["lookahead_1"] = ids
    trace.predictions["lookahead_1_score"] = np.array([[p for p, _, _ in data]] * 2, dtype=np.float64)
    ctx = make_ctx(trace)
    sizes = np.concatenate([np.ones(n, dtype=np.int64), np.array([s for _, s, _ in data], dtype=np.int64)])
    ctx = PolicyContext(**{**ctx.__dict__, "object_bytes": sizes})
    policy = parse_spec("score-budget", "prefetch").build(ctx)
    present = {n + i for i, (_, _, pres) in enumerate(data) if pres}
    got = [r.obj for r in policy.propose(view_of(trace, 0, present, link=budget, window=1.0))]
    order = sorted(range(n), key=lambda i: -data[i][0])  # stable: ties keep id order
    expected, spent = [], 0
    for i in order:
        if n + i in present:
            continue
        if spent + data[i][1] > budget:
            break
        expected.append(n + i)
        spent += data[i][1]
    assert got == expected
    assert sum(int(sizes[o]) for o in got) <= budget


# ---- noisy oracle ----------------------------------------------------------------------------


def _measure(policy_props, oracle_props):
    tp = proposed = true = 0
    for got, want in zip(policy_props, oracle_props):
        g, w = set(objs_of(got)), set(objs_of(want))
        tp += len(g & w)
        proposed += len(g)
        true += len(w)
    return tp / proposed, tp / true


@pytest.fixture(scope="module")
def long_trace():
    return random_trace(n_passes=3000, n_layers=4, n_experts=32, top_k=4, seed=11)


@pytest.mark.parametrize("precision,recall", [(0.6, 0.7), (0.9, 0.3), (0.25, 1.0)])
def test_noisy_oracle_hits_its_precision_and_recall(long_trace, precision, recall):
    oracle = drive(build("oracle", long_trace), long_trace)
    noisy = drive(build(f"noisy-oracle:precision={precision}:recall={recall}:seed=5", long_trace), long_trace)
    got_p, got_r = _measure(noisy, oracle)
    assert got_p == pytest.approx(precision, abs=0.015)
    assert got_r == pytest.approx(recall, abs=0.015)
    for c in range(0, long_trace.n_cells, 97):  # false objects come from the target layer
        layer = int(long_trace.cell_layer[c]) + 1
        assert all(o // 32 == layer for o in objs_of(noisy[c]))
    # true and false objects are shuffled: a false one leads about as often as its share
    led = [set(objs_of(w)).isdisjoint(objs_of(n)[:1]) for n, w in zip(noisy, oracle) if n]
    assert sum(led) / len(led) == pytest.approx(1 - precision, abs=0.06)


def test_noisy_oracle_perfect_is_the_oracle():
    trace = random_trace(n_passes=30, n_layers=4, n_experts=16, top_k=3, seed=2)
    oracle = drive(build("oracle:lookahead=2", trace), trace)
    noisy = drive(build("noisy-oracle:lookahead=2", trace), trace)
    for a, b in zip(oracle, noisy):
        assert sorted(a) == sorted(b)


def test_noisy_oracle_is_deterministic_and_independent_of_residency():
    trace = random_trace(n_passes=50, n_layers=3, n_experts=16, top_k=2, seed=4)
    spec = "noisy-oracle:precision=0.5:recall=0.8:seed=9"
    a = drive(build(spec, trace), trace)
    assert a == drive(build(spec, trace), trace)
    assert a != drive(build(spec.replace("seed=9", "seed=10"), trace), trace)
    present = set(range(0, trace.n_objects, 3))
    filtered = drive(build(spec, trace), trace, present=present)
    assert filtered == [[(o, p) for o, p in props if o not in present] for props in a]
    # lookahead 2 predicts each target cell the same way as lookahead 1 does
    two = drive(build(spec + ":lookahead=2", trace), trace)
    for c in range(trace.n_cells):
        assert [x for x in two[c] if x[1] == -1.0] == a[c]


def test_noisy_oracle_with_too_few_false_objects_caps_them():
    # 4 experts, 3 true: at most one false object per cell, whatever the precision
    trace = random_trace(n_passes=40, n_layers=2, n_experts=4, top_k=3, seed=1)
    props = drive(build("noisy-oracle:precision=0.1", trace), trace)
    assert all(len(p) <= 4 for p in props)
    assert any(len(p) == 4 for p in props)


# ---- every policy ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_proposals_are_later_layers_of_the_pass_absent_and_distinct(name):
    trace = random_trace(n_passes=8, n_layers=4, n_experts=8, top_k=2, seed=21)
    trace.predictions["lookahead_1"] = trace.expert.reshape(-1, 2)[np.r_[1:trace.n_cells, 0]].astype(np.int16)
    trace.predictions["lookahead_1_score"] = np.full((trace.n_cells, 2), 0.5, dtype=np.float32)
    present = set(range(0, trace.n_objects, 5))
    props = drive(build(name, trace), trace, present=present, link=1e6, window=1.0)
    for c, p in enumerate(props):
        layer = int(trace.cell_layer[c])
        objs = objs_of(p)
        assert len(objs) == len(set(objs))
        if name != "oracle":  # the oracle also names present objects, for the planner to protect
            assert not set(objs) & present
        assert all(layer < o // 8 <= min(layer + 1, 3) for o in objs)
        prios = [pr for _, pr in p]
        assert prios == sorted(prios, reverse=True)
    if name != "none":
        assert any(props)
