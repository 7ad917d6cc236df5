"""scripts/gpu_check.sh runs end to end on the CPU device (tiny), so a GPU session only has to run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_runs_end_to_end_on_the_cpu_device(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--repeat", "2",
                           "--out", str(out), "--store", str(tmp_path / "store")],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for name in ("profile.yaml", "profile.calibration.json", "profile.calibration.csv", "harness/trace.parquet",
                 "harness/runs.parquet", "harness/steps.parquet", "harness/summary.json",
                 "validate/harness-trace/runs.parquet", "validate/harness-trace/summary.json",
                 "validate/harness-trace/report.md", "env.json", "README.md"):
        assert (out / name).is_file(), name
    steps = [line.split("\t") for line in (out / "timings.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["calibrate", "harness", "validate"] and all(s[2] == "0" for s in steps)
    harness = json.loads((out / "harness" / "summary.json").read_text())
    assert harness["all_counts_identical"] and len(harness["rows"]) == 2
    validate = json.loads((out / "validate" / "harness-trace" / "summary.json").read_text())
    assert validate["all_identical"] and validate["timings_meaningful"] and validate["runs"] == 6
    runs = pd.read_parquet(out / "validate" / "harness-trace" / "runs.parquet")
    assert sorted(set(runs["eviction"])) == ["belady", "lfu", "lru"] and runs["step_mape"].notna().all()
    readme = (out / "README.md").read_text()
    assert "Reference harness vs moesim" in readme and "| identical |" in readme and "test-gpu" not in readme
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"


def test_check_report_says_what_is_missing(tmp_path):
    from moesim.harness.check_report import render

    (tmp_path / "env.json").write_text(json.dumps({"device": "cuda", "date": "2026-12-08", "commands": ["x"]}))
    text = render(tmp_path)
    assert "No `test-gpu` target" in text and "Reference harness" not in text
