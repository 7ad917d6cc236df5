"""Figures in and out of a graph profile, and the simulator model's per-pass parts."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.hw_profiles.loader import load_profile
from moesim.runs.engine_map import engine_setup
from moesim.runs.measured import RunConfig
from moesim.runs.step_model import SimulatorModel, apply_figures, profile_figures
from moesim.sim.timed_replay import timed_replay
from moesim.traces.format.io import load_trace


def test_figures_round_trip_and_the_storage_curve_keeps_its_shape() -> None:
    profile = load_profile("phone-oneplus-15r")
    figures = profile_figures(profile)
    assert figures["ssd_bandwidth"] == 3.15e9 and figures["ssd_bandwidth_qd1"] == 0.788e9
    changed = apply_figures(profile, figures | {"memory_bandwidth": 9e9, "ssd_bandwidth": 2.5e9,
                                                "ssd_bandwidth_qd1": 0.9e9, "ssd_latency": 3e-4})
    assert changed.device.memory_bandwidth == 9e9
    curve = changed.tiers["ssd"].throughput
    assert curve.bandwidth(2.86e6, 1) == pytest.approx(0.9e9) and curve.bandwidth(2.86e6, 4) == pytest.approx(2.5e9)
    assert curve.bandwidth(2.86e6, 2) == pytest.approx(0.9e9 + (2.5e9 - 0.9e9) / 3)  # linear in depth between
    assert changed.tiers["ssd"].latency == 3e-4
    assert profile_figures(changed) | {"memory_bandwidth": 0} != figures


def test_simulator_model_parts_add_up_and_extras_are_added() -> None:
    trace = load_trace("bundled:gemma")
    setup = engine_setup(RunConfig(cache_mib=2000, lanes=4, overlap=False, top_k=6), "phone-oneplus-15r")
    figures = profile_figures(setup.profile)
    model = SimulatorModel(trace, setup.profile, setup.timed)
    plain = model.times(figures)
    cells = timed_replay(trace, setup.profile, setup.timed).cells
    wall = (cells["end_s"] - cells["start_s"]).groupby(cells["pass"]).sum().to_numpy()
    # equal to rounding: the closed form and the event clock add a read's slices in different orders
    np.testing.assert_allclose(plain.total, wall, rtol=1e-11)
    # a per-layer barrier: a pass is its compute plus its stalls
    np.testing.assert_allclose(plain.total, plain.compute + plain.stall, rtol=1e-9)
    extra = model.times(figures | {"mgmt_per_byte": 1e-10, "token_overhead": 2e-3})
    np.testing.assert_allclose(extra.total - plain.total, 1e-10 * plain.copy_bytes + 2e-3, rtol=1e-9)
    assert model.evaluations == 2
