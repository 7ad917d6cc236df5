"""The fast per-pass model equals the simulator pass by pass, and its barrier makespan is right by hand."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.runs.engine_map import engine_setup
from moesim.runs.measured import RunConfig
from moesim.runs.step_model import StepModel, _barrier_makespans, profile_figures
from moesim.sim.timed_replay import timed_replay
from moesim.traces.io import load_trace


def test_barrier_makespan_by_hand() -> None:
    # cell 0: 3 reads of 1 s on 2 lanes -> 2 s; cell 2: reads 3, 1, 1 on 2 lanes -> lane A 3, lane B 1+1 -> 3 s
    cell = np.array([0, 0, 0, 2, 2, 2])
    duration = np.array([1.0, 1.0, 1.0, 3.0, 1.0, 1.0])
    assert _barrier_makespans(cell, duration, 3, 2).tolist() == [2.0, 0.0, 3.0]
    assert _barrier_makespans(cell, duration, 3, 4).tolist() == [1.0, 0.0, 3.0]


@pytest.mark.parametrize("lanes,cache_mib", [(4, 4000), (2, 1000), (1, 0)])
def test_fast_model_equals_the_simulator(lanes: int, cache_mib: int) -> None:
    trace = load_trace("bundled:gemma")
    setup = engine_setup(RunConfig(cache_mib=cache_mib, lanes=lanes, overlap=False, top_k=6), "phone-oneplus-15r")
    model = StepModel(trace, setup.profile, setup.timed)
    figures = profile_figures(setup.profile) | {"memory_bandwidth": 9e9, "ssd_latency": 3e-4}
    from moesim.runs.step_model import apply_figures

    result = timed_replay(trace, apply_figures(setup.profile, figures), setup.timed)
    cells = result.cells
    simulated = (cells["end_s"] - cells["start_s"]).groupby(cells["pass"]).sum().to_numpy()
    fast = model.times(figures)
    np.testing.assert_allclose(fast.total, simulated, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast.stall, cells["stall_s"].groupby(cells["pass"]).sum().to_numpy(), atol=1e-12)
    np.testing.assert_allclose(fast.io_busy, cells["copy_s_ssd_d"].groupby(cells["pass"]).sum().to_numpy(), rtol=1e-12)


def test_simulator_model_agrees_with_the_fast_model() -> None:
    from moesim.runs.step_model import SimulatorModel

    trace = load_trace("bundled:gemma")
    setup = engine_setup(RunConfig(cache_mib=2000, lanes=4, overlap=True, top_k=6), "phone-oneplus-15r")
    figures = profile_figures(setup.profile) | {"mgmt_per_byte": 1e-10, "token_overhead": 2e-3}
    fast = StepModel(trace, setup.profile, setup.timed).times(figures)
    slow = SimulatorModel(trace, setup.profile, setup.timed).times(figures)
    for name in ("total", "compute", "stall", "io_busy", "mgmt"):
        np.testing.assert_allclose(getattr(slow, name), getattr(fast, name), rtol=1e-9, atol=1e-12, err_msg=name)
