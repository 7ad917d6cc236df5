"""Results stay byte-identical on a fixed set of README commands (tests/golden/cases.py).

An intended change of results regenerates the set with `PYTHONPATH=$PWD python -m tests.golden.regen`
and says why in its commit; any other difference is a regression.
"""

from __future__ import annotations

import difflib

import pytest

from tests.golden.cases import CASES, EXPECTED, run_case


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("golden")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_output_is_unchanged(case, scratch):
    # cases run in order in one folder: later ones (sweep-table, report) read what earlier ones wrote
    got = run_case(case, scratch)
    want = (EXPECTED / f"{case.name}.txt").read_text()
    if got != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "expected", "got"))[:80])
        pytest.fail(f"{case.name} changed (regenerate with `python -m tests.golden.regen` only if intended):\n{diff}")
