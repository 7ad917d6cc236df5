"""Regression tests for issue #16, one per reported case: nothing lost, nothing executed, no tracebacks.

Each test reproduces a line of the issue as written and checks the fixed behaviour: exit 1 with one
line naming the option/file, the input unchanged, nothing half-written. Data loss, code execution
and silent wrong results here; crashes, denial of service and the smaller cases in
tests/test_hardening_limits.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from moesim import atomic_io
from moesim.cli import main
from moesim.errors import UserError
from moesim.sweeps import store
from moesim.sweeps.runner import run_sweep
from moesim.sweeps.spec import load_spec
from moesim.units import parse_quantity
from tests.hardening_helpers import ROOT, fails, small_spec, trace, trace_file  # noqa: F401 (fixtures)


# ---- data loss ---------------------------------------------------------------------------------
def test_an_output_equal_to_an_input_is_refused_and_the_input_kept(trace, tmp_path, capsys):
    before = trace.read_bytes()
    fails(["replay", "--trace", trace, "--policy", "lru", "--capacity", "5%", "--out", trace], capsys, "also an input")
    fails(["traces", "fit", trace, "--out", trace], capsys, "also an input")
    assert trace.read_bytes() == before
    result = tmp_path / "r.parquet"
    assert main(["replay", "--trace", str(trace), "--policy", "lru", "--capacity", "5%", "--out", str(result)]) == 0
    kept = result.read_bytes()
    fails(["report", result, "--out", result], capsys, "--out", "also an input")
    fails(["report", result, "--out", tmp_path / "a.html", "--md", tmp_path / "a.html"], capsys, "--md")
    assert result.read_bytes() == kept and not (tmp_path / "a.html").exists()
    out = tmp_path / "sw"
    run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
    table = (out / store.TABLE).read_bytes()
    fails(["report", out, "--out", tmp_path / "r.html", "--md", out / store.TABLE], capsys, "also an input")
    assert (out / store.TABLE).read_bytes() == table


@pytest.mark.parametrize("command", [
    ["traces", "convert", "{trace}", "--out", "{dir}"],
    ["traces", "synth", "--requests", "1", "--out", "{dir}"],
    ["traces", "fit", "{trace}", "--out", "{dir}"],
    ["report", "{result}", "--out", "{dir}"],
    ["sweep-table", "{sweep}", "--out", "{dir}"],
    ["traces", "convert", "{trace}", "--out", "{trace}/x.parquet"],
    ["traces", "synth", "--requests", "1", "--out", "/proc/no/x.parquet"],
])
def test_a_directory_or_unwritable_output_is_one_line(command, trace, tmp_path, capsys):
    result = tmp_path / "r.parquet"
    assert main(["replay", "--trace", str(trace), "--policy", "lru", "--capacity", "5%", "--out", str(result)]) == 0
    sweep = tmp_path / "sw"
    run_sweep(load_spec(small_spec(tmp_path)), sweep, jobs=1, progress=False)
    (tmp_path / "folder").mkdir()
    argv = [a.format(trace=trace, dir=tmp_path / "folder", result=result, sweep=sweep) for a in command]
    fails(argv, capsys)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_damaged_table_is_rebuilt_and_a_damaged_run_file_rerun(trace, tmp_path, capsys):
    out = tmp_path / "sw"
    first = run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
    reference = first.table
    table = out / store.TABLE
    table.write_bytes(table.read_bytes()[:50])  # truncated cache
    assert main(["sweep-table", str(out), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 4
    run = store.run_files(out)[0]
    run.write_bytes(run.read_bytes()[:100])  # truncated run file: not done
    assert main(["sweep-table", str(out)]) == 0
    assert "damaged run file" in capsys.readouterr().err
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    table.write_bytes(table.read_bytes()[:50])  # and a truncated cache does not stop `sweep` either
    again = run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
    assert again.ran == 1 and again.skipped == 3
    assert (out / store.RUNS / (run.name + store.DAMAGED)).is_file()  # kept aside, not deleted
    assert again.table.drop(columns=[]).equals(reference)


def test_temporary_files_of_dead_writers_go_and_live_ones_stay(trace, tmp_path):
    target = tmp_path / "conv.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".conv.parquet.{dead_pid}.abc123.tmp"
    live = tmp_path / f".conv.parquet.{os.getppid()}.def456.tmp"
    stale.write_text("x")
    live.write_text("y")
    assert main(["traces", "convert", str(trace), "--out", str(target)]) == 0
    assert not stale.exists() and live.exists()


def test_a_report_pair_is_written_as_one_unit(tmp_path, monkeypatch):
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    html.write_text("old html")
    md.write_text("old md")
    calls = []
    real = atomic_io._publish

    def publish_then_die(tmp, target, label):
        calls.append(target)
        raise KeyboardInterrupt  # killed before the first rename
    monkeypatch.setattr(atomic_io, "_publish", publish_then_die)
    with pytest.raises(KeyboardInterrupt):
        atomic_io.write_texts_atomic({html: "new html", md: "new md"})
    monkeypatch.setattr(atomic_io, "_publish", real)
    assert html.read_text() == "old html" and md.read_text() == "old md"  # both old: never a mixed pair
    assert not list(tmp_path.glob(".*.tmp"))
    atomic_io.write_texts_atomic({html: "new html", md: "new md"})
    assert html.read_text() == "new html" and md.read_text() == "new md"


def test_two_sweeps_into_one_folder_the_second_is_refused(trace, tmp_path):
    out = tmp_path / "sw"
    (out / store.RUNS).mkdir(parents=True)
    inflight = out / store.RUNS / f".x.parquet.{os.getpid()}.zz.tmp"
    with store.locked(out):
        inflight.write_text("another sweep's file")
        with pytest.raises(UserError, match="another sweep"):
            run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
        assert inflight.exists()  # the refused sweep touched nothing
    run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)  # the lock went with its holder
    assert not inflight.exists()  # and the next start cleaned what a dead sweep left


# ---- code execution and spec loading -----------------------------------------------------------
def test_a_spec_runs_no_code_without_allow_code(trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "evil.yaml"
    spec.write_text("traces: {f: {factory: 'os:system', args: {command: 'touch pwned'}}}\neviction: [lru]\n"
                    "capacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "evil.yaml: traces: f: factory", "--allow-code")
    spec.write_text("imports: [os]\ntraces: {t: v.parquet}\neviction: [lru]\ncapacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "evil.yaml: imports", "--allow-code")
    assert not (tmp_path / "pwned").exists()


def test_duplicate_keys_and_alias_bombs_are_refused(tmp_path, capsys):
    spec = tmp_path / "dup.yaml"
    spec.write_text("traces: {t: v.parquet}\neviction: [lru, fifo]\neviction: [lru]\ncapacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "dup.yaml", "duplicate key 'eviction'")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    spec.write_text(bomb + "traces: {t: v.parquet}\neviction: [lru]\ncapacities: ['5%']\n")
    start = time.monotonic()
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "anchors and aliases")
    assert time.monotonic() - start < 5
    profile = tmp_path / "p.yaml"
    profile.write_text(bomb)
    fails(["profiles", "validate", profile], capsys, "anchors and aliases")


def test_relative_trace_paths_resolve_against_the_spec_folder(trace, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outcome = run_sweep(load_spec(small_spec(tmp_path)), tmp_path / "o", jobs=1, progress=False)
    assert (outcome.table["status"] == "ok").all() and len(outcome.table) == 4


def test_sweep_errors_name_the_spec_file_and_key(trace, tmp_path, capsys):
    spec = small_spec(tmp_path, trace="missing.parquet")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: traces: t")
    spec = small_spec(tmp_path, extra=f"seeds: [{2**64}]\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: seeds", "outside 0..2**64-1")
    spec.write_text("traces: {t: v.parquet}\neviction: [lru]\ncapacities: ['1e9TiB']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: capacities")
    spec.write_text("traces: {t: {synthetic: {accesses: 1e12}}}\neviction: [lru]\ncapacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: traces: t", "memory")


# ---- silent wrong results ----------------------------------------------------------------------
def test_a_model_of_another_shape_is_refused(trace, capsys):
    fails(["replay", "--trace", trace, "--policy", "lru", "--capacity", "25%", "--model", "mixtral-8x7b",
           "--profile", "a100-80gb"], capsys, "--model", "32 MoE layers x 8 experts")


def test_set_without_profile_is_refused(trace, capsys):
    fails(["replay", "--trace", trace, "--policy", "lru", "--capacity", "25%", "--set", "links.h2d.bandwidth=1GB/s"],
          capsys, "--set", "--profile")


def test_an_absurd_bandwidth_is_refused_by_profiles_validate(tmp_path, capsys):
    text = (ROOT / "moesim/hw_profiles/data/rtx4090.yaml").read_text()
    assert "value: 25 GB/s" in text
    bad = text.replace("value: 25 GB/s", "value: 1e-300 B/s", 1)
    profile = tmp_path / "p.yaml"
    profile.write_text(bad)
    fails(["profiles", "validate", profile], capsys, "below 1 per second")
    with pytest.raises(UserError, match="below 1 per second"):
        parse_quantity("1e-300 B/s", "bandwidth")


@pytest.mark.parametrize("command", ["replay", "compare"])
def test_layer_scope_with_a_profile_runs(command, trace, capsys):
    policy = ["--policy", "lru"] if command == "replay" else ["--policies", "lru"]
    assert main([command, "--trace", str(trace), *policy, "--capacity", "25%", "--scope", "layer",
                 "--profile", "a100-80gb"]) == 0


def test_a_user_error_is_one_line_whatever_its_text_holds():
    """Names read from a broken file can hold newlines, tabs or NULs: the message writes them as
    escapes, so the CLI's one line stays one line (moesim/errors.py)."""
    from moesim.errors import UserError

    error = UserError("no column 'a\nb'", "f\x00.csv").located("run\t1")
    assert str(error) == "run\\t1: f\\x00.csv: no column 'a\\nb'"
    assert str(UserError("plain é text", "x.csv")) == "x.csv: plain é text"
