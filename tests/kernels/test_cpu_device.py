"""The CPU as a device: O_DIRECT reads, `calibrate --device cpu`, the ranking verdict, validate with measured CPU times."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from moesim.cli import main  # noqa: E402
from moesim.hw_profiles.loader import load_profile  # noqa: E402
from moesim.kernels.direct_io import ALIGN, DirectFile, aligned_buffer, write_file  # noqa: E402
from moesim.kernels.validate import pair_verdicts, rank_policies  # noqa: E402
from moesim.sim.topology import ROUTE_SSD_VRAM, build_topology  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("direct", [True, False])
def test_direct_reads_return_the_bytes_at_any_offset(tmp_path, direct):
    data = np.random.default_rng(0).integers(0, 256, 5 * ALIGN + 123, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    write_file(path, [data[:7000], data[7000:]])
    with DirectFile(path, direct=direct) as f:
        assert f.mode in ("o_direct", "buffered") and (f.mode == "o_direct" or f.note)
        if not direct:
            assert f.mode == "buffered" and "not asked" in f.note
        aligned = memoryview(aligned_buffer(2 * ALIGN))
        assert f.read_into(aligned, ALIGN, 2 * ALIGN) == 2 * ALIGN  # in place when aligned
        assert bytes(aligned[:2 * ALIGN]) == data[ALIGN:3 * ALIGN]
        odd = bytearray(1000)
        f.read_into(memoryview(odd), 4097, 1000)  # unaligned offset, length and address: bounce buffer
        assert bytes(odd) == data[4097:5097]
        tail = bytearray(123)
        f.read_into(memoryview(tail), 5 * ALIGN, 123)  # the file's unaligned end
        assert bytes(tail) == data[5 * ALIGN:]


def test_o_direct_refused_falls_back_with_a_note(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    write_file(path, [b"x" * ALIGN])
    real_open = os.open

    def refuse(p, flags, *a):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(22, "Invalid argument")
        return real_open(p, flags, *a)

    monkeypatch.setattr(os, "open", refuse)
    f = DirectFile(path)
    assert f.mode == "buffered" and "O_DIRECT refused" in f.note
    buf = bytearray(ALIGN)
    f.read_into(memoryview(buf), 0)
    assert bytes(buf) == b"x" * ALIGN
    f.close()


def test_calibrate_cpu_writes_a_profile_the_loader_reads(tmp_path, capsys):
    out = tmp_path / "cpu.yaml"
    assert main(["calibrate", "--device", "cpu", "--quick", "--read-dir", str(tmp_path), "--out", str(out),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    measured = summary["measured"]
    for path in ("compute.peak_flops", "compute.memory_bandwidth", "compute.launch_overhead",
                 "compute.cpu_memory_bandwidth", "links.ssd_d.bandwidth", "links.ssd_d.latency",
                 "tiers.ssd.read_bandwidth"):
        assert path in measured, path
    profile = load_profile(str(out))
    assert profile.compute.peak_flops == measured["compute.peak_flops"]["value"] > 1e8
    assert profile.links["ssd_d"].bandwidth == measured["links.ssd_d.bandwidth"]["value"] > 1e6
    assert "measured" in profile.provenance["links.ssd_d.bandwidth"]
    assert ("O_DIRECT" in profile.provenance["links.ssd_d.bandwidth"]
            or "buffered" in profile.provenance["links.ssd_d.bandwidth"])
    topo = build_topology(profile, 10**12)
    assert topo.home == "ssd" and topo.far and topo.stage is None and topo.last_hop_route == ROUTE_SSD_VRAM and topo.ssd_slots == 1
    report = json.loads((tmp_path / "cpu.calibration.json").read_text())
    assert {p["queue_depth"] for p in report["file_reads"]["curve"]} == {1, 2}
    raw = pd.read_csv(tmp_path / "cpu.calibration.csv")
    assert set(raw["bench"]) == {"memory", "gemm", "expert", "file_read"}


def test_calibrate_device_mistakes(tmp_path, capsys):
    assert main(["calibrate", "--device", "tpu", "--out", str(tmp_path / "x.yaml")]) == 1
    assert "--device" in capsys.readouterr().err


def test_pair_verdicts_by_hand():
    labels = ["a", "b", "c"]
    # sim: a < b, a == c (tie); real gaps: b is 20 % slower than a, c 1 % slower than a; spread 5 %
    v = {x["pair"]: x["verdict"] for x in pair_verdicts(labels, [1.0, 1.2, 1.01], [2.0, 3.0, 2.0], [0.05] * 3)}
    assert v == {"a vs b": "agree", "a vs c": "sim tie", "b vs c": "agree"}
    # the real order reversed beyond the spread: a disagreement; within it: undecided
    v = {x["pair"]: x["verdict"] for x in pair_verdicts(["a", "b"], [1.2, 1.0], [2.0, 3.0], [0.05, 0.1])}
    assert v == {"a vs b": "disagree"}
    v = {x["pair"]: x["verdict"] for x in pair_verdicts(["a", "b"], [1.05, 1.0], [2.0, 3.0], [0.05, 0.1])}
    assert v == {"a vs b": "within spread"}
    v = {x["pair"]: x["verdict"] for x in pair_verdicts(["a", "b"], [1.2, 1.0], [2.0, 3.0], [None, None])}
    assert v == {"a vs b": "spread not measured"}


def test_tied_simulated_times_with_a_tiny_real_gap_preserve_the_ranking():
    """Issue #19's coin flip: LRU and Least-Stale tie in the simulator, real times 0.06 % apart."""
    runs = pd.DataFrame({"capacity": ["5%", "5%"], "prefetch": ["none", "none"], "eviction": ["lru", "least-stale"],
                         "real_step_mean_s": [1.0006, 1.0], "sim_step_mean_s": [0.9, 0.9],
                         "real_total_spread": [0.01, 0.02]})
    row = rank_policies(runs).iloc[0]
    assert not row["same_order"] and row["ranking_preserved"] and row["sim_ties"] == 1


def test_validate_on_the_cpu_device_measures_step_times(tmp_path, capsys):
    from moesim.harness.model import HarnessModel
    from moesim.harness.run import Workload, run_harness
    from moesim.kernels.calibrate import CalibrationResult, write_outputs
    from moesim.kernels.cpu_calibrate import base_cpu_profile
    from moesim.kernels.profile_yaml import CalibrationEnv
    from moesim.traces.format.io import save_trace

    model = HarnessModel(n_layers=2, n_experts=8, top_k=2, hidden=64, inter=32, n_heads=4, vocab=64)
    run = run_harness(model, Workload(n_requests=1, prompt_len=2, decode_steps=3), 4, str(tmp_path / "store"))
    save_trace(run.trace, tmp_path / "t.parquet")
    write_outputs(CalibrationResult(CalibrationEnv(date="2026-01-01", gpu="cpu"), [], {}), base_cpu_profile(),
                  tmp_path / "cpu.yaml", "cpu-test")
    out = tmp_path / "v"
    rc = main(["validate", "--device", "cpu", "--trace", str(tmp_path / "t.parquet"), "--profile",
               str(tmp_path / "cpu.yaml"), "--capacity", "4slots", "--repeat", "2", "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["all_identical"] and report["timings_meaningful"] and report["runs"] == 3
    assert report["acceptance"] is not None and report["step_mape"]["mean"] is not None
    runs = pd.read_parquet(out / "runs.parquet")
    assert runs["moved_equals_planned"].all() and (runs["real_bytes"] == runs["sim_bytes"]).all()
    lru = runs[runs["eviction"] == "lru"].iloc[0]
    assert (lru["real_misses"], lru["real_bytes"]) == (run.counts["misses"], run.counts["bytes"])  # = the harness


def test_tile_configs_fit_the_devices_shared_memory():
    from moesim.kernels.expert_kernel import default_config, fit_shared_memory, shared_memory_bytes

    prefill = default_config(256)
    # hand count: 3 stages x (64x64 x tile + 2 x 64x128 weight tiles) x 2 bytes = 122880 bytes (~120 KB)
    assert shared_memory_bytes(prefill, 2) == 3 * (64 * 64 + 2 * 64 * 128) * 2 == 122880
    rtx4090 = 101376  # 99 KB opt-in per block
    for tokens in (1, 32, 256):
        fitted = default_config(tokens, rtx4090, 2)
        assert shared_memory_bytes(fitted, 2) <= rtx4090
        assert fitted.block_m == default_config(tokens).block_m  # the token tile (routing padding) is kept
    assert default_config(256, 232448, 2) == prefill  # an H100's 227 KB: unchanged
    tiny = fit_shared_memory(prefill, 1, 2)
    assert tiny.num_stages == 1 and tiny.block_k == 32 and tiny.block_n == 32  # shrinks as far as it can


def test_ssd_store_reads_its_file_with_o_direct(tmp_path):
    from moesim.kernels.host_store import HostExpertStore
    from moesim.kernels.shapes import ExpertShapes
    from moesim.kernels.ssd_store import SsdExpertStore

    shapes = ExpertShapes(hidden=40, inter=24, n_layers=2, n_experts=3, dtype="fp32")  # 11520 B: not 4 KiB aligned
    store = HostExpertStore(shapes, seed=3, pin=False)
    ssd = SsdExpertStore(store, tmp_path)
    assert ssd.stride % 4096 == 0 and ssd.mode in ("o_direct", "buffered")
    for obj in (0, 4, 5):
        dst = torch.empty(shapes.elems, dtype=torch.float32)
        assert ssd.read_into(obj, dst) == shapes.expert_bytes
        assert torch.equal(dst, store.buffer(obj))
    ssd.close()


def test_routing_sync_costs_two_launches_and_the_d2h_latency_per_cell():
    from moesim.hw_profiles.loader import load_profile as load
    from moesim.sim.timed_replay import TimedConfig, routing_sync_seconds, timed_replay
    from moesim.traces.synth.synthetic import generate
    from moesim.traces.synth.synth_config import SynthConfig

    profile = load("h100-pcie")
    assert routing_sync_seconds(profile) == 2 * profile.compute.launch_overhead + profile.links["d2h"].latency
    trace = generate(SynthConfig(n_layers=3, n_experts=8, top_k=2, n_requests=1, object_bytes=(1 << 20,), seed=1))
    base = TimedConfig(eviction="lru", capacity_bytes=6 << 20, bounds=False)
    plain = timed_replay(trace, profile, base)
    synced = timed_replay(trace, profile, TimedConfig(**{**base.__dict__, "routing_sync": True}))
    assert synced.summary["misses"] == plain.summary["misses"]
    extra = synced.summary["time"]["dense_s"] - plain.summary["time"]["dense_s"]
    assert extra == pytest.approx(trace.n_cells * routing_sync_seconds(profile), rel=1e-9)
    assert "routing_sync" not in base.to_dict() and TimedConfig(routing_sync=True).to_dict()["routing_sync"]


def test_executor_with_routing_sync_keeps_the_plans_decisions():
    from moesim.hw_profiles.loader import load_profile as load
    from moesim.kernels.decision_log import DecisionLog
    from moesim.kernels.executor import execute
    from moesim.kernels.shapes import ExpertShapes
    from moesim.sim.timed_replay import TimedConfig, timed_replay
    from moesim.traces.synth.synthetic import generate
    from moesim.traces.synth.synth_config import SynthConfig

    from moesim.traces.synth.synth_config import LengthDist

    trace = generate(SynthConfig(n_layers=2, n_experts=6, top_k=2, n_requests=1, object_bytes=(3 * 32 * 16 * 4,),
                                 prefill=LengthDist.parse("4", 1), decode=LengthDist.parse("10", 0), seed=2))
    profile = load("h100-pcie")
    config = TimedConfig(eviction="lru", capacity_bytes=3 * 3 * 32 * 16 * 4, routing_sync=True, bounds=False)
    shapes = ExpertShapes(32, 16, 2, 6, "fp32")
    result = execute(trace, profile, config, device="cpu", shapes_override=shapes, backend="torch", dtype="fp32",
                     telemetry=False)
    assert result.decisions.first_difference(DecisionLog.from_plan(timed_replay(trace, profile, config).plan)) is None


def test_calibrate_cpu_without_a_fitted_byte_term_measures_the_rate_directly(monkeypatch):
    import moesim.kernels.cpu_calibrate as cc
    from moesim.kernels.fitting import KernelFit

    monkeypatch.setattr(cc, "fit_kernel_times", lambda b, f, t: KernelFit(1e-6, None, 1e9, np.zeros(len(t)), 0.0))
    cal = cc.CpuCalibrator(cc.CpuCalibrateConfig.tiny(expert_sizes=((64, 32), (128, 64)), tokens=(1, 4)))
    cal.expert_operator()
    m = {x.path: x for x in cal.out.measured}
    largest = 3 * 128 * 64 * 4
    row = next(r for r in cal.out.rows if r["bench"] == "expert" and r["bytes"] == largest and r["tokens"] == 1)
    assert m["compute.memory_bandwidth"].value == pytest.approx(largest / row["median_s"], rel=1e-3)
    assert "no byte term" in m["compute.memory_bandwidth"].detail
