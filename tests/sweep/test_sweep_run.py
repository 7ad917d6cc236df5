"""Sweeps end to end: 216 runs complete, failures are recorded and the sweep goes on, a re-run
skips what is done, and a sweep killed with SIGKILL resumes to the very table an uninterrupted
run writes. Counts are checked against libcachesim and a hand-computed case."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import libcachesim as lcs
import pyarrow.parquet as pq
import pytest
import toy_plugin

from moesim.cli import main
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sweeps import store
from moesim.sweeps.runner import run_sweep
from moesim.sweeps.spec import load_spec, parse_spec
from moesim.traces.format.build import simple_trace

CAPACITIES = ["5%", "10%", "15%", "20%", "30%", "40%", "60%", "80%", "100%"]
SPEC_216 = f"""
name: toy-216
imports: [toy_policies]
traces:
  skewed: {{factory: "toy_plugin:zipf_trace", args: {{seed: 1, zipf: 1.2, passes: 30}}}}
  flat: {{factory: "toy_plugin:zipf_trace", args: {{seed: 2, zipf: 0.5, passes: 30}}}}
eviction: [lru, toy-fifo, toy-fail]
capacities: {json.dumps(CAPACITIES)}
scope: [global, layer]
replay: [event, sequential]
seeds: [0]
"""
KEY = ["trace", "capacity", "scope", "mode"]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "toy-216.yaml"
    path.write_text(SPEC_216)
    return path


@pytest.fixture(scope="module")
def reference(spec_file, tmp_path_factory):
    """The uninterrupted sweep, on two worker processes."""
    out = tmp_path_factory.mktemp("reference")
    outcome = run_sweep(load_spec(spec_file, allow_code=True), out, jobs=2, progress=False)
    return out, outcome


def test_216_runs_complete_and_failed_runs_are_rows_with_their_error(reference):
    out, outcome = reference
    table = outcome.table
    assert outcome.total == 216 and outcome.ran == 216 and len(table) == 216
    assert len(store.run_files(out)) == 216
    assert list(table["run_id"]) == sorted(table["run_id"])
    ok = table[table["status"] == "ok"]
    assert (ok["requests"] == ok["hits"] + ok["late_prefetch"] + ok["misses"]).all()
    assert (ok["misses"] == ok["compulsory"] + ok["capacity_misses"] + ok["collision"]).all()
    # toy-fail is FIFO until it must evict: it fails exactly where FIFO evicted, else matches FIFO exactly
    fifo = table[table["eviction"] == "toy-fifo"].set_index(KEY)
    fail = table[table["eviction"] == "toy-fail"].set_index(KEY)
    assert len(fail) == 72
    for key, row in fail.iterrows():
        twin = fifo.loc[key]
        if twin["evictions"] > 0:
            assert row["status"] == "error"
            assert row["error"] == "RuntimeError: toy-fail was asked for a victim"
            assert row["misses"] is __import__("pandas").NA
        else:
            assert row["status"] == "ok" and row["error"] == ""
            for col in ("requests", "hits", "misses", "compulsory", "capacity_misses", "collision"):
                assert row[col] == twin[col]
    failed = fail[fail["status"] == "error"]
    assert 0 < len(failed) < 72 and outcome.failed == len(failed)
    # the traceback travels in the failed run's file, not in the table
    run_id = failed["run_id"].iloc[0]
    meta = json.loads(pq.read_schema(store.run_path(out, run_id)).metadata[b"moesim"])
    assert "toy-fail was asked for a victim" in meta["traceback"] and meta["config"]["eviction"] == "toy-fail"


def test_a_rerun_skips_every_finished_run_and_rewrites_nothing(reference, spec_file):
    out, first = reference
    before = {p.name: p.read_bytes() for p in store.run_files(out)}
    again = run_sweep(load_spec(spec_file, allow_code=True), out, jobs=2, progress=False)
    assert (again.ran, again.skipped) == (0, 216)
    assert {p.name: p.read_bytes() for p in store.run_files(out)} == before
    assert again.table.equals(first.table)


def test_sigkill_halfway_then_resume_gives_the_uninterrupted_table(reference, spec_file, tmp_path, subprocess_env):
    ref_out, _ = reference
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "moesim", "sweep", str(spec_file), "--out", str(out), "--jobs", "1", "--allow-code",
           "--no-progress"]
    child = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(store.run_files(out)) < 40:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    done_at_kill = len(store.run_files(out))
    assert 40 <= done_at_kill < 216
    resumed = run_sweep(load_spec(spec_file, allow_code=True), out, jobs=1, progress=False)
    assert resumed.skipped == done_at_kill and resumed.ran == 216 - done_at_kill
    assert not [p for p in (out / "runs").iterdir() if p.name.startswith(".")]
    # one file per run, each byte-identical to the uninterrupted sweep's, and the same table bytes
    assert sorted(p.name for p in store.run_files(out)) == sorted(p.name for p in store.run_files(ref_out))
    for path in store.run_files(ref_out):
        assert (out / "runs" / path.name).read_bytes() == path.read_bytes(), path.name
    assert (out / store.TABLE).read_bytes() == (ref_out / store.TABLE).read_bytes()


def _sequential_misses(trace, cache_cls, slots: int) -> int:
    cache = cache_cls(cache_size=slots * 1000)
    misses = 0
    for obj in trace.object_ids().tolist():
        misses += not cache.get(lcs.Request(obj_id=int(obj), obj_size=1000))
    return misses


def test_sequential_lru_and_fifo_match_libcachesim(reference):
    table = reference[1].table
    trace = toy_plugin.zipf_trace(seed=1, zipf=1.2, passes=30)
    seq = table[(table["trace"] == "skewed") & (table["mode"] == "sequential") & (table["scope"] == "global")]
    checked = 0
    for _, row in seq[seq["eviction"].isin(["lru", "toy-fifo"])].iterrows():
        slots = int(row["capacity_bytes"]) // 1000
        cls = lcs.LRU if row["eviction"] == "lru" else lcs.FIFO
        assert row["misses"] == _sequential_misses(trace, cls, slots), (row["eviction"], row["capacity"])
        checked += 1
    assert checked == 2 * len(CAPACITIES)


def test_a_hand_computed_case(tmp_path):
    # one layer, one expert per pass: 0 1 0 2 0 1 with room for 2 objects
    # LRU: miss miss hit miss(evict 1) hit miss(evict 2) -> 2 hits, 4 misses (3 compulsory, 1 capacity)
    # FIFO: miss miss hit miss(evict 0) miss(evict 1) miss(evict 2) -> 1 hit, 5 misses
    trace = simple_trace([[[e]] for e in (0, 1, 0, 2, 0, 1)], n_layers=1, n_experts=3, object_bytes=10)
    spec = parse_spec({"traces": {"hand": trace}, "eviction": ["lru", "toy-fifo"], "capacities": ["20B"]}, "hand")
    table = run_sweep(spec, tmp_path, jobs=1, progress=False).table.set_index("eviction")
    assert table.loc["lru", ["hits", "misses", "compulsory", "capacity_misses"]].tolist() == [2, 4, 3, 1]
    assert table.loc["toy-fifo", ["hits", "misses", "compulsory", "capacity_misses"]].tolist() == [1, 5, 3, 2]
    assert table.loc["lru", "capacity_share"] == pytest.approx(20 / 30)
    direct = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=20))
    assert int((direct.outcomes == 0).sum()) == 2


def test_sweep_table_command(reference, tmp_path, capsys):
    out, outcome = reference
    assert main(["sweep-table", str(out), "--json", "--out", str(tmp_path / "t.csv")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["runs"]) == 216 and data["done"] == 216 and data["expected"] == 216
    failed = [r for r in data["runs"] if r["status"] == "error"]
    assert failed and all(r["misses"] is None for r in failed)
    assert (tmp_path / "t.csv").read_text().count("\n") == 217
    assert main(["sweep-table", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("216 runs in") and "toy-fail" in text


def test_sweep_command_and_its_mistakes(tmp_path, capsys, spec_file):
    small = tmp_path / "small.yaml"
    small.write_text(SPEC_216.replace(json.dumps(CAPACITIES), '["50%"]').replace("[global, layer]", "[global]"))
    assert main(["sweep", str(small), "--out", str(tmp_path / "o"), "--jobs", "1", "--json", "--allow-code"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"] == 2 * 3 * 2 and data["ran"] == 12
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "missing.yaml: no such file" in err and len(err.strip().splitlines()) == 1
    assert main(["sweep", str(small), "--out", str(tmp_path / "o"), "--jobs", "0", "--allow-code"]) == 1
    assert main(["sweep-table", str(tmp_path / "nowhere")]) == 1
    assert "no such sweep directory" in capsys.readouterr().err
