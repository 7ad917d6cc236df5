"""The fidelity table's replicate noise and pass rule, by hand."""

from __future__ import annotations

import pytest

from moesim.runs.fidelity import RUNS, RunCase, _replicate_noise


def test_replicate_noise_is_slowest_over_fastest() -> None:
    group = "same work"
    rows = [{"case": RunCase("a", "", "", group=group), "measured_tpot": 0.315},
            {"case": RunCase("b", "", "", group=group), "measured_tpot": 0.360},
            {"case": RunCase("c", "", "", group=None), "measured_tpot": 9.0}]
    assert _replicate_noise(rows) == {group: pytest.approx(0.360 / 0.315 - 1)}


def test_every_gemma_run_is_in_the_table_and_the_route_trace_run_has_the_tight_targets() -> None:
    names = {case.name for case in RUNS}
    assert len(names) == 12 and "gemma_mmap" in names and "gemma_auto_ov" in names
    route = next(c for c in RUNS if c.name == "gemma route-trace")
    assert (route.tpot_tol, route.ttft_tol) == (0.10, 0.15)
    replicates = [c.name for c in RUNS if c.group]
    assert {"gemma_base", "gemma_base_ov", "gemma_autocap_ov"} <= set(replicates)
