"""Small traces whose outcomes are worked out by hand in the comments, one or more per policy.

Conventions: every object is 1 byte, so capacities are slots. simple_trace(cells, n_layers, ...)
gives one pass per entry; object id = layer * n_experts + expert. Outcome codes: 0 hit,
2 compulsory, 3 capacity, 4 collision.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.sim.cache_core import MISS_COLLISION, MISS_COMPULSORY
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.traces.format.trace_meta import PREFILL
from moesim.traces.format.build import simple_trace

# Silberschatz, Galvin and Gagne, "Operating System Concepts", page-replacement chapter: this
# reference string with 3 frames gives 15 faults under FIFO, 12 under LRU and 9 under OPT.
# OPT with bypass does one better (8): at the request for 4 (position 7, never used again) it
# streams 4 instead of evicting 0, which is then hit at position 10; from the miss on 1 at
# position 13 on, both evict alike.
TEXTBOOK = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1]


def _one_per_pass(seq):
    return [[[x]] for x in seq]


def _misses(result):
    return int((result.outcomes >= MISS_COMPULSORY).sum())


def _hits(result):
    return int((result.outcomes == 0).sum())


@pytest.mark.parametrize("policy, faults", [("fifo", 15), ("lru", 12), ("belady", 9), ("belady-bypass", 8)])
@pytest.mark.parametrize("mode", ["event", "sequential"])
def test_textbook_reference_string_fault_counts(replay, policy, faults, mode):
    r = replay(_one_per_pass(TEXTBOOK), policy, capacity=3, mode=mode)
    assert _misses(r) == faults
    assert int((r.outcomes == MISS_COMPULSORY).sum()) == 6  # 7, 0, 1, 2, 3, 4


def test_belady_bypass_streams_an_object_needed_later_than_every_resident(replay):
    # capacity 1, a b a: forced-admit MIN must let b replace a, so a misses again (3 misses);
    # with bypass b's next use (never) is farther than a's (request 2): b streams, a hits.
    forced = replay(_one_per_pass([0, 1, 0]), "belady", capacity=1)
    bypass = replay(_one_per_pass([0, 1, 0]), "belady-bypass", capacity=1)
    assert forced.outcomes.tolist() == [2, 2, 3]
    assert bypass.outcomes.tolist() == [2, 2, 0]
    assert bypass.bypassed.tolist() == [False, True, False]
    assert bypass.counters.bypasses == 1


def test_lfu_evicts_the_least_counted_not_the_least_recent(replay):
    # capacity 2: a a b c b c.  a=2, b=1; c evicts b (count 1 < 2); b evicts c (1 < 2); c evicts b.
    # LRU instead evicts a at c, then hits b and c.
    seq = [0, 0, 1, 2, 1, 2]
    assert replay(_one_per_pass(seq), "lfu", capacity=2).outcomes.tolist() == [2, 0, 2, 2, 3, 3]
    assert replay(_one_per_pass(seq), "lru", capacity=2).outcomes.tolist() == [2, 0, 2, 2, 0, 0]


def test_lfu_breaks_ties_toward_the_object_that_reached_the_count_first(replay):
    # capacity 2: a b b a c a.  b reaches 2 at request 2, a at request 3; c evicts b, a hits.
    r = replay(_one_per_pass([0, 1, 1, 0, 2, 0]), "lfu", capacity=2, mode="sequential")
    assert r.outcomes.tolist() == [2, 2, 0, 0, 2, 0]
    assert r.victims == [(4, 1)]


def test_lfu_decay_lets_recent_popularity_win(replay):
    # capacity 2, one request per pass: a a a b c a.
    # decay 1: a=3, b=1 at pass 4 -> c evicts b, a hits at pass 5 (hits: passes 1, 2, 5).
    # decay 0.1 (applied at each pass start): at pass 4, a = 0.1^4 + 0.1^3 + 0.1^2 = 0.0111 and
    # b = 0.1, so c evicts a, which then misses at pass 5 (hits: passes 1, 2).
    seq = _one_per_pass([0, 0, 0, 1, 2, 0])
    assert replay(seq, "lfu", capacity=2).outcomes.tolist() == [2, 0, 0, 2, 2, 0]
    assert replay(seq, "lfu:decay=0.1", capacity=2).outcomes.tolist() == [2, 0, 0, 2, 2, 3]


def test_least_stale_beats_lru_on_collisions_in_a_multi_token_pass(replay):
    # 2 layers x 4 experts, capacity 2, sequential replay. Pass 0 (prefill, 3 tokens):
    # layer 0 routes 1, 1, 2; layer 1 routes 3, 2, 3 (objects 7, 6, 7). Pass 1: 2 then 6.
    # LRU: ... 7 6 7 leaves order [6, 7]; pass 1: 2 evicts 6, then 6 evicts 7 -> 6 is a
    #      collision (evicted earlier in pass 1).  Misses 6, collisions 1.
    # Least-Stale: the re-hit on 7 (already current) does not move it, so current = [7, 6];
    #      pass 1 makes them stale [7, 6]; 2 evicts 7, then 6 hits.  Misses 5, collisions 0.
    cells = [[[1, 1, 2], [3, 2, 3]], [[2], [2]]]
    lru = replay(cells, "lru", capacity=2, n_layers=2, n_experts=4, top_k=1, phases=[PREFILL, PREFILL],
                 mode="sequential")
    ls = replay(cells, "least-stale", capacity=2, n_layers=2, n_experts=4, top_k=1, phases=[PREFILL, PREFILL],
                mode="sequential")
    assert lru.outcomes.tolist() == [2, 0, 2, 2, 2, 0, 3, 4]
    assert ls.outcomes.tolist() == [2, 0, 2, 2, 2, 0, 3, 0]



@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_least_stale_hit_on_a_stale_object_makes_it_current(engine):
    """Capacity 3, one cell per pass: [a b c], [a], [d], [a] (objects 0, 1, 2, 3).
    Pass 1 makes a, b, c stale; a's hit moves a to current, so at pass 2 stale is [b, c, a] and d
    evicts b, and a hits in pass 3. Were the hit left stale, d would evict a (the head), and a miss."""
    trace = simple_trace([[[0, 1, 2]], [[0]], [[3]], [[0]]], n_layers=1, n_experts=4)
    config = ReplayConfig(policy="least-stale", capacity_bytes=3)
    result = count_replay(trace, config, record_victims=True, engine=engine)
    assert result.outcomes.tolist() == [2, 2, 2, 0, 2, 0]
    assert [obj for _, obj in result.victims] == [1]

@pytest.mark.parametrize("policy, outcomes, collisions", [
    # LRU: pass 0: 1 miss, prefetch 5, 2 evicts 1, 5 hits (moves to MRU: [2, 5]).
    #      pass 1: 1 evicts 2, 2 evicts 5 (collision), 5 evicts 1 (collision).
    ("lru", [2, 2, 0, 3, 4, 4], 2),
    # Least-Stale: the prefetched 5 stays ahead of 2 in current ([5, 2]); pass 1 makes them stale;
    #      1 evicts 5, 2 hits (stale -> current), 5 evicts 1 (collision).
    ("least-stale", [2, 2, 0, 3, 0, 4], 1),
])
def test_least_stale_beats_lru_on_collisions_with_prefetch_marked_insertions(make_core, policy, outcomes, collisions):
    # 3 layers x 2 experts, capacity 2; both passes route objects 1 (layer 0), 2 (layer 1),
    # 5 (layer 2); after layer 0 of pass 0 a prefetcher brings object 5 in.
    core = make_core(policy, n_objects=6, capacity=2, n_layers=3)
    got = []
    for p in range(2):
        core.begin_pass(p)
        for layer, obj in enumerate((1, 2, 5)):
            outs, _ = core.serve_cell([obj])
            got += outs
            if p == 0 and layer == 0:
                assert core.prefetch(5) == []
                core.fill(5)
    assert got == outcomes
    assert got.count(MISS_COLLISION) == collisions
    assert core.counters.prefetch_useful == 1


def test_lru_ds_spares_the_next_layer(replay):
    # 3 layers x 2 experts, capacity 2, protect 1; objects 0 (layer 0), 2 (layer 1), 4 (layer 2).
    # Both passes route 0, 2, 4.  At pass 0 layer 2, LRU evicts 0; lru-ds spares 0 (layer 0 runs
    # next, cyclically) and evicts 2 instead.  Pass 1: lru-ds hits 0; at layer 1 the next layer is
    # 2, so 4 (older) is spared and 0 goes; 4 then hits.  LRU misses all three (two collisions).
    cells = [[[0], [0], [0]], [[0], [0], [0]]]
    lru = replay(cells, "lru", capacity=2, n_layers=3, n_experts=2)
    ds = replay(cells, "lru-ds:protect=1", capacity=2, n_layers=3, n_experts=2)
    assert lru.outcomes.tolist() == [2, 2, 2, 3, 4, 4]
    assert ds.outcomes.tolist() == [2, 2, 2, 0, 3, 0]
    assert ds.victims == [(2, 2), (4, 0)]


def test_moe_infinity_weighs_frequency_by_layer_proximity(replay):
    # 2 layers x 2 experts, capacity 2; objects 0, 1 (layer 0) and 2 (layer 1).
    # passes 0-2 route 0 and 2; pass 3 routes 0 only; pass 4 routes 1 (layer 0); pass 5 routes 2.
    # At pass 4 (current layer 0): counts 0 -> 4, 2 -> 3.  d(layer 0) = (0-0-1) mod 2 = 1, factor
    # 1 - 1/2; d(layer 1) = 0, factor 1.  Priorities: object 0 4 * 0.5 = 2, object 2 3 * 1 = 3, so
    # object 0 goes (LRU would evict 2, touched longer ago) and 2 hits at pass 5.
    cells = [[[0], [0]], [[0], [0]], [[0], [0]], [[0], None], [[1], None], [None, [0]]]
    mi = replay(cells, "moe-infinity", capacity=2, n_layers=2, n_experts=2)
    lru = replay(cells, "lru", capacity=2, n_layers=2, n_experts=2)
    assert mi.outcomes.tolist() == [2, 2, 0, 0, 0, 0, 0, 2, 0]
    assert mi.victims == [(7, 0)]
    assert lru.outcomes.tolist() == [2, 2, 0, 0, 0, 0, 0, 2, 3]


def test_static_hot_pins_the_profile_hottest_and_runs_lru_on_the_rest(replay):
    # 1 layer, capacity 2, share 0.5 -> one pin.  Requests a b a c a d a b: a is hottest (4).
    # a is loaded before the first request, so all four a's hit; the one LRU slot holds b, c, d, b
    # in turn: misses b c d (compulsory) and b (capacity).  Plain LRU with 2 slots hits a 3 times.
    seq = _one_per_pass([0, 1, 0, 2, 0, 3, 0, 1])
    hot = replay(seq, "static-hot", capacity=2)
    assert hot.outcomes.tolist() == [0, 2, 0, 2, 0, 2, 0, 3]
    assert _hits(replay(seq, "lru", capacity=2)) == 3
    # share 1: a and b pinned (b 2 requests beats c, d); c and d find no room and stream through.
    full = replay(seq, "static-hot:share=1.0", capacity=2)
    assert full.outcomes.tolist() == [0, 0, 0, 2, 0, 2, 0, 0]
    assert full.bypassed.sum() == 2


def test_static_hot_profile_prefix_only_sees_its_passes(replay):
    # Profile on the first 2 passes (b b): b is pinned, although a is hotter over the whole trace.
    seq = _one_per_pass([1, 1, 0, 0, 0, 0])
    r = replay(seq, "static-hot:profile_passes=2", capacity=2)
    assert r.outcomes.tolist() == [0, 0, 2, 0, 0, 0]
    assert r.core.pinned[1] == 1 and r.core.pinned[0] == 0


def test_slru_protects_objects_hit_twice_from_a_scan(replay):
    # capacity 3, protected share 1/3 (one slot): a a b c d a.  The hit promotes a to protected;
    # the scan b c d evicts from probation only (d evicts b), so a hits.  LRU evicts a at d.
    seq = _one_per_pass([0, 0, 1, 2, 3, 0])
    slru = replay(seq, "slru:protected_share=0.3334", capacity=3)
    assert slru.outcomes.tolist() == [2, 0, 2, 2, 2, 0]
    assert replay(seq, "lru", capacity=3).outcomes.tolist() == [2, 0, 2, 2, 2, 3]


def test_slru_demotes_when_protected_overflows(replay):
    # capacity 3, one protected slot: a a b b c d a.  b's hit promotes b and demotes a to
    # probation's MRU end; probation [a, c] then d evicts a; a misses and evicts c.
    seq = _one_per_pass([0, 0, 1, 1, 2, 3, 0])
    r = replay(seq, "slru:protected_share=0.3334", capacity=3)
    assert r.outcomes.tolist() == [2, 0, 2, 0, 2, 2, 3]
    assert [v for _, v in r.victims] == [0, 2]
    assert sorted(r.core.resident_objects()) == [0, 1, 3]


def test_arc_keeps_a_twice_used_object_through_a_one_time_scan(replay):
    # capacity 2: a a b c a.  a's hit puts it in T2; b, c enter T1 (p = 0 < |T1|), so c evicts b
    # (T1's LRU), not a; a hits.  LRU evicts a at c.
    seq = _one_per_pass([0, 0, 1, 2, 0])
    assert replay(seq, "arc", capacity=2).outcomes.tolist() == [2, 0, 2, 2, 0]
    assert replay(seq, "lru", capacity=2).outcomes.tolist() == [2, 0, 2, 2, 3]


def test_fifo_ignores_hits(replay):
    # capacity 2: a b a c a.  FIFO evicts a (first in) at c despite its hit; LRU evicts b.
    seq = _one_per_pass([0, 1, 0, 2, 0])
    assert replay(seq, "fifo", capacity=2).outcomes.tolist() == [2, 2, 0, 2, 3]
    assert replay(seq, "lru", capacity=2).outcomes.tolist() == [2, 2, 0, 2, 0]


def test_random_victims_are_uniform_over_eligible_objects_and_seeded(make_core):
    # 4 residents, object 1 in use: over 2000 seeds the first victim is 0, 2 or 3, each about 1/3
    # (standard error 0.011, so 0.04 is over 3.5 of them).
    counts = {0: 0, 1: 0, 2: 0, 3: 0}
    for seed in range(2000):
        core = make_core("random", n_objects=6, capacity=4, seed=seed)
        core.begin_pass(0)
        for obj in range(4):
            core.serve_cell([obj])
        core.begin_cell([1])
        (victim,) = core.admit(5)
        counts[victim] += 1
    assert counts[1] == 0
    for obj in (0, 2, 3):
        assert abs(counts[obj] / 2000 - 1 / 3) < 0.04, counts
    # the same seed gives the same victim sequence; another seed a different one
    def victims(seed):
        core = make_core("random", n_objects=40, capacity=5, seed=seed)
        core.begin_pass(0)
        out = []
        for obj in np.random.default_rng(0).integers(0, 40, 200).tolist():
            core.serve_cell([obj], victims_out=out)
        return out
    assert victims(1) == victims(1)
    assert victims(1) != victims(2)
