"""The anchor fit recovers known CPU figures from numbers the simulator made with them (moesim/runs/anchor_fit.py)."""

from __future__ import annotations

import pytest

from moesim.errors import UserError
from moesim.runs.anchor_fit import Figures, apply_figures, fit_figures
from moesim.sim.timed_replay import TimedConfig, timed_replay

from timing_helpers import MB, US, hand_profile, hand_trace


def timer(profile: object) -> float:
    """Seconds per decode token of the hand trace with every routed expert on the CPU."""
    result = timed_replay(hand_trace(), profile, TimedConfig(capacity_bytes=3 * MB, placement="cpu-all"))  # type: ignore[arg-type]
    return float(result.summary["tpot_s"]["mean"])


def test_apply_figures_by_hand() -> None:
    """Efficiency 0.4 of 10 GB/s and 50 us a call: a cell's 2 MB of experts take 2 MB / 4 GB/s + 50 us = 550 us,
    plus two activation crossings of 10.816 us; the decode pass's two cells and 7 us of dense each."""
    profile = apply_figures(hand_profile(cpu_flops=1e12, cpu_bw=1e10), Figures(0.4, 50 * US), "test")
    assert profile.processors["cpu"].memory_bandwidth == pytest.approx(4e9)
    assert "fitted: 0.4000 x" in profile.provenance["processors.cpu.memory_bandwidth"]
    assert timer(profile) == pytest.approx(2 * (7 + 550 + 2 * 10.816) * US, rel=1e-12)


def test_fit_recovers_known_figures_from_two_machines() -> None:
    """Two machines that differ only in the CPU's datasheet bandwidth (10 and 5 GB/s, as two sockets and one):
    times made at efficiency 0.4 and 50 us a call are fitted back to those figures, exactly."""
    truth = Figures(0.4, 50 * US)
    machines = [hand_profile(cpu_flops=1e12, cpu_bw=1e10), hand_profile(cpu_flops=1e12, cpu_bw=5e9)]
    measured = [timer(apply_figures(m, truth, "truth")) for m in machines]
    fit = fit_figures([(f"m{i}", m, timer, t) for i, (m, t) in enumerate(zip(machines, measured))], "test")
    assert fit.figures.efficiency == pytest.approx(0.4, rel=1e-9)
    assert fit.figures.call_overhead == pytest.approx(50 * US, rel=1e-9)
    assert max(abs(r) for r in fit.residuals) < 1e-9 and fit.notes == ()


def test_fit_says_when_rows_are_faster_than_the_ceiling() -> None:
    """Times made at 1.5x the datasheet bandwidth fit to efficiency 1.5, with a note."""
    machines = [hand_profile(cpu_flops=1e12, cpu_bw=1e10), hand_profile(cpu_flops=1e12, cpu_bw=5e9)]
    measured = [timer(apply_figures(m, Figures(1.5, 0.0), "truth")) for m in machines]
    fit = fit_figures([(f"m{i}", m, timer, t) for i, (m, t) in enumerate(zip(machines, measured))], "test")
    assert fit.figures.efficiency == pytest.approx(1.5, rel=1e-9)
    assert any("faster than its ceiling" in n for n in fit.notes)


def test_one_row_cannot_fit_two_figures() -> None:
    with pytest.raises(UserError, match="two fitted rows"):
        fit_figures([("m", hand_profile(cpu_flops=1e12, cpu_bw=1e10), timer, 1e-3)], "test")
