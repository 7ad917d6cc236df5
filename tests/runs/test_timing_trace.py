"""A timing-only trace replays to exactly the misses it was built from, and its bytes follow read_bytes."""

from __future__ import annotations

import numpy as np

from moesim.runs.padding import expected_read_bytes
from moesim.runs.timing_trace import misses_by_layer, timing_trace
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.hw_profiles.loader import load_profile
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE


def test_split_matches_bytes_by_hand() -> None:
    sizes = np.array([100, 100, 50, 50]) * 4096
    padded = expected_read_bytes(sizes, 2)
    # 5 misses that read 3 big + 2 small experts
    split = misses_by_layer(5, float(3 * padded[0] + 2 * padded[2]), sizes, k=2, slices=2)
    assert split[:2].sum() == 3 and split[2:].sum() == 2 and split.max() <= 2


def test_replay_reproduces_the_intended_misses() -> None:
    like = load_trace("bundled:gemma")
    rng = np.random.default_rng(1)
    misses = rng.integers(0, 8 * 30, size=20)
    trace = timing_trace(like, 8, 12, 300, misses, None, 2, "test")
    profile = load_profile("phone-oneplus-15r")
    for capacity_mib in (1000, 4000):
        result = timed_replay(trace, profile, TimedConfig(capacity_bytes=capacity_mib * 2**20, bounds=False))
        got = result.cells.groupby("pass")["misses"].sum().to_numpy()[trace.pass_phase == DECODE]
        np.testing.assert_array_equal(got[1:], misses[1:])
        if capacity_mib == 4000:  # holds the prefill's 300 experts: step 1's hits are all resident
            assert got[0] == misses[0]
        else:  # 1000 MiB holds ~260: step 1 may lose a few of its hits to its own misses' evictions
            assert misses[0] <= got[0] <= misses[0] + 10
    # no cache: every routed expert is read
    result = timed_replay(trace, profile, TimedConfig(capacity_bytes=0, bounds=False))
    per_pass = result.cells.groupby("pass")["misses"].sum().to_numpy()
    assert (per_pass[trace.pass_phase == DECODE] == 8 * 30).all()
