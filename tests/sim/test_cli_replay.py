"""`moesim replay` and `moesim compare` end to end on a small trace (the loader is stubbed here;
tests/sim/test_bigmoeonedge.py runs them on the real engine traces through moesim.traces.format.io)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import moesim
from moesim.cli import main
from moesim.sim import cli_replay
from moesim.reports.run_file import read_run_file
from moesim.traces.format.trace_meta import PREFILL, DECODE
from moesim.traces.format.build import simple_trace


def _trace():
    rng = np.random.default_rng(5)
    passes = [[np.concatenate([rng.choice(8, 2, replace=False) for _ in range(4)]).tolist() for _ in range(4)]]
    passes += [[rng.choice(8, 2, replace=False).tolist() for _ in range(4)] for _ in range(60)]
    return simple_trace(passes, n_layers=4, n_experts=8, top_k=2, object_bytes=[100, 100, 200, 200],
                        phases=[PREFILL] + [DECODE] * 60)


@pytest.fixture
def small_trace(monkeypatch):
    trace = _trace()
    loaded = []

    def fake_load(text, args=None):
        if text != "small.trace":
            from moesim.errors import UserError

            raise UserError("no such file", text)
        loaded.append(text)
        return trace

    monkeypatch.setattr(cli_replay, "load_trace_arg", fake_load)
    return trace


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_replay_json_carries_the_resolved_config_version_and_trace_hash(small_trace, capsys):
    assert main(["replay", "--trace", "small.trace", "--policy", "lfu:decay=0.5", "--capacity", "25%",
                 "--count-only", "--json", "--seed", "7"]) == 0
    data = _json(capsys)
    assert data["moesim_version"] == moesim.__version__
    assert data["trace"]["hash"] == small_trace.content_hash()
    (run,) = data["runs"]
    cfg = run["config"]
    assert cfg["policy"] == {"name": "lfu", "label": "lfu:decay=0.5", "kind": "eviction", "params": {"decay": 0.5},
                             "alias_of": None, "offline": False}
    assert cfg["capacity"] == "25%" and cfg["capacity_bytes"] == small_trace.total_object_bytes() // 4
    assert (cfg["scope"], cfg["mode"], cfg["seed"]) == ("global", "event", 7)
    s = run["summary"]
    assert s["hits"] + s["misses"] == s["requests"]
    assert s["by_phase"]["decode"]["requests"] == 60 * 4 * 2


def test_replay_capacity_list_gives_one_run_each_in_order(small_trace, capsys):
    assert main(["replay", "--trace", "small.trace", "--capacity", "2slots,50%,1KiB", "--count-only", "--json"]) == 0
    runs = _json(capsys)["runs"]
    assert [r["config"]["capacity_bytes"] for r in runs] == [400, small_trace.total_object_bytes() // 2, 1024]
    misses = [r["summary"]["misses"] for r in runs]
    assert misses[0] >= misses[2] >= misses[1]  # LRU is a stack algorithm: more room, no more misses


def test_layer_scope_and_weights_reach_the_core(small_trace, capsys):
    assert main(["replay", "--trace", "small.trace", "--capacity", "1000B", "--scope", "layer",
                 "--layer-weights", "1,1,2,6", "--count-only", "--json"]) == 0
    cfg = _json(capsys)["runs"][0]["config"]
    assert cfg["partition_capacity_bytes"] == [100, 100, 200, 600]
    assert main(["replay", "--trace", "small.trace", "--capacity", "1000B", "--layer-weights", "1,1,2,6",
                 "--count-only"]) == 1


def test_compare_adds_belady_as_the_bound_and_it_has_the_fewest_misses(small_trace, capsys):
    assert main(["compare", "--trace", "small.trace", "--policies", "lru,least-stale,lfu,fifo",
                 "--capacity", "10%,25%,50%", "--count-only", "--json"]) == 0
    data = _json(capsys)
    assert data["bound_policy"] == "belady"
    labels = [r["config"]["policy"]["label"] for r in data["runs"]]
    assert labels == ["lru"] * 3 + ["least-stale"] * 3 + ["lfu"] * 3 + ["fifo"] * 3 + ["belady"] * 3
    by_cap: dict[str, dict[str, int]] = {}
    for r in data["runs"]:
        by_cap.setdefault(r["config"]["capacity"], {})[r["config"]["policy"]["label"]] = r["summary"]["misses"]
    for cap, misses in by_cap.items():
        assert misses["belady"] == min(misses.values()), (cap, misses)


def test_compare_text_table_has_the_miss_taxonomy_and_marks_the_bound(small_trace, capsys):
    assert main(["compare", "--trace", "small.trace", "--capacity", "5%,25%", "--count-only"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("policy"))
    for column in ("requests", "hit rate", "compulsory", "capacity", "collision", "bytes fetched"):
        assert column in header
    assert "belady (bound)" in out
    assert sum(line.startswith("least-stale") for line in out.splitlines()) == 2


def test_out_writes_per_layer_and_per_pass_parquet(small_trace, tmp_path, capsys):
    out = tmp_path / "r" / "result.parquet"
    assert main(["replay", "--trace", "small.trace", "--capacity", "30%", "--count-only", "--out", str(out)]) == 0
    results, meta = read_run_file(out)  # the run file a sweep writes (moesim/reports/run_file.py)
    assert meta["trace"]["hash"] == small_trace.content_hash()
    layers, passes, runs = results.layers, results.passes, results.runs
    assert layers["layer"].tolist() == [0, 1, 2, 3] and len(passes) == small_trace.n_passes
    summary_requests = int(runs["requests"].iloc[0])
    assert int(layers.requests.sum()) == int(passes.requests.sum()) == summary_requests
    assert set(passes.phase) == {"prefill", "decode"}
    assert int(layers.capacity_misses.sum()) == int(runs["capacity_misses"].iloc[0])
    assert runs["capacity"].tolist() == ["30%"] and runs["engine"].tolist() == ["count"]
    assert meta["runs"][0]["run_id"] == runs["run_id"].iloc[0]
    assert meta["runs"][0]["config"]["policy"]["label"] == "lru"
    assert [f for f in os.listdir(out.parent)] == ["result.parquet"]  # no temporary file left behind
    first = out.read_bytes()
    assert main(["replay", "--trace", "small.trace", "--capacity", "30%", "--count-only", "--out", str(out)]) == 0
    assert out.read_bytes() == first  # same inputs, byte-identical output


@pytest.mark.parametrize("argv, message", [
    (["--capacity", "4000"], "no unit"),
    (["--capacity", "5%", "--policy", "lru:x=1"], "takes no parameters"),
    (["--capacity", "5%", "--policy", "optimal"], "unknown eviction policy"),
    (["--capacity", "5%", "--replay", "parallel"], "invalid choice"),
    (["--capacity", "5%", "--trace", "missing.trace"], "no such file"),
])
def test_user_mistakes_exit_1_with_one_line(small_trace, capsys, argv, message):
    base = ["replay", "--trace", "small.trace", "--count-only"]
    assert main(base + argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_without_a_profile_replay_counts(small_trace, capsys):
    assert main(["replay", "--trace", "small.trace", "--capacity", "5%", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "timed" not in data and data["runs"][0]["summary"]["requests"] > 0


def test_prefetch_without_a_profile_is_a_one_line_error_naming_profile(small_trace, capsys):
    assert main(["replay", "--trace", "small.trace", "--capacity", "5%", "--prefetch", "oracle"]) == 1
    err = capsys.readouterr().err
    assert "--profile" in err and len(err.strip().splitlines()) == 1


def test_with_a_profile_replay_is_timed_and_counts_agree_with_the_count_replay(small_trace, capsys):
    assert main(["replay", "--trace", "small.trace", "--capacity", "25%", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["runs"][0]["summary"]
    assert main(["replay", "--trace", "small.trace", "--capacity", "25%", "--profile", "h100-sxm", "--json"]) == 0
    timed = json.loads(capsys.readouterr().out)
    run = timed["runs"][0]
    assert timed["timed"] is True
    assert run["hits"] == counts["hits"] and run["misses"] == counts["misses"]
    assert run["tpot_s"]["mean"] > 0


def test_a_failed_run_leaves_no_output_file(small_trace, tmp_path, monkeypatch, capsys):
    out = tmp_path / "result.parquet"
    import moesim.reports.run_file as run_file

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(run_file.pq, "write_table", broken)
    assert main(["replay", "--trace", "small.trace", "--capacity", "5%", "--count-only", "--out", str(out)]) == 1
    assert "cannot write the result: disk full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _olmoe_like(n_passes: int, seed: int = 0):
    """OLMoE-1B-7B shape: 16 layers x 64 experts of 12 MiB, top-8, one token per decode pass,
    Zipf(1.1) popularity per layer (a smaller cousin of bench/count_replay.py's workload)."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, 65) ** 1.1
    w /= w.sum()
    ranking = [rng.permutation(64) for _ in range(16)]
    passes = [[ranking[layer][rng.choice(64, 8, replace=False, p=w)].tolist() for layer in range(16)]
              for _ in range(n_passes)]
    return simple_trace(passes, n_layers=16, n_experts=64, top_k=8, object_bytes=12 * 2**20)


def test_compare_on_an_olmoe_shaped_trace_belady_bounds_every_policy(monkeypatch, capsys):
    from moesim.policies.registry import available

    monkeypatch.setattr(cli_replay, "load_trace_arg", lambda text, args=None: _olmoe_like(80))
    names = [r.name for r in available("eviction") if r.name not in ("belady", "static-hot")]
    assert main(["compare", "--trace", "olmoe-like", "--policies", ",".join(names), "--capacity", "1%,5%,25%",
                 "--count-only", "--json"]) == 0
    data = _json(capsys)
    for cap in ("1%", "5%", "25%"):
        runs = {r["config"]["policy"]["label"]: r["summary"] for r in data["runs"] if r["config"]["capacity"] == cap}
        assert all("collision" in s for s in runs.values())
        forced = runs["belady"]["misses"]
        for label, s in runs.items():
            if label not in ("belady", "belady-bypass"):
                assert forced <= s["misses"], (cap, label, forced, s["misses"])
        assert runs["belady-bypass"]["misses"] <= forced
