"""The independent check against a real engine: BigMoeOnEdge's llama.cpp-based phone engine.

Its route traces record, per routed expert, whether the engine's expert cache (LRU over
(layer, expert), each entry costing that layer's expert bytes, 4000 MiB) already held it
(SOURCE.txt beside the traces). A global LRU over the same bytes, prefill replayed as warm-up,
must reproduce the engine's decode hit count within 0.1 % of decode accesses (engine: qwen 29,597
of 36,864; gemma 18,872 of 23,040), in both replay modes, and its per-row residency >= 99.9 %.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from moesim.sim.cache_core import HIT
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.traces.format import io as trace_io
from moesim.traces.format.trace_meta import DECODE

REPO = Path(__file__).resolve().parents[2]
# the shared traces sit beside the main checkout (repo.parent/shared); a worktree nested one level
# deeper (wt/<name>) or a checkout carrying shared/ inside finds them too
CANDIDATES = [REPO.parent / "shared", REPO / "shared", REPO.parent.parent / "shared"]
TRACES = next((c for c in CANDIDATES if (c / "traces").is_dir()), CANDIDATES[0]) / "traces" / "bigmoeonedge"
ENGINE_DECODE = {"qwen": (29_597, 36_864), "gemma": (18_872, 23_040)}
MIB = 2**20


def _path(model: str) -> Path:
    path = TRACES / f"{model}.route.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def _preamble_bytes(path: Path) -> dict[int, int]:
    sizes = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            m = re.match(r"#\s*layer=(\d+)\s+expert_bytes=(\d+)", line)
            if m:
                sizes[int(m.group(1))] = int(m.group(2))
    return sizes


@pytest.fixture(scope="module", params=sorted(ENGINE_DECODE))
def loaded(request):
    path = _path(request.param)
    return request.param, path, trace_io.load_trace(path)


def test_object_sizes_come_from_the_csv_preamble(loaded):
    _, path, trace = loaded
    sizes = _preamble_bytes(path)
    assert trace.meta.object_bytes == [sizes[layer] for layer in range(trace.meta.n_layers)]


@pytest.mark.parametrize("mode", ["sequential", "event"])
def test_lru_reproduces_the_engine_decode_hits(loaded, mode):
    model, _, trace = loaded
    engine_hits, decode_accesses = ENGINE_DECODE[model]
    result = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=4000 * MIB, mode=mode))
    decode = trace.pass_phase[trace.cell_pass()[result.stream.cell]] == DECODE
    assert int(decode.sum()) == decode_accesses  # decode cells have distinct experts: requests = accesses
    hits = int((result.outcomes[decode] == HIT).sum())
    assert abs(hits - engine_hits) <= 0.001 * decode_accesses, (model, mode, hits, engine_hits)


@pytest.mark.parametrize("mode", ["sequential", "event"])
def test_lru_agrees_with_the_engine_residency_row_by_row(loaded, mode):
    _, _, trace = loaded
    result = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=4000 * MIB, mode=mode))
    per_access = result.outcomes[result.stream.access_request]
    decode_rows = trace.pass_phase[trace.cell_pass()[trace.access_cell()]] == DECODE
    engine_hit = trace.annotations["engine_residency"] >= 1
    agreement = float(((per_access == HIT) == engine_hit)[decode_rows].mean())
    assert agreement >= 0.999


def test_replay_command_acceptance(capsys):
    from moesim.cli import main

    path = _path("qwen")
    assert main(["replay", "--trace", str(path), "--policy", "lru", "--capacity", "4000MiB", "--replay",
                 "sequential", "--count-only", "--json"]) == 0
    decode = json.loads(capsys.readouterr().out)["runs"][0]["summary"]["by_phase"]["decode"]
    assert abs(decode["hits"] - 29_597) <= 0.001 * 36_864
    assert main(["replay", "--trace", str(path), "--policy", "lru", "--capacity", "4000MiB", "--count-only",
                 "--json"]) == 0
    decode = json.loads(capsys.readouterr().out)["runs"][0]["summary"]["by_phase"]["decode"]
    assert abs(decode["hits"] - 29_597) <= 0.001 * 36_864


def test_event_replay_matches_the_engine_more_closely_than_sequential(loaded):
    # llama.cpp resolves a prefill layer's experts as one batch, like the event-atomic replay;
    # replaying the prefill rows one by one changes the warm cache the decode starts from.
    model, _, trace = loaded
    engine_hits = ENGINE_DECODE[model][0]
    gaps = {}
    for mode in ("event", "sequential"):
        result = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=4000 * MIB, mode=mode))
        decode = trace.pass_phase[trace.cell_pass()[result.stream.cell]] == DECODE
        gaps[mode] = abs(int((result.outcomes[decode] == HIT).sum()) - engine_hits)
    # the event replay reproduces the engine's decode hits exactly; the sequential one misses a few
    # (qwen 5, gemma 9 of ~30 k): the comparison is not vacuous
    assert gaps["event"] == 0 and gaps["sequential"] > 0, gaps
