"""Which count-replay engine runs: the argument, $MOESIM_ENGINE, the fallback without a compiler,
the build cache, and the CLI's --engine (identical outputs from both engines)."""

from __future__ import annotations

import json

import pytest

from moesim.cli import main
from moesim.errors import UserError
from moesim.sim import fast
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.fast import build
from moesim.traces.format.build import simple_trace

needs_compiler = pytest.mark.skipif(build.library() is None,
                                    reason=f"compiled replay unavailable: {build.unavailable_reason()}")


@pytest.fixture
def fresh_build(monkeypatch):
    """Forget the loaded library before and after the test (it is cached per process), and ignore a
    library `pip install` built into the package, so these tests exercise the first-use build."""
    build._load.cache_clear()
    monkeypatch.setattr(build, "installed_library", lambda: None)
    yield monkeypatch
    monkeypatch.undo()
    build._load.cache_clear()


def _trace():
    return simple_trace([[[0, 1]], [[2, 0]], [[1, 3]]], n_layers=1, n_experts=4, top_k=2)


@needs_compiler
def test_argument_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv(fast.ENV_VAR, "reference")
    cfg = ReplayConfig(policy="lru", capacity_bytes=2)
    assert count_replay(_trace(), cfg).engine == "reference"
    assert count_replay(_trace(), cfg, engine="fast").engine == "fast"
    monkeypatch.setenv(fast.ENV_VAR, "fast")
    assert count_replay(_trace(), cfg).engine == "fast"
    assert count_replay(_trace(), cfg, engine="auto").engine == "fast"


def test_unknown_engine_names_are_user_errors(monkeypatch):
    cfg = ReplayConfig(policy="lru", capacity_bytes=2)
    with pytest.raises(UserError, match="--engine.*'turbo'"):
        count_replay(_trace(), cfg, engine="turbo")
    monkeypatch.setenv(fast.ENV_VAR, "turbo")
    with pytest.raises(UserError, match="MOESIM_ENGINE.*'turbo'"):
        count_replay(_trace(), cfg)


def test_asking_for_fast_on_an_uncovered_policy_says_why(monkeypatch):
    from moesim.policies import registry
    from moesim.policies.eviction.lru import LRU

    class Changed(LRU):
        """An LRU subclass with no compiled form of its own."""

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("changed-lru")(Changed)
    with pytest.raises(UserError, match="policy changed-lru has no compiled form"):
        count_replay(_trace(), ReplayConfig(policy="changed-lru", capacity_bytes=2), engine="fast")


def test_without_a_compiler_auto_falls_back_and_fast_says_why(fresh_build):
    fresh_build.setattr(build, "compiler", lambda: None)
    cfg = ReplayConfig(policy="lru", capacity_bytes=2)
    assert build.library() is None
    assert build.unavailable_reason() == "no C compiler found (set CC)"
    assert count_replay(_trace(), cfg).engine == "reference"
    with pytest.raises(UserError, match="no C compiler"):
        count_replay(_trace(), cfg, engine="fast")


@needs_compiler
def test_a_failed_build_is_reported_and_leaves_no_file(fresh_build, tmp_path):
    bad = tmp_path / "replay.c"
    bad.write_text("int broken = ;\n")
    fresh_build.setattr(build, "SOURCE", bad)
    fresh_build.setenv("MOESIM_CACHE_DIR", str(tmp_path / "cache"))
    assert build.library() is None
    assert "failed on replay.c" in build.unavailable_reason()
    assert list((tmp_path / "cache").iterdir()) == []
    assert count_replay(_trace(), ReplayConfig(policy="lru", capacity_bytes=2)).engine == "reference"


@needs_compiler
def test_an_unwritable_cache_is_reported(fresh_build, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    fresh_build.setenv("MOESIM_CACHE_DIR", str(blocker))
    assert build.library() is None
    assert "MOESIM_CACHE_DIR" in build.unavailable_reason()


@needs_compiler
def test_the_build_is_cached_by_source_hash(fresh_build, tmp_path):
    fresh_build.setenv("MOESIM_CACHE_DIR", str(tmp_path))
    assert build.library() is not None
    [lib] = tmp_path.glob("moesim-replay-*")
    stamp = lib.stat().st_mtime_ns
    build._load.cache_clear()
    assert build.library() is not None
    assert [p.name for p in tmp_path.glob("moesim-replay-*")] == [lib.name]
    assert lib.stat().st_mtime_ns == stamp  # loaded, not rebuilt


def _cli(*args):
    return ["compare", "--trace", "bundled:switch-base-8", "--capacity", "10%,40%", "--count-only",
            "--policies", "lru,lfu,least-stale,arc", *args]


@needs_compiler
def test_cli_engines_give_identical_outputs(capsys, tmp_path):
    assert main(_cli("--json", "--engine", "auto", "--out", str(tmp_path / "fast.parquet"))) == 0
    fast_out = json.loads(capsys.readouterr().out)
    assert main(_cli("--json", "--engine", "reference", "--out", str(tmp_path / "ref.parquet"))) == 0
    ref_out = json.loads(capsys.readouterr().out)
    engines = [(r["config"]["policy"]["label"], r.pop("engine")) for r in fast_out["runs"]]
    assert {label: engine for label, engine in engines} == {"lru": "fast", "lfu": "fast", "least-stale": "fast",
                                                           "arc": "fast", "belady": "fast"}
    assert {r.pop("engine") for r in ref_out["runs"]} == {"reference"}
    assert fast_out == ref_out
    assert (tmp_path / "fast.parquet").read_bytes() == (tmp_path / "ref.parquet").read_bytes()


@needs_compiler
def test_cli_text_names_the_engine(capsys):
    assert main(_cli()) == 0
    assert "engine fast" in capsys.readouterr().out
    assert main(_cli("--engine", "reference")) == 0
    assert "engine reference" in capsys.readouterr().out


def test_cli_rejects_a_bad_engine(capsys, monkeypatch):
    assert main(_cli("--engine", "turbo")) == 1
    assert "invalid choice: 'turbo'" in capsys.readouterr().err
    monkeypatch.setenv(fast.ENV_VAR, "turbo")
    assert main(_cli()) == 1
    assert "MOESIM_ENGINE: engine must be one of auto, fast, reference" in capsys.readouterr().err
