"""first_repeat_in_groups (moesim/traces/format/grouping.py) against a plain-Python reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.traces.format.grouping import first_repeat_in_groups


def reference(starts: list[int], values: list[int]) -> int | None:
    """The first index (in array order) whose value already occurred earlier in its own group."""
    bounds = list(starts) + [len(values)]
    first = None
    for g in range(len(starts)):
        seen: set[int] = set()
        for i in range(bounds[g], bounds[g + 1]):
            if values[i] in seen:
                first = i if first is None else min(first, i)
                break
            seen.add(values[i])
    return first


def test_equal_groups_by_hand():
    # groups of 3: [1 2 3] [4 5 4] [6 6 6]: index 5 repeats 4 (the third group's 7 and 8 come later)
    values = np.array([1, 2, 3, 4, 5, 4, 6, 6, 6])
    assert first_repeat_in_groups(np.array([0, 3, 6]), values) == 5


def test_equal_groups_repeat_inside_the_first_group_only():
    # [7 3 7] [1 2 3]: 3 appears in both groups but only 7 repeats inside a group (index 2)
    assert first_repeat_in_groups(np.array([0, 3]), np.array([7, 3, 7, 1, 2, 3])) == 2


def test_a_value_shared_across_groups_is_no_repeat():
    assert first_repeat_in_groups(np.array([0, 2, 4]), np.array([1, 2, 2, 1, 1, 2])) is None
    assert first_repeat_in_groups(np.array([0, 1, 3]), np.array([5, 5, 6, 5])) is None  # uneven groups


def test_uneven_groups_by_hand():
    # [9] [1 2 1] [3 3]: index 3 repeats 1; the last group's repeat (index 5) comes later
    assert first_repeat_in_groups(np.array([0, 1, 4]), np.array([9, 1, 2, 1, 3, 3])) == 3
    # negative values and a wide span
    assert first_repeat_in_groups(np.array([0, 2]), np.array([-5, 1000, 7, -5, 7])) == 4


def test_the_second_repeat_of_a_group_is_not_reported():
    # [4 4 4]: the first repeat is index 1, not 2
    assert first_repeat_in_groups(np.array([0]), np.array([4, 4, 4])) == 1
    assert first_repeat_in_groups(np.array([0, 1]), np.array([8, 4, 2, 4, 4])) == 3


@pytest.mark.parametrize("starts,values", [([0], []), ([0], [3]), ([], [1, 1])])
def test_tiny_inputs_have_no_repeat(starts, values):
    assert first_repeat_in_groups(np.array(starts, dtype=np.int64), np.array(values, dtype=np.int64)) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(-3, 6), min_size=0, max_size=5), min_size=1, max_size=8), st.booleans())
def test_matches_the_reference(groups, equal):
    if equal:  # the fixed-size path: every group as long as the first
        k = len(groups[0])
        groups = [(g + [100 + i for i in range(k)])[:k] for g in groups]
    values = [v for g in groups for v in g]
    starts = np.cumsum([0] + [len(g) for g in groups[:-1]]).tolist()
    got = first_repeat_in_groups(np.array(starts, dtype=np.int64), np.array(values, dtype=np.int64))
    assert got == reference(starts, values), (groups, got)


def test_many_uneven_groups_over_a_narrow_value_range():
    """[1] [0 1] [0]: values span 2 and group 2 is 2 spans past group 0, so a key that mixed group and
    value ambiguously (group / span + value) would call group 2's 0 a repeat of group 0's 1."""
    assert first_repeat_in_groups(np.array([0, 1, 3]), np.array([1, 0, 1, 0])) is None
    assert first_repeat_in_groups(np.array([0, 1, 3, 4]), np.array([1, 0, 1, 0, 1, 1])) == 5
