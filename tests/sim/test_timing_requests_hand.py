"""TTFT, TPOT and their bounds with two requests, worked out by hand.

One layer, 1 MB objects, top-1, capacity 1 object, LRU; hand profile (timing_helpers): dense
2 MB / 1 TB/s + 5 = 7 us, one expert 1 MB / 1 TB/s + 5 = 6 us, a copy 1010 us. A cell that misses
takes 7 + 1010 + 6 = 1023 us, a cell that hits 13 us.

pass  request  phase          expert  outcome  ends (us)
0     0        prefill        0       miss     1023
1     0        decode         1       miss     2046
2     0        decode         2       miss     3069
3     1        prefill (1/2)  3       miss     4092
4     1        prefill (2/2)  3       hit      4105
5     1        decode         0       miss     5128
6     1        decode         0       hit      5141
7     1        decode         0       hit      5154

Request 0: TTFT 1023, TPOT (3069 - 1023) / 2 = 1023, e2e 3069 us.
Request 1 starts with pass 3 at 3069 us: TTFT 4105 - 3069 = 1036 (its chunked prompt ends with pass
4), TPOT (5154 - 4105) / 3, e2e 5154 - 3069 = 2085 us.
"""

from __future__ import annotations

import pytest

from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace

from timing_helpers import MB, US, hand_profile

ROWS = [(0, PREFILL, 0, 0), (0, DECODE, 1, 1), (0, DECODE, 2, 2),
        (1, PREFILL, 0, 3), (1, PREFILL, 1, 3), (1, DECODE, 2, 0), (1, DECODE, 3, 0), (1, DECODE, 4, 0)]


def _trace():
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=1, object_bytes=[MB], dense_bytes=[2 * MB], model=None)
    return build_trace(meta, [{"phase": phase, "tokens": [(req, pos)], "cells": [(0, [[expert]])]}
                              for req, phase, pos, expert in ROWS])


def _run():
    return timed_replay(_trace(), hand_profile(), TimedConfig(eviction="lru", capacity_bytes=MB))


def test_two_requests_cell_timeline():
    result = _run()
    ends = [1023, 2046, 3069, 4092, 4105, 5128, 5141, 5154]
    assert result.cells["end_s"].tolist() == pytest.approx([e * US for e in ends], abs=1e-12)
    assert result.cells["hits"].tolist() == [0, 0, 0, 0, 1, 0, 1, 1]


def test_ttft_and_tpot_of_the_second_request_start_at_its_first_pass():
    req = _run().requests.set_index("request")
    assert req["first_pass"].tolist() == [0, 3]
    assert req["first_token_pass"].tolist() == [0, 4]
    assert req["decode_passes"].tolist() == [2, 3]
    assert req["output_tokens"].tolist() == [3, 4]
    assert req["ttft_s"].tolist() == pytest.approx([1023 * US, 1036 * US], abs=1e-12)
    assert req["tpot_s"].tolist() == pytest.approx([1023 * US, (5154 - 4105) / 3 * US], abs=1e-12)
    assert req["e2e_s"].tolist() == pytest.approx([3069 * US, 2085 * US], abs=1e-12)
    assert req["tokens_per_s"].tolist() == pytest.approx([3 / (3069 * US), 4 / (2085 * US)])


def test_request_bounds_by_hand():
    """MIN at 1 object misses 0, 1, 2, 3 and 0 again: [1, 1, 1, 1, 0, 1, 0, 0] MB per pass, landing
    over W = 1 GB/s from t = 0. Every cell computes C = 13 us (experts 6 us).

    Request 0, TTFT: the ideal end of pass 0, max(13, 1000 + 6) = 1006 us.
    Request 0, TPOT over passes 1-2: MIN fetches 2 MB there and at most 1 MB was resident when they
        began, so >= 1 MB / W = 1000 us for 2 tokens: 500 us (per-pass compute alone gives 13 us).
    Request 1, TTFT over passes 3-4: 1 MB fetched, 1 MB may be resident, so compute binds: 26 us.
    Request 1, TPOT over passes 5-7: the same argument: 39 us / 3 = 13 us.
    The whole run: E ends at 5000 + 6 (pass 5's object lands) + 2 x 13 = 5032 us.
    """
    result = _run()
    req = result.requests.set_index("request")
    assert req["ttft_bound_s"].tolist() == pytest.approx([1006 * US, 26 * US], abs=1e-12)
    assert req["tpot_bound_s"].tolist() == pytest.approx([500 * US, 13 * US], abs=1e-12)
    assert result.bounds.time_bound_s == pytest.approx(5032 * US, abs=1e-12)
    assert result.bounds.belady_misses == 5


def test_energy_prices_bytes_active_and_idle_time():
    """The device computes 8 cells x 13 us = 104 us at 500 W and idles the other 5050 us at 100 W,
    waiting on copies (DMA is priced per byte, not as a busy device): plus 5 copies of 1 MB at
    1 nJ/byte (hand profile)."""
    s = _run().summary
    assert s["active_s"] == pytest.approx(104 * US, abs=1e-12)
    assert s["idle_s"] == pytest.approx(5050 * US, abs=1e-12)
    assert s["energy_j"]["total"] == pytest.approx(5 * MB * 1e-9 + 500.0 * 104 * US + 100.0 * 5050 * US)
