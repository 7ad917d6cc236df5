"""Reports open with the answer: hand-built runs, hand-derived lines; tick spacing on log axes."""

from __future__ import annotations

import pandas as pd

from moesim.reports import tables
from moesim.reports.answer_first import answer_lines
from moesim.reports.plots import link_name, spaced_ticks


def _timed(run_id, eviction, prefetch, tpot, offline=False, late=0, issued=0, bound=0.05):
    return {"run_id": run_id, "status": "ok", "engine": "timed", "trace": "t", "profile": "p", "eviction": eviction,
            "prefetch": prefetch, "miss": "stall", "policy": eviction + ("" if prefetch == "none" else f" pf={prefetch}"),
            "offline": offline, "lossy": False, "capacity": "10%", "capacity_bytes": 10, "capacity_share": 0.1,
            "scope": "global", "mode": "event", "seed": 0, "tpot_mean_s": tpot, "tpot_bound_s": bound,
            "prefetch_issued": issued, "prefetch_late": late, "misses": 1}


def test_best_deployable_run_gain_and_bound_by_hand():
    runs = tables.conform(pd.DataFrame([
        _timed("a", "lru", "none", 0.200),
        _timed("b", "lfu", "markov", 0.160, late=30, issued=100),
        _timed("c", "belady", "oracle", 0.100, offline=True),
    ]), "runs")
    lines, warnings = answer_lines(runs)
    assert len(lines) == 1
    # lfu+markov wins among deployable runs: 0.200 / 0.160 = 1.25x, 0.160 / 0.05 = 3.20x the bound
    assert "best TPOT 160.00 ms with lfu pf=markov" in lines[0]
    assert "baseline LRU 200.00 ms (1.25x)" in lines[0] and "3.20x the time bound (50.00 ms)" in lines[0]
    assert any(w.startswith("late prefetches: in 1 runs") and "30%" in w for w in warnings)
    assert any("reads the trace's future" in w for w in warnings)


def test_a_tie_goes_to_the_baseline():
    runs = tables.conform(pd.DataFrame([_timed("z", "least-stale", "none", 0.2), _timed("a", "lru", "none", 0.2)]),
                          "runs")
    lines, _ = answer_lines(runs)
    assert "with lru (the baseline itself" in lines[0]


def test_log_axis_ticks_never_collide():
    # the demo's capacities: 1 %, 5 %, 10 %, 23.9 % (4000 MiB) and 25 %
    assert spaced_ticks([0.01, 0.05, 0.10, 0.239, 0.25]) == [0.01, 0.05, 0.10, 0.239]
    ticks = spaced_ticks([0.009, 0.01, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1])
    assert all(b / a >= 1.35 for a, b in zip(ticks, ticks[1:]))


def test_links_are_named_plainly():
    assert link_name("ssd_d") == "flash/SSD -> device memory (ssd_d)"
    assert link_name("h2d").startswith("host DRAM -> GPU")
    assert link_name("custom") == "custom"
