"""make mutants' bookkeeping (bench/mutants/run_mutmut.py): what counts as killed, the per-module
score, and --recheck merging re-run survivors into a saved result. mutmut itself is not run here."""

from __future__ import annotations

import json

from bench.mutants import run_mutmut as rm


def _row(module: str, n: int, code: int | None) -> dict:
    return {"module": module, "mutant": f"{module[:-3].replace('/', '.')}.x_f__mutmut_{n}", "exit_code": code}


def test_no_test_mutants_survive_and_timeouts_count_as_killed() -> None:
    rows = [_row("m/a.py", 1, 1), _row("m/a.py", 2, 0), _row("m/a.py", 3, 33), _row("m/a.py", 4, 36),
            _row("m/a.py", 5, None)]
    assert rm.score(rows) == {"total": 5, "killed": 1, "timeout": 1, "survived": 2, "other": 1}


def test_scores_leave_out_equivalent_survivors_per_target_and_per_module(tmp_path, monkeypatch) -> None:
    """a.py: 3 killed, 1 equivalent survivor -> 3 / 3 = 100 %; b.py: 1 killed, 1 open -> 1 / 2 = 50 %;
    the target: 4 / (6 - 1) = 80 %, raw 4 / 6 = 66.7 %."""
    rows = [_row("m/a.py", i, 1) for i in range(3)] + [_row("m/a.py", 3, 0), _row("m/b.py", 0, 1), _row("m/b.py", 1, 0)]
    monkeypatch.setattr(rm, "RAW", tmp_path)
    monkeypatch.setattr(rm, "TARGETS", [rm.Target("t", ("m/*.py",), ())])
    (tmp_path / "t.json").write_text(json.dumps({"modules": ["m/*.py"], "seconds": 1, "mutants": rows}))
    notes = tmp_path / "notes.yaml"
    notes.write_text(f"{rows[3]['mutant']}:\n  verdict: equivalent\n  why: because\n")
    monkeypatch.setattr(rm, "NOTES", notes)
    text = rm.write_report(tmp_path / "M.md")
    assert "| t | m/*.py | 6 | 4 | 2 (1 / 1) | 0 | 80.0 % | 66.7 % | 1 s |" in text
    assert "| t | m/a.py | 4 | 3 | 1 (1 / 0) | 100.0 % |" in text
    assert "| t | m/b.py | 2 | 1 | 1 (0 / 1) | 50.0 % |" in text
    assert f"`{rows[5]['mutant']}` (open): not yet explained" in text


def test_recheck_reruns_only_the_survivors_and_keeps_the_rest(tmp_path, monkeypatch) -> None:
    saved = [_row("m/a.py", 1, 1), _row("m/a.py", 2, 0), _row("m/a.py", 3, 33)]
    monkeypatch.setattr(rm, "RAW", tmp_path)
    (tmp_path / "t.json").write_text(json.dumps({"modules": ["m/a.py"], "seconds": 9, "tests": ["old"], "mutants": saved}))
    asked = {}

    def fake_run(target, max_children, timeout_s, names=None):
        asked["names"] = names
        fresh = [_row("m/a.py", 1, None), _row("m/a.py", 2, 1), _row("m/a.py", 3, 0)]
        return {"recorded": "now", "seconds": 2, "tests": ["new"], "mutants": fresh}

    monkeypatch.setattr(rm, "run_target", fake_run)
    result = rm.recheck(rm.Target("t", ("m/a.py",), ("new",)), 1, 10.0)
    assert asked["names"] == [saved[1]["mutant"], saved[2]["mutant"]]
    assert [r["exit_code"] for r in result["mutants"]] == [1, 1, 0]
    assert result["rechecked"]["survivors_before"] == 2 and result["tests"] == ["new"] and result["seconds"] == 9
