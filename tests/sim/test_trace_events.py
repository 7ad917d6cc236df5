"""--trace-events: a hand-built run exported as Chrome trace-event JSON, counted event by event."""

from __future__ import annotations

import json

from moesim.cli import main
from moesim.hw_profiles.loader import load_profile
from moesim.sim.timed_replay import TimedConfig, timed_replay
from moesim.sim.trace_events import write_trace_events
from moesim.traces.format.build import simple_trace

MiB = 2**20


def _run():
    # 2 passes x 2 layers, one expert per cell, 1 MiB experts, cache of 2 experts, LRU, no prefetch:
    # pass 0: L0 e0 miss, L1 e1 miss; pass 1: L0 e0 hit, L1 e2 miss (evicts e1, the least recent).
    trace = simple_trace([[[0], [1]], [[0], [2]]], n_layers=2, n_experts=4, object_bytes=MiB)
    result = timed_replay(trace, load_profile("rtx4090"), TimedConfig(eviction="lru", capacity_bytes=2 * MiB))
    return trace, result


def test_hand_built_run_gives_the_expected_events(tmp_path):
    trace, result = _run()
    path = tmp_path / "run.trace.json"
    write_trace_events(result, str(path))
    data = json.loads(path.read_text())  # valid JSON
    events = data["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    by_cat: dict[str, int] = {}
    for e in complete:
        by_cat[e["cat"]] = by_cat.get(e["cat"], 0) + 1
    # 4 cells: a dense and an experts slice each; 3 cells stalled for their miss; 3 demand copies on
    # the one h2d copy engine; no prefetch; one slice per pass (both single-token passes are decode)
    assert by_cat == {"compute": 8, "stall": 3, "demand": 3, "decode": 2}
    meta = [e for e in events if e["ph"] == "M"]
    assert sorted(e["args"]["name"] for e in meta) == sorted(
        ["compute", "compute stream", "passes", "forward passes", "copies", "h2d engine 0"])
    assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in complete)
    copies = sorted((e for e in complete if e["cat"] == "demand"), key=lambda e: e["ts"])
    assert [c["args"]["object"] for c in copies] == [0, 4 + 1, 4 + 2]  # object = layer * n_experts + expert
    assert all(a["ts"] + a["dur"] <= b["ts"] + 1e-3 for a, b in zip(copies, copies[1:]))  # one engine: no overlap
    # the stall of cell 0 ends when its copy lands (the expert compute starts right after)
    first_copy_end = copies[0]["ts"] + copies[0]["dur"]
    stall0 = min((e for e in complete if e["cat"] == "stall"), key=lambda e: e["ts"])
    assert abs(stall0["ts"] + stall0["dur"] - first_copy_end) < 1e-3


def test_replay_cli_writes_trace_events(tmp_path, capsys):
    path = tmp_path / "ev.json"
    code = main(["replay", "--trace", "bundled:switch-base-8", "--policy", "lru", "--capacity", "25%",
                 "--profile", "rtx4090", "--trace-events", str(path), "--json"])
    assert code == 0
    data = json.loads(path.read_text())
    assert any(e.get("cat") == "compute" for e in data["traceEvents"])


def test_trace_events_need_one_timed_run(tmp_path, capsys):
    path = tmp_path / "ev.json"
    code = main(["replay", "--trace", "bundled:switch-base-8", "--policy", "lru", "--capacity", "10%,25%",
                 "--profile", "rtx4090", "--trace-events", str(path)])
    assert code == 1 and not path.exists()
    assert "--trace-events" in capsys.readouterr().err
