"""NUMA layouts of a multi-socket host (moesim/sim/numa.py), by hand, and through a cpu-only replay."""

from __future__ import annotations

import dataclasses

import pytest

from moesim.errors import UserError
from moesim.sim.numa import effective_bandwidth
from moesim.sim.timed_replay import TimedConfig, timed_replay

from timing_helpers import MB, US, hand_profile, hand_trace

GB = 1e9


def test_layouts_by_hand_on_two_sockets() -> None:
    """BW 10 GB/s over 2 nodes (5 each), link 1 GB/s per direction.
    local: 10. interleave: each node serves B/2 (B / 10 GB/s), each direction carries B/4 (B / 4 GB/s): 4.
    node: one node serves B (B / 5 GB/s), the far socket pulls B/2 over the link (B / 2 GB/s): 2."""
    assert effective_bandwidth(10 * GB, 2, 1 * GB, "local") == 10 * GB
    assert effective_bandwidth(10 * GB, 2, 1 * GB, "interleave") == pytest.approx(4 * GB)
    assert effective_bandwidth(10 * GB, 2, 1 * GB, "node") == pytest.approx(2 * GB)
    # a wide link: DRAM binds; interleaving then costs nothing and one node halves the bandwidth
    assert effective_bandwidth(10 * GB, 2, 100 * GB, "interleave") == pytest.approx(10 * GB)
    assert effective_bandwidth(10 * GB, 2, 100 * GB, "node") == pytest.approx(5 * GB)


def test_four_nodes_and_the_degenerate_cases() -> None:
    """N = 4, BW 40 (10 a node), link 2: interleave min(40, 16 x 2) = 32; node min(40 / 4, 4 x 2) = 8."""
    assert effective_bandwidth(40 * GB, 4, 2 * GB, "interleave") == pytest.approx(32 * GB)
    assert effective_bandwidth(40 * GB, 4, 2 * GB, "node") == pytest.approx(8 * GB)
    for layout in ("local", "interleave", "node"):  # one node: nothing crosses a socket
        assert effective_bandwidth(10 * GB, 1, 1 * GB, layout) == 10 * GB
        assert effective_bandwidth(10 * GB, None, None, layout) == 10 * GB
    assert effective_bandwidth(10 * GB, 2, None, "node") == pytest.approx(5 * GB)  # no link figure: DRAM only
    assert effective_bandwidth(10 * GB, 2, None, "interleave") == pytest.approx(10 * GB)
    with pytest.raises(UserError) as refused:
        effective_bandwidth(10 * GB, 2, 1 * GB, "spread")
    assert str(refused.value) == "placement numa: numa layout must be one of local, interleave, node, got 'spread'"


def numa_profile(link: float) -> object:
    """hand_profile with a 2-node CPU: 10 GB/s over two sockets, `link` bytes/s between them."""
    profile = hand_profile(cpu_flops=1e12, cpu_bw=1e10)
    cpu = dataclasses.replace(profile.processors["cpu"], numa_nodes=2, numa_link_bandwidth=link)
    return dataclasses.replace(profile, processors={**profile.processors, "cpu": cpu})


@pytest.mark.parametrize("layout,bandwidth", [("local", 10 * GB), ("interleave", 4 * GB), ("node", 2 * GB)])
def test_cpu_only_cells_read_at_the_layouts_bandwidth(layout: str, bandwidth: float) -> None:
    """cpu-only on the hand trace: a cell's 2 MB of dense weights and 2 MB of experts (two 1 MB experts)
    at the layout's bandwidth (link 1 GB/s), nothing else (no launches on the CPU, no activations)."""
    result = timed_replay(hand_trace(), numa_profile(1 * GB), TimedConfig(placement=f"cpu-only:numa={layout}"))
    per_cell = 2 * 2 * MB / bandwidth
    assert result.summary["time"]["total_s"] == pytest.approx(4 * per_cell, rel=1e-12)


def test_numa_layout_also_applies_to_cpu_all() -> None:
    """cpu-all reads only the experts from host memory: 2 MB at 2 GB/s (one node) = 1000 us per cell,
    plus two activation crossings of 10 us + 0.816 us (hand_profile's link)."""
    result = timed_replay(hand_trace(), numa_profile(1 * GB), TimedConfig(capacity_bytes=3 * MB, placement="cpu-all:numa=node"))
    assert result.cells["cpu_s"].tolist() == pytest.approx([(1000 + 2 * 10.816) * US] * 4, abs=1e-12)


def test_a_bad_layout_is_one_line() -> None:
    with pytest.raises(UserError, match="numa must be one of"):
        timed_replay(hand_trace(), numa_profile(1 * GB), TimedConfig(placement="cpu-only:numa=spread"))
