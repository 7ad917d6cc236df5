"""The closed-form per-cell clock the fit uses equals the simulator's, and its lane rule is the fluid server's."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from moesim.runs.cell_clock import NotClosedForm, ReplayedRun, fluid_cell
from moesim.runs.engine_map import engine_setup
from moesim.runs.measured import RunConfig
from moesim.runs.step_model import apply_figures, profile_figures
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.build import simple_trace

# figures of the kind a fit lands on (not the shipped ones: the curve is no longer linear in depth)
FITTED = {"memory_bandwidth": 12.2e9, "peak_flops": 30e9, "launch_overhead": 20e-6, "ssd_bandwidth": 2.3e9,
          "ssd_bandwidth_qd1": 1.1e9, "ssd_latency": 1.4e-3}


def _lanes(slots: int, latency: float, aggregate: list[float]) -> SimpleNamespace:
    return SimpleNamespace(slots=slots, latency=latency, shares=tuple([0.0] + [a / n for n, a in enumerate(aggregate, 1)]))


def test_two_reads_share_the_lanes_by_hand() -> None:
    # 1 MB and 3 MB on 2 lanes: 1.5 GB/s for two flowing (0.75 each), 1 GB/s for one.
    # The 1 MB read ends at 1e6 / 0.75e9 = 1.333 ms; the other has 3e6 - 1e6 = 2 MB left, alone at 1 GB/s:
    # 1.333 + 2.0 = 3.333 ms. With 0.5 ms latency each first waits 0.5 ms: 1.833 and 3.833 ms.
    start, end = fluid_cell([1e6, 3e6], _lanes(2, 0.0, [1e9, 1.5e9]))
    assert start == [0.0, 0.0]
    assert end == pytest.approx([1e6 / 0.75e9, 1e6 / 0.75e9 + 2e-3])
    _, end = fluid_cell([1e6, 3e6], _lanes(2, 5e-4, [1e9, 1.5e9]))
    assert end == pytest.approx([5e-4 + 1e6 / 0.75e9, 5e-4 + 1e6 / 0.75e9 + 2e-3])


def test_a_third_read_waits_for_a_lane() -> None:
    # 3 reads of 1 MB on 2 lanes at 1 GB/s each (aggregate linear: a read's rate never changes):
    # two end at 1 ms, the third starts then and ends at 2 ms
    start, end = fluid_cell([1e6, 1e6, 1e6], _lanes(2, 0.0, [1e9, 2e9]))
    assert start == pytest.approx([0.0, 0.0, 1e-3]) and end == pytest.approx([1e-3, 1e-3, 2e-3])
    # same with a curve that saturates (1 GB/s alone, 1.2 GB/s for two): 1e6 / 0.6e9 = 1.667 ms for the
    # first two; the third alone at 1 GB/s: 1.667 + 1 ms
    start, end = fluid_cell([1e6, 1e6, 1e6], _lanes(2, 0.0, [1e9, 1.2e9]))
    assert start[2] == pytest.approx(1e6 / 0.6e9) and end[2] == pytest.approx(1e6 / 0.6e9 + 1e-3)


@pytest.mark.parametrize("overlap,lanes,capacity", [(True, 4, 4000), (False, 2, 2000), (True, 4, 0)])
def test_closed_form_equals_the_simulator_on_fitted_figures(overlap: bool, lanes: int, capacity: int) -> None:
    trace = load_trace("bundled:gemma")
    setup = engine_setup(RunConfig(cache_mib=capacity, lanes=lanes, overlap=overlap, top_k=6), "phone-oneplus-15r")
    figures = profile_figures(setup.profile) | FITTED
    replayed = ReplayedRun(trace, setup.profile, setup.timed)
    got = replayed.pass_totals(figures)
    cells = timed_replay(trace, apply_figures(setup.profile, figures), setup.timed).cells
    wall = (cells["end_s"] - cells["start_s"]).groupby(cells["pass"]).sum().to_numpy()
    busy = cells.filter(like="copy_s_").sum(axis=1).groupby(cells["pass"]).sum().to_numpy()
    np.testing.assert_allclose(got["wall"], wall, rtol=1e-9)
    np.testing.assert_allclose(got["stall"], cells["stall_s"].groupby(cells["pass"]).sum().to_numpy(), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(got["io_busy"], busy, rtol=1e-9)
    assert got["stall"].sum() > 1.0  # the runs do wait for reads: the comparison covers the stall rule


def test_prefetch_is_not_closed_form() -> None:
    trace = load_trace("bundled:gemma")
    setup = engine_setup(RunConfig(cache_mib=2000, lanes=4, overlap=True, top_k=6), "phone-oneplus-15r")
    config = TimedConfig(**{**setup.timed.__dict__, "prefetch": "oracle:lookahead=1"})
    with pytest.raises(NotClosedForm):
        ReplayedRun(trace, setup.profile, config)


def test_prefill_barrier_waits_for_the_last_read_by_hand() -> None:
    # one layer, a prefill routing experts 0 and 1, then a decode step; 4 MB experts, an empty 100 MB cache,
    # ONE read lane on the phone's flash (0.788 GB/s) with 100 us per request. Each expert is read as three
    # slice requests (engine_map.slice_shares), queued slice-major: (0,g) (1,g) (0,u) (1,u) (0,d) (1,d), each
    # p = 1e-4 + (4e6 / 3) / 0.788e9, the last landing at 6p. Under the prefill barrier the stall is 6p.
    # Pipelined in expert-id order (wc per expert, wc/3 per slice op; wc/3 < p): each (slice, expert) unit
    # starts as its slice lands, the last at 6p, ending at 6p + wc/3 after 2 wc of work: a stall of 6p - 5wc/3.
    trace = simple_trace([[[0, 1]], [[2, 3]]], 1, 8, 4_000_000, top_k=2, phases=[PREFILL, DECODE])
    setup = engine_setup(RunConfig(cache_mib=100, lanes=1, overlap=True, top_k=2), "phone-oneplus-15r")
    assert setup.timed.prefill_overlap == "layer"
    assert (setup.timed.read_slices, setup.timed.slice_order, setup.timed.expert_order) == ((1 / 3,) * 3, "slice", "id")
    cells = timed_replay(trace, setup.profile, setup.timed).cells
    p = 1e-4 + 4e6 / 3 / 0.788e9
    assert cells["stall_s"].iloc[0] == pytest.approx(6 * p, rel=1e-12)
    pipelined = timed_replay(trace, setup.profile, TimedConfig(**{**setup.timed.__dict__, "prefill_overlap": None}))
    wc = pipelined.cells["expert_s"].iloc[0] / 2
    assert 0 < wc / 3 < p
    assert pipelined.cells["stall_s"].iloc[0] == pytest.approx(6 * p - 5 * wc / 3, rel=1e-12)
    # decode keeps per-expert overlap either way
    assert cells["stall_s"].iloc[1] == pytest.approx(pipelined.cells["stall_s"].iloc[1], rel=1e-12)
    # the closed form agrees
    got = ReplayedRun(trace, setup.profile, setup.timed).pass_totals(profile_figures(setup.profile))
    np.testing.assert_allclose(got["stall"], cells["stall_s"].to_numpy(), rtol=1e-12)


def test_ffn_overlap_hides_the_dense_ffn_behind_reads_by_hand() -> None:
    from moesim.sim.engine import _pipelined_stall

    # one missing expert (compute w) landing at a, and s seconds of dense FFN the stream may run first:
    # the stream runs the FFN (ends at s), waits for the read, then the expert: it ends at max(s, a) + w after
    # w + s of work, a stall of max(0, a - s) instead of a
    a, w = 3e-3, 1e-3
    for s, expected in ((1e-3, 2e-3), (5e-3, 0.0)):
        assert _pipelined_stall(0.0, [0], [0], [a], [w], w + s, 0.0) == pytest.approx(expected, abs=1e-15)
    assert _pipelined_stall(0.0, [0], [0], [a], [w], w, 0.0) == pytest.approx(a)


def test_ffn_overlap_only_lowers_stalls_and_only_where_a_model_has_an_ffn_beside_its_experts() -> None:
    gemma, qwen = load_trace("bundled:gemma"), load_trace("bundled:qwen")
    setup = engine_setup(RunConfig(cache_mib=4000, lanes=4, overlap=True, top_k=6), "phone-oneplus-15r",
                         arch="gemma4")
    assert not setup.timed.ffn_overlap  # llama.cpp's gemma4 graph runs the dense MLP before the router
    off = setup.timed
    on = TimedConfig(**{**setup.timed.__dict__, "ffn_overlap": True})
    with_ffn = timed_replay(gemma, setup.profile, on).cells
    without = timed_replay(gemma, setup.profile, off).cells
    assert (with_ffn["stall_s"] <= without["stall_s"] + 1e-12).all()
    assert with_ffn["stall_s"].sum() < 0.9 * without["stall_s"].sum()  # gemma's dense MLP beside every MoE layer
    np.testing.assert_allclose(with_ffn["compute_s"], without["compute_s"])  # the work is the same, only its order
    # Qwen3-30B-A3B has no shared expert and no dense FFN: nothing changes
    q_with = timed_replay(qwen, setup.profile, on).cells["stall_s"].to_numpy()
    q_without = timed_replay(qwen, setup.profile, off).cells["stall_s"].to_numpy()
    np.testing.assert_array_equal(q_with, q_without)
