"""`moesim traces synth | fit | stats` end to end (needs the Parquet importer, moesim.traces.format.io)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moesim.cli import main
from moesim.traces.format import io as _trace_io  # noqa: F401 - these tests need save/load: fail, never skip, without it


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_synth_stats_fit_and_synth_from_fit(tmp_path: Path, capsys):
    trace = tmp_path / "t.parquet"
    code, out, _ = _run(capsys, "traces", "synth", "--preset", "olmoe", "--accesses", "50k", "--seed", "1",
                        "--set", "n_layers=4", "--set", "decode=48", "--out", str(trace), "--json")
    assert code == 0 and trace.exists()
    made = json.loads(out)
    assert made["accesses"] >= 50_000 and made["config"]["n_layers"] == 4 and made["config"]["seed"] == 1

    code, out, _ = _run(capsys, "traces", "stats", str(trace), "--json", "--per-layer")
    assert code == 0
    st = json.loads(out)
    assert st["summary"]["accesses"] == made["accesses"]
    assert len(st["per_layer"]) == 4
    assert 0.0 < st["predictors"]["temporal_prev_token"] < 1.0

    params = tmp_path / "params.yaml"
    code, out, _ = _run(capsys, "traces", "fit", str(trace), "--out", str(params))
    assert code == 0 and "previous-token overlap" in out and params.exists()

    again = tmp_path / "again.parquet"
    code, out, _ = _run(capsys, "traces", "synth", "--from-fit", str(params), "--requests", "3", "--out", str(again),
                        "--json")
    assert code == 0
    regenerated = json.loads(out)
    assert regenerated["config"]["n_layers"] == 4 and regenerated["config"]["n_requests"] == 3


def test_same_command_twice_writes_the_same_trace(tmp_path: Path, capsys):
    hashes = []
    for name in ("a", "b"):
        code, out, _ = _run(capsys, "traces", "synth", "--preset", "mixtral", "--requests", "2", "--seed", "4",
                            "--out", str(tmp_path / f"{name}.parquet"), "--json")
        assert code == 0
        hashes.append(json.loads(out)["content_hash"])
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("argv,message", [
    (["traces", "synth", "--set", "zipf=x", "--out", "{tmp}/x.parquet"], "zipf: cannot read 'x'"),
    (["traces", "synth", "--accesses", "ten", "--out", "{tmp}/x.parquet"], "cannot read 'ten' as a count"),
    (["traces", "synth", "--from-fit", "{tmp}/missing.yaml", "--out", "{tmp}/x.parquet"], "cannot read"),
    (["traces", "stats", "{tmp}/missing.parquet"], "no such trace file"),
    (["traces", "stats", "{tmp}/x.parquet", "--k", "0"], "k must be positive"),
])
def test_mistakes_exit_1_with_one_line_and_write_nothing(tmp_path: Path, capsys, argv, message):
    if "--k" in argv:  # needs an existing trace
        assert main(["traces", "synth", "--requests", "1", "--out", str(tmp_path / "x.parquet")]) == 0
        capsys.readouterr()
    code, _, err = _run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if "synth" in argv:
        assert not (tmp_path / "x.parquet").exists()
