"""The cpu-only placement (llama.cpp on the CPU): every operator on the CPU, the GPU unused, by hand."""

from __future__ import annotations

import pytest

from moesim.errors import UserError
from moesim.sim.timed_replay import TimedConfig, timed_replay

from timing_helpers import MB, US, hand_profile, hand_trace


def test_cpu_only_per_token_time_by_hand() -> None:
    """Hand trace (2 layers, 2 MB dense per layer, two 1 MB experts per cell), CPU 10 GB/s and 1 TFLOP/s.

    Per cell, on the CPU: dense 2 MB / 10 GB/s = 200 us (its 2 M FLOPs take 2 us), experts
    2 MB / 10 GB/s = 200 us; no activation crosses a link and nothing is copied. The GPU's
    5 us launches are not charged. TPOT = the decode pass's two cells = 800 us.
    """
    result = timed_replay(hand_trace(), hand_profile(cpu_flops=1e12, cpu_bw=1e10), TimedConfig(placement="cpu-only"))
    cells = result.cells
    assert cells["dense_s"].tolist() == pytest.approx([200 * US] * 4, rel=1e-12)
    assert cells["cpu_s"].tolist() == pytest.approx([200 * US] * 4, rel=1e-12)
    assert cells["expert_s"].tolist() == [0.0] * 4
    assert result.summary["tpot_s"]["mean"] == pytest.approx(800 * US, rel=1e-12)
    assert result.plan.n_copies == 0
    assert sum(int(v["bytes"]) for v in result.summary["links"].values()) == 0


def test_cpu_only_energy_is_the_cpus() -> None:
    """The GPU computed nothing: all 1600 us of busy time is the CPU's; the GPU idles throughout."""
    result = timed_replay(hand_trace(), hand_profile(cpu_flops=1e12, cpu_bw=1e10), TimedConfig(placement="cpu-only"))
    procs = result.summary["energy_j"]["processors"]
    assert procs["gpu"]["busy_s"] == pytest.approx(0.0, abs=1e-15)
    assert procs["cpu"]["busy_s"] == pytest.approx(1600 * US, rel=1e-12)


def test_cpu_all_keeps_the_dense_work_on_the_gpu() -> None:
    """Against cpu-all on the same machine: dense 2 MB at the GPU's 1 TB/s + one 5 us launch = 7 us per cell."""
    result = timed_replay(hand_trace(), hand_profile(cpu_flops=1e12, cpu_bw=1e10), TimedConfig(placement="cpu-all"))
    assert result.cells["dense_s"].tolist() == pytest.approx([7 * US] * 4, rel=1e-12)


def test_cpu_only_needs_a_cpu() -> None:
    with pytest.raises(UserError, match="cpu processor"):
        timed_replay(hand_trace(), hand_profile(), TimedConfig(placement="cpu-only"))
