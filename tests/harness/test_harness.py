"""The reference harness: its own LRU by hand, and against moesim's cache core on the traces it records."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moesim.cli import main  # noqa: E402
from moesim.harness.cli_harness import parse_slots  # noqa: E402
from moesim.harness.model import HarnessModel  # noqa: E402
from moesim.harness.offload import LruCache  # noqa: E402
from moesim.harness.predict import compare, sim_counts, predict, throttled  # noqa: E402
from moesim.harness.run import Workload, run_harness  # noqa: E402
from moesim.hw_profiles.loader import load_profile  # noqa: E402
from moesim.kernels.cpu_calibrate import base_cpu_profile  # noqa: E402
from moesim.sim.count_replay import ReplayConfig, count_replay  # noqa: E402
from moesim.traces.format.io import load_trace  # noqa: E402

TINY = HarnessModel(n_layers=2, n_experts=8, top_k=2, hidden=64, inter=32, n_heads=4, vocab=64)
WORK = Workload(n_requests=2, prompt_len=3, decode_steps=4)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_lru_by_hand():
    """Capacity 2. Pass 0: layer 0 wants [1, 2]; layer 1 wants [3]. Pass 1: layer 0 wants [2, 1, 4].

    pass 0 L0: 1, 2 compulsory, fill the two slots (order 1, 2)
    pass 0 L1: 3 compulsory; victim = least recent not in use = (0,1) -> order 2, 3
    pass 1 L0: 2 hit (order 3, 2); 1 capacity miss, victim (1,3) -> order 2, 1; 4 compulsory, every
               resident entry in use -> bypassed through a spare slot
    """
    fetched = []

    def fetch(e, slot):
        fetched.append((e, slot))
        return 10

    lru = LruCache(2)
    a = lru.serve(0, [1, 2], 0, fetch)
    assert (a.hits, a.misses, a.compulsory, a.evictions, a.bytes) == (0, 2, 2, 0, 20)
    b = lru.serve(1, [3], 0, fetch)
    assert (b.misses, b.compulsory, b.evictions) == (1, 1, 1)
    assert list(lru.order) == [(0, 2), (1, 3)]
    c = lru.serve(0, [2, 1, 4], 1, fetch)
    assert (c.hits, c.misses, c.compulsory, c.capacity, c.collision, c.bypassed, c.evictions) == (1, 2, 1, 1, 0, 1, 1)
    assert list(lru.order) == [(0, 2), (0, 1)]
    assert fetched == [(1, 0), (2, 1), (3, 0), (1, 0), (4, 2)]  # (1,3) left slot 0 to (0,1); slot 2 is the spare


def test_collision_is_an_eviction_earlier_in_the_same_pass():
    lru = LruCache(1)
    lru.serve(0, [5], 0, lambda e, s: 1)
    lru.serve(1, [6], 0, lambda e, s: 1)  # evicts (0, 5) in pass 0
    out = lru.serve(0, [5], 0, lambda e, s: 1)
    assert (out.collision, out.capacity) == (1, 0)
    out = lru.serve(1, [6], 1, lambda e, s: 1)  # evicted in pass 0, demanded in pass 1
    assert (out.collision, out.capacity) == (0, 1)


@pytest.mark.parametrize("capacity", [0, 1, 3, 6, 16])
def test_harness_and_moesim_agree_exactly_on_lru(tmp_path, capacity):
    """Independent implementations, same trace: hits, misses by kind and bytes are equal."""
    run = run_harness(TINY, WORK, capacity, str(tmp_path / "store"))
    sim = predict(run, base_cpu_profile())
    counts = sim_counts(sim)
    assert counts == {k: run.counts[k] for k in counts}
    assert run.counts["hits"] + run.counts["misses"] == sum(
        len(set(run.trace.expert[run.trace.cell_offsets[c]:run.trace.cell_offsets[c + 1]].tolist()))
        for c in range(run.trace.n_cells))
    assert run.counts["bytes"] == run.counts["misses"] * TINY.expert_bytes
    # the count-only replay (another moesim path) agrees too
    cr = count_replay(run.trace, ReplayConfig(policy="lru", capacity_bytes=capacity * TINY.expert_bytes))
    assert int((cr.outcomes >= 2).sum()) == run.counts["misses"] and int(cr.bypassed.sum()) == run.counts["bypassed"]
    if capacity == 16:  # everything fits: only compulsory misses
        assert run.counts["misses"] == run.counts["compulsory"] == len(np.unique(
            run.trace.cell_layer.repeat(np.diff(run.trace.cell_offsets)).astype(np.int64) * 8 + run.trace.expert))


def test_a_wrong_lru_would_be_caught(tmp_path, monkeypatch):
    """Sanity of the comparison: a harness that evicts the most recent entry disagrees with moesim."""
    from moesim.harness import offload

    class Mru(offload.LruCache):
        def serve(self, layer, experts, pass_index, fetch):
            self.order = offload.OrderedDict(reversed(list(self.order.items())))
            out = super().serve(layer, experts, pass_index, fetch)
            return out

    monkeypatch.setattr("moesim.harness.run.LruCache", Mru)
    run = run_harness(TINY, WORK, 3, str(tmp_path / "store"))
    row, _ = compare([run], base_cpu_profile())
    assert not row["counts_identical"] and row["count_differences"]


def test_the_recorded_trace_is_the_routing_and_repeats_route_alike(tmp_path):
    a = run_harness(TINY, WORK, 3, str(tmp_path / "store"))
    b = run_harness(TINY, WORK, 5, str(tmp_path / "store"))
    assert a.trace.content_hash() == b.trace.content_hash()  # the cache never changes the arithmetic
    assert a.trace.n_passes == WORK.n_requests * (WORK.decode_steps + 1) and a.trace.meta.top_k == 2
    assert list(np.diff(a.trace.pass_token_offsets)[: WORK.decode_steps + 1]) == [3] + [1] * WORK.decode_steps
    assert a.trace.meta.extra["weight_dtype"] == "fp32" and a.trace.meta.object_bytes == [TINY.expert_bytes] * 2
    assert (a.steps["step_s"] > 0).all() and len(a.steps) == a.trace.n_passes
    assert (a.steps["misses"].sum(), a.steps["bytes"].sum()) == (a.counts["misses"], a.counts["bytes"])


def test_slots_hold_the_file_bytes(tmp_path):
    from moesim.harness.model import expert_weights
    from moesim.harness.offload import ExpertFile, Fetcher, SlotBuffers

    store = ExpertFile(TINY, tmp_path / "s")
    slots = SlotBuffers(TINY, 2, 1, torch.device("cpu"))
    fetch = Fetcher(store, slots)
    fetch(1, 5, 0)
    fetch(0, 2, 2)
    np.testing.assert_array_equal(slots.flat[0].numpy(), expert_weights(TINY, 1, 5))
    np.testing.assert_array_equal(slots.flat[2].numpy(), expert_weights(TINY, 0, 2))
    assert ExpertFile(TINY, tmp_path / "s").built is False  # reused, not rewritten
    store.close()


def test_throttle_paces_fetches_and_the_prediction_uses_the_emulated_link(tmp_path):
    rate = 20e6  # 20 MB/s: a 24 KiB expert takes >= 1.2 ms
    run = run_harness(TINY, WORK, 3, str(tmp_path / "store"), throttle_Bps=rate)
    assert run.steps["fetch_s"].sum() >= run.counts["bytes"] / rate * 0.999
    prof = throttled(base_cpu_profile(), run.trace.total_object_bytes(), rate)
    assert prof.links["ssd_d"].bandwidth == rate and prof.links["ssd_d"].latency == 0.0
    sim = predict(run, base_cpu_profile())
    assert sim.summary["time"]["stall_s"] == pytest.approx(run.counts["bytes"] / rate, rel=1e-9)


def test_parse_slots():
    assert parse_slots("10%,25%,40slots", 256) == [25, 64, 40]
    with pytest.raises(Exception, match="--capacity"):
        parse_slots("lots", 256)


def test_cli_runs_and_writes_its_tables(tmp_path, capsys):
    profile = tmp_path / "cpu.yaml"
    from moesim.kernels.calibrate import CalibrationResult, write_outputs
    from moesim.kernels.profile_yaml import CalibrationEnv

    write_outputs(CalibrationResult(CalibrationEnv(date="2026-01-01", gpu="cpu"), [], {}), base_cpu_profile(),
                  profile, "cpu-test")
    out = tmp_path / "h"
    rc = main(["harness", "--preset", "tiny", "--profile", str(profile), "--capacity", "25%,4slots", "--repeat", "2",
               "--requests", "1", "--decode", "3", "--prompt", "2", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["all_counts_identical"] and len(summary["rows"]) == 2
    assert all(r["step_mape"] is not None and r["step_spread_median"] is not None for r in summary["rows"])
    trace = load_trace(out / "trace.parquet")
    assert trace.n_passes == 4
    assert load_profile(str(profile)).name == "cpu-test"


def test_cli_mistakes_are_one_line(tmp_path, capsys):
    rc = main(["harness", "--preset", "tiny", "--profile", "h100-sxm", "--capacity", "many", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "--capacity" in err and len(err.strip().splitlines()) == 1


def test_the_harness_run_imports_nothing_of_moesims_decisions():
    """Independence: the modules that run the harness never import the planner, cache core, policies or executor."""
    import ast
    from pathlib import Path

    import moesim.harness as pkg

    for name in ("model.py", "offload.py", "run.py"):
        tree = ast.parse((Path(pkg.__file__).parent / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for module in imported:
            assert not module.startswith(("moesim.sim", "moesim.policies", "moesim.kernels.executor",
                                          "moesim.kernels.slot_pool", "moesim.kernels.compute")), (name, module)
