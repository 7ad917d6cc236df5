"""Per-step hits from the engine's cumulative percentage: hand-computed, then against the engine's
own residency column in the bundled route traces (an independent record of the same run)."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.runs.hits import estimate_prefill_lookups, hit_tolerance, per_step_hits
from moesim.runs.readers import read_run
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE, PREFILL


def _percentages(hits: list[int], per_step: int, prefill: int) -> np.ndarray:
    cum = np.cumsum(hits)
    total = prefill + per_step * np.arange(1, len(hits) + 1)
    return np.round(100 * cum / total, 2)


def test_hand_computed_differencing() -> None:
    # 40 prefill lookups (no hits), 12 lookups per step; hits 3, 7, 12, 0
    pct = _percentages([3, 7, 12, 0], 12, 40)
    assert pct.tolist() == [5.77, 15.62, 28.95, 25.0]  # by hand: 3/52, 10/64, 22/76, 22/88
    got = per_step_hits(pct, 12, 40)
    tol = hit_tolerance(4, 12, 40)
    assert np.all(np.abs(got - [3, 7, 12, 0]) <= tol)
    assert tol[0] == pytest.approx(0.00005 * 52)


def test_prefill_lookups_recovered_from_the_percentages() -> None:
    rng = np.random.default_rng(3)
    hits = rng.integers(60, 180, size=120).tolist()
    pct = _percentages(hits, 180, 1538)
    assert estimate_prefill_lookups(pct, 180, 29 * 180) == 1538
    with pytest.raises(UserError):
        per_step_hits(np.array([-1.0, -1.0]), 180, 0)


@pytest.mark.parametrize("name", ["gemma", "qwen"])
def test_differenced_hits_match_the_engine_residency(name: str) -> None:
    run = read_run(f"bundled:{name}")
    trace = load_trace(f"bundled:{name}")
    residency = trace.annotations["engine_residency"]
    k = trace.meta.top_k
    per_step = k * trace.meta.n_layers
    cell_hits = np.bincount(trace.access_cell()[residency > 0], minlength=trace.n_cells)
    pass_hits = np.bincount(trace.cell_pass(), weights=cell_hits, minlength=trace.n_passes)
    engine = pass_hits[trace.pass_phase == DECODE]
    # prefill lookups = distinct experts per layer of the prompt batch (the trace's prefill requests)
    prefill_cells = np.flatnonzero(trace.pass_phase[trace.cell_pass()] == PREFILL)
    prefill = sum(len(set(trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]].tolist())) for c in prefill_cells)
    assert estimate_prefill_lookups(run.hit_pct_cumulative.to_numpy(), per_step, 64 * per_step) == prefill
    got = per_step_hits(run.hit_pct_cumulative.to_numpy(), per_step, prefill)
    tol = hit_tolerance(run.n_steps, per_step, prefill)
    assert np.all(np.abs(got - engine) <= tol + 1e-9)
