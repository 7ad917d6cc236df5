"""The curated probes' data and runner (bench/mutants/probes.py): a probe whose code moved fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.mutants.probes import Probe, load_probes, plant, run_probe

REPO = Path(__file__).resolve().parents[2]


def test_every_probe_snippet_is_in_its_file_once_and_its_tests_exist():
    probes = load_probes()
    assert len(probes) >= 20
    for probe in probes:
        source = (REPO / probe.file).read_text()
        assert plant(probe, source) != source, probe.name
        for test in probe.tests:
            assert (REPO / test.split("::")[0]).is_file(), (probe.name, test)


def test_a_moved_snippet_fails_loudly(tmp_path):
    probe = Probe("moved", "m.py", "x = 1\n", "x = 2\n", ("tests/t.py",), "d")
    with pytest.raises(LookupError, match=r"probe moved: snippet not found in m.py \(code moved: update the probe\)"):
        plant(probe, "y = 1\n")
    (tmp_path / "m.py").write_text("y = 1\n")
    verdict = run_probe(probe, tmp_path)
    assert verdict.status == "STALE" and not verdict.ok and "snippet not found in m.py" in verdict.detail


def test_a_surviving_and_a_killed_probe(tmp_path):
    """A toy repository: one test checks add(); the probe that breaks add() is killed, one in dead code survives."""
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a + b\n\n\ndef unused():\n    return 1\n")
    (tmp_path / "test_calc.py").write_text("from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    killed = run_probe(Probe("add", "calc.py", "return a + b", "return a - b", ("test_calc.py",), "d"), tmp_path)
    assert killed.status == "killed", killed
    survived = run_probe(Probe("dead", "calc.py", "return 1", "return 2", ("test_calc.py",), "d"), tmp_path)
    assert survived.status == "SURVIVED", survived
    assert (tmp_path / "calc.py").read_text().count("return a + b") == 1  # restored after each probe
