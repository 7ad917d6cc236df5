"""The measured expert-kernel table (moesim/sim/compute/kernel_table.py): interpolation, clamping and
scaling beyond the grid, and the calibration report's errors, each value worked out by hand.

Rule (the module docstring): between grid points linear in log2(tokens), then in log2(active); beyond
the largest active count or token count in proportion to it; below the smallest, clamped.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.sim.compute.kernel_table import load_kernel_table, table_from_report

# seconds[active][tokens] on active {1, 2, 4} x tokens {1, 4, 16} (log2: 0, 1, 2 and 0, 2, 4);
# not linear in log2(active) (1, 2, 4 down the first column), so a wrong interpolation weight shows
GRID = {1: {1: 1.0, 4: 2.0, 16: 4.0}, 2: {1: 2.0, 4: 3.0, 16: 6.0}, 4: {1: 4.0, 4: 5.0, 16: 10.0}}


def report(grid: dict[int, dict[int, float]], **shapes: object) -> dict:
    points = [{"active_experts": a, "tokens_per_expert": t, "median": s}
              for a, row in grid.items() for t, s in row.items()]
    return {"expert_kernel": {"shapes": {"hidden": 64, "inter": 32, **shapes}, "points": points}}


def times(table, active: list[float], tokens: list[float]) -> list[float]:
    return table.times(np.asarray(active), np.asarray(tokens)).tolist()


def test_on_the_grid_between_tokens_and_between_active_counts() -> None:
    table = table_from_report(report(GRID), "r.json")
    # (2, 2): log2 2 = 1 is half way from 1 to 4 tokens on the active-2 row: 2 + (3 - 2) x 0.5 = 2.5
    # (3, 8): tokens half way (log2 8 = 3 between 2 and 4) on every row: 1 -> 3, 2 -> 4.5, 4 -> 7.5;
    #         active weight w = log2 3 - 1 = 0.5849625: 4.5 + (7.5 - 4.5) x w = 6.2548875
    # (1, 1): the grid's corner, 1; (4, 16): the other corner, 10
    w = math.log2(3) - 1
    assert times(table, [2, 3, 1, 4], [2, 8, 1, 16]) == pytest.approx([2.5, 4.5 + 3 * w, 1.0, 10.0], rel=1e-12)


def test_beyond_the_grid_scales_in_proportion_and_below_it_clamps() -> None:
    table = table_from_report(report(GRID), "r.json")
    # 8 active x 16 tokens: the (4, 16) point x 8 / 4 = 20; 4 x 32: x 32 / 16 = 20; 8 x 64: x 2 x 4 = 80
    # 8 active at 4 tokens: (4, 4) = 5 x 2 = 10
    assert times(table, [8, 4, 8, 8], [16, 32, 64, 4]) == pytest.approx([20.0, 20.0, 80.0, 10.0], rel=1e-12)
    # below the smallest token count: clamped to 1 token (1 active: 1.0; 2 active: 2.0)
    assert times(table, [1, 2], [0.5, 0.25]) == pytest.approx([1.0, 2.0], rel=1e-12)
    # a table whose grid starts at 2 active experts and 2 tokens: 1 active x 1 token is clamped to (2, 2)
    small = table_from_report(report({2: {2: 3.0, 8: 5.0}, 4: {2: 7.0, 8: 11.0}}), "r.json")
    # (3, 4): tokens half way: 4 and 9; active w = log2 3 - 1: 4 + 5 w
    assert times(small, [1, 3], [1, 4]) == pytest.approx([3.0, 4 + 5 * (math.log2(3) - 1)], rel=1e-12)


def test_interpolation_weights_on_a_grid_spaced_wider_than_one_octave() -> None:
    """active {1, 4}, tokens {1, 16} (log2 steps of 2 and 4): 2 active x 4 tokens is half way in
    log2(active) (1 of 2) and in log2(tokens) (2 of 4): rows 1 -> (1 + 3) / 2 = 2, 4 -> (5 + 13) / 2 = 9;
    2 active: (2 + 9) / 2 = 5.5."""
    table = table_from_report(report({1: {1: 1.0, 16: 3.0}, 4: {1: 5.0, 16: 13.0}}), "r.json")
    assert times(table, [2], [4]) == pytest.approx([5.5], rel=1e-12)


def test_a_single_active_count_row() -> None:
    table = table_from_report(report({4: {1: 2.0, 4: 6.0}}), "r.json")
    # 2 tokens: half way, 4.0; 2 active clamps up to 4 (4.0); 8 active scales x 2 (8.0)
    assert times(table, [4, 2, 8], [2, 2, 2]) == pytest.approx([4.0, 4.0, 8.0], rel=1e-12)


def test_the_report_fields_and_where_the_table_came_from(tmp_path) -> None:
    table = table_from_report(report(GRID), "r.json")
    assert (table.hidden, table.intermediate, table.dtype, table.source) == (64, 32, "bf16", "r.json")
    assert table.active.tolist() == [1.0, 2.0, 4.0] and table.tokens.tolist() == [1.0, 4.0, 16.0]
    assert table_from_report(report(GRID, dtype="fp8"), "r.json").dtype == "fp8"
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(report(GRID)))
    loaded = load_kernel_table(str(path))
    assert loaded.source == str(path)
    assert times(loaded, [3], [8]) == pytest.approx([4.5 + 3 * (math.log2(3) - 1)], rel=1e-12)


def _error(fn, *args) -> str:
    with pytest.raises(UserError) as info:
        fn(*args)
    return str(info.value)


def test_report_errors_are_one_line_naming_the_file(tmp_path) -> None:
    assert _error(table_from_report, {}, "r.json") == "r.json: no expert_kernel.points in the calibration report"
    no_shapes = {"expert_kernel": {"points": report(GRID)["expert_kernel"]["points"]}}
    assert _error(table_from_report, no_shapes, "r.json") == "r.json: no expert_kernel.points in the calibration report"
    no_points = {"expert_kernel": {"shapes": {"hidden": 64, "inter": 32}}}
    assert _error(table_from_report, no_points, "r.json") == "r.json: no expert_kernel.points in the calibration report"
    bad = report(GRID)
    del bad["expert_kernel"]["points"][0]["median"]
    assert _error(table_from_report, bad, "r.json") == "r.json: malformed expert_kernel point: 'median'"
    holes = report({1: {1: 1.0, 4: 2.0}, 2: {1: 2.0}})
    assert _error(table_from_report, holes, "r.json") == \
        "r.json: expert_kernel.points do not fill the active x tokens grid"
    missing = tmp_path / "none.json"
    message = _error(load_kernel_table, str(missing))
    assert message.startswith(f"{missing}: cannot read calibration report: ") and "No such file" in message
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert _error(load_kernel_table, broken).startswith(f"{broken}: cannot read calibration report: ")
