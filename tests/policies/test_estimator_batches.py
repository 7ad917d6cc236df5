"""Batched estimator updates (score-budget queues cells) must count exactly what one-by-one updates count."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.policies.prefetch.estimators import LayerFrequency, MarkovChain
from moesim.policies.prefetch.ranking import distinct_in_order

N_LAYERS, N_EXPERTS = 4, 6


@st.composite
def cell_streams(draw):
    """Cells in serving order: passes walk the layers (sometimes skipping or restarting), any routing."""
    cells = []
    for p in range(draw(st.integers(1, 4))):
        layer = draw(st.integers(0, 1))
        while layer < N_LAYERS:
            experts = draw(st.lists(st.integers(0, N_EXPERTS - 1), min_size=0, max_size=8))
            cells.append((p, layer, np.array(experts, dtype=np.int64) + layer * N_EXPERTS))
            layer += draw(st.sampled_from([1, 1, 1, 2]))
    split = draw(st.lists(st.integers(0, len(cells)), max_size=3))
    return cells, sorted(split)


def _sequential(cells):
    chain = MarkovChain(N_LAYERS, N_EXPERTS, alpha=1.0)
    for p, layer, routed in cells:
        chain.observe(p, layer, distinct_in_order(routed) - layer * N_EXPERTS)
    return chain


@settings(max_examples=60, deadline=None)
@given(cell_streams())
def test_markov_batches_match_one_by_one(stream):
    cells, cuts = stream
    want = _sequential(cells)
    got = MarkovChain(N_LAYERS, N_EXPERTS, alpha=1.0)
    bounds = [0, *cuts, len(cells)]
    for lo, hi in zip(bounds, bounds[1:]):  # batches split anywhere, links carried across them
        got.observe_many(cells[lo:hi])
    np.testing.assert_array_equal(got.pair, want.pair)
    np.testing.assert_array_equal(got.source, want.source)
    np.testing.assert_array_equal(got.frequency.cells, want.frequency.cells)
    np.testing.assert_array_equal(got.frequency.used, want.frequency.used)


@settings(max_examples=40, deadline=None)
@given(cell_streams())
def test_frequency_batch_matches_one_by_one(stream):
    cells, _ = stream
    want, got = LayerFrequency(N_LAYERS, N_EXPERTS), LayerFrequency(N_LAYERS, N_EXPERTS)
    for _, layer, routed in cells:
        want.observe(layer, distinct_in_order(routed) - layer * N_EXPERTS)
    got.observe_many([(layer, routed) for _, layer, routed in cells])
    np.testing.assert_array_equal(got.cells, want.cells)
    np.testing.assert_array_equal(got.used, want.used)


def test_hand_counted_pair():
    """Pass 0: layer 0 uses {1, 2}, layer 1 uses {3, 3, 4}: pairs (1,3) (1,4) (2,3) (2,4), sources 1 and 2."""
    chain = MarkovChain(2, N_EXPERTS, alpha=1.0)
    chain.observe_many([(0, 0, np.array([1, 2, 1])), (0, 1, np.array([3, 3, 4]) + N_EXPERTS)])
    assert chain.pair[0].sum() == 4 and chain.pair[0][[1, 1, 2, 2], [3, 4, 3, 4]].tolist() == [1, 1, 1, 1]
    assert chain.source[0].tolist() == [0, 1, 1, 0, 0, 0]
    assert chain.frequency.used[1].tolist() == [0, 0, 0, 1, 1, 0]
