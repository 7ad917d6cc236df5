"""check-run and fit-profile end to end on the bundled runs (the measurements shipped in moesim/runs/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moesim.cli import main
from moesim.hw_profiles.loader import load_profile


def test_check_run_on_the_bundled_gemma_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["check-run", "bundled:gemma", "--trace", "bundled:gemma", "--profile", "phone-oneplus-15r",
                 "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    s = data["summary"]
    assert data["trace_kind"] == "the run's own" and s["steps"] == 128
    assert s["hits"]["prefill_lookups"] == 1538
    assert s["hits"]["steps_within_rounding"] >= 120  # the simulator's LRU vs the engine's: a few rows differ
    assert s["tpot_s"]["measured"]["mean"] == pytest.approx(0.20115, abs=1e-4)  # gemma.metrics summary: 0.201
    assert s["ttft_s"]["measured_prefill"] == 6.65
    assert {"steps.csv", "summary.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert "wall_s_predicted" in (out / "steps.csv").read_text().splitlines()[0]


def test_fit_profile_writes_a_loadable_profile_and_never_overwrites(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fitted.yaml"
    args = ["fit-profile", "bundled:gemma", "--trace", "bundled:gemma", "--profile", "phone-oneplus-15r",
            "--free", "memory_bandwidth,peak_flops,mgmt_per_byte", "--out", str(out), "--json"]
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["fitted"]) == {"memory_bandwidth", "peak_flops", "mgmt_per_byte"}
    profile = load_profile(str(out))
    assert profile.device.memory_bandwidth == pytest.approx(data["fitted"]["memory_bandwidth"]["value"], rel=1e-4)
    assert "fitted by" in profile.provenance["processors.cpu.memory_bandwidth"]
    assert "mgmt_per_byte" in out.read_text().splitlines()[2]
    assert main(args) == 1
    assert "never overwrites" in capsys.readouterr().err
    # check-run with the fitted profile adds the fitted bookkeeping per byte read to each step's wall time
    from moesim.runs.profile_out import fitted_extras

    mgmt = fitted_extras(str(out))["mgmt_per_byte"]
    assert mgmt == pytest.approx(data["fitted"]["mgmt_per_byte"]["value"], rel=1e-5)
    report = tmp_path / "with-mgmt"
    assert main(["check-run", "bundled:gemma", "--trace", "bundled:gemma", "--profile", str(out), "--out", str(report),
                 "--json"]) == 0
    capsys.readouterr()
    import pandas as pd

    steps = pd.read_csv(report / "steps.csv")
    # every step read some bytes; its bookkeeping is mgmt x the simulator's (unpadded) bytes of that step
    assert (steps["mgmt_s_predicted"] > 0).all()
    comp = json.loads((report / "summary.json").read_text())["summary"]["components_s"]["cache bookkeeping"]
    assert comp["predicted"] == pytest.approx(steps["mgmt_s_predicted"].mean())
    assert comp["measured"] == pytest.approx(steps["mgmt_s_measured"].mean())


def test_user_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("step,steps,wall_ms\n1,2,x\n")
    assert main(["check-run", str(bad), "--trace", "bundled:gemma", "--profile", "phone-oneplus-15r"]) == 1
    assert "bad.csv: row 1, field wall_ms" in capsys.readouterr().err
    # a generic run without lanes / budget: the options it needs are named
    steps = tmp_path / "s.csv"
    steps.write_text("i,lat\n1,200\n2,190\n")
    assert main(["check-run", str(steps), "--columns", "step=i,wall_ms=lat", "--trace", "bundled:gemma",
                 "--profile", "phone-oneplus-15r"]) == 1
    err = capsys.readouterr().err
    assert "--cache-mib" in err and "--lanes" in err and len(err.strip().splitlines()) == 1
    assert main(["check-run", "bundled:nope", "--trace", "bundled:gemma", "--profile", "phone-oneplus-15r"]) == 1
