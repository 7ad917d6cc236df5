"""`moesim validate` on CPU, its comparison logic and its error metrics.

The end-to-end test runs the command on a small synthetic trace with tiny expert shapes and checks
what it wrote against the grid it was asked for and against the simulator run on its own. The
metrics are checked on hand-computed cases; the mismatch path by tampering with the executor's
decisions, which must make the command fail (exit 1) after writing its report.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from timing_helpers import make_profile, random_trace  # noqa: E402

from moesim.cli import main  # noqa: E402
from moesim.kernels import executor as executor_module  # noqa: E402
from moesim.kernels.decision_log import DecisionLog  # noqa: E402
from moesim.kernels.shapes import ExpertShapes  # noqa: E402
from moesim.kernels.validation_metrics import error_summary, kendall_tau, ranking, step_times  # noqa: E402
from moesim.sim.plan import PlanConfig, plan_trace  # noqa: E402
from moesim.sim.timed_replay import TimedConfig, timed_replay  # noqa: E402
from moesim.sim.topology import build_topology  # noqa: E402
from moesim.traces.format.io import save_trace  # noqa: E402
from moesim.traces.format.build import simple_trace  # noqa: E402

SHAPE = ExpertShapes(hidden=32, inter=16, n_layers=3, n_experts=6, dtype="fp32")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def trace_file(tmp_path):
    trace = random_trace(2, n_layers=3, n_experts=6, requests=2, prompt=3, decode=3,
                         object_bytes=SHAPE.expert_bytes)
    trace.meta.dense_bytes = [4096] * 3
    path = tmp_path / "trace.parquet"
    save_trace(trace, path)
    return trace, path


def cli(*args: str) -> list[str]:
    return ["validate", *args, "--device", "cpu", "--expert-shape", "32x16", "--dtype", "fp32", "--backend", "torch"]


def test_validate_on_cpu_writes_identical_counts_and_a_report(trace_file, tmp_path, capsys):
    trace, path = trace_file
    out = tmp_path / "val"
    rc = main(cli("--trace", str(path), "--profile", "h100-pcie", "--capacity", "10%,40%", "--out", str(out),
                  "--repeat", "2", "--prefetch", "none,oracle", "--json"))
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["all_identical"] and report["runs"] == 12  # 3 policies x 2 capacities x 2 prefetch
    assert report["timings_meaningful"] is False and "mean nothing" in report["note"]
    assert report["moved_bytes_match"] and report["rounds"] == 2
    runs = pd.read_parquet(out / "runs.parquet")
    assert (runs["rounds"] == 2).all() and runs["real_total_spread"].notna().all()
    assert sorted(set(runs["eviction"])) == ["belady", "lfu", "lru"]  # the default: three that decide differently
    assert set(runs["prefetch"]) == {"none", "oracle"} and set(runs["capacity"]) == {"10%", "40%"}
    assert runs["identical"].all()
    for key in ("hits", "misses", "bytes", "demand_copies", "prefetch_copies", "evictions"):
        assert (runs[f"real_{key}"] == runs[f"sim_{key}"]).all(), key
    # the simulator on its own gives the same counts the report shows (an independent run)
    profile = __import__("moesim.hw_profiles.loader", fromlist=["load_profile"]).load_profile("h100-pcie")
    row = runs[(runs["eviction"] == "belady") & (runs["prefetch"] == "oracle") & (runs["capacity"] == "40%")].iloc[0]
    sim = timed_replay(trace, profile, TimedConfig(eviction="belady", prefetch="oracle",
                                                   capacity_bytes=int(row["capacity_bytes"])))
    assert row["sim_misses"] == sim.summary["misses"] and row["real_hits"] == sim.summary["hits"] + sim.summary[
        "late_prefetch"]
    assert row["real_prefetch_copies"] > 0 and row["real_evictions"] > 0
    steps = pd.read_parquet(out / "steps.parquet")
    assert len(steps) == 12 * trace.n_passes and (steps["real_s"] > 0).all()
    rankings = pd.read_parquet(out / "rankings.parquet")
    assert len(rankings) == 4 and (rankings["policies"] == 3).all()
    html = (out / "report.html").read_text()
    assert "mean nothing" in html and "metric" in html and "Kendall tau" in html and "NO</td>" not in html.split(
        "Counts")[1].split("Step latency")[0]
    assert json.loads((out / "summary.json").read_text())["all_identical"] is True


def test_validate_fails_loudly_when_the_decisions_differ(trace_file, tmp_path, monkeypatch, capsys):
    _, path = trace_file
    real_execute = executor_module.execute

    def tampered(*args, **kwargs):
        result = real_execute(*args, **kwargs)
        outcomes = result.decisions.outcomes.copy()
        outcomes[-1] = 3 if outcomes[-1] != 3 else 2
        result.decisions = DecisionLog(**{**result.decisions.__dict__, "outcomes": outcomes})
        return result

    monkeypatch.setattr(executor_module, "execute", tampered)
    out = tmp_path / "val"
    rc = main(cli("--trace", str(path), "--profile", "h100-pcie", "--policies", "lru", "--prefetch", "none",
                  "--capacity", "30%", "--out", str(out)))
    err = capsys.readouterr().err
    assert rc == 1 and "decisions differ between the executor and the simulator" in err
    assert "Traceback" not in err
    runs = pd.read_parquet(out / "runs.parquet")
    assert not runs["identical"].any() and runs["first_difference"].iloc[0].startswith("request ")
    assert "Decisions differ" in (out / "report.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--policies", "nosuch"], "nosuch"),
    (["--expert-shape", "32by16"], "--expert-shape"),
    (["--capacity", "lots"], "--capacity"),
    (["--repeat", "0"], "--repeat"),
])
def test_user_mistakes_exit_1_with_one_line(trace_file, tmp_path, capsys, args, message):
    _, path = trace_file
    argv = cli("--trace", str(path), "--profile", "h100-pcie", "--out", str(tmp_path / "v"))
    for i in range(0, len(args), 2):
        if args[i] in argv:
            argv[argv.index(args[i]) + 1] = args[i + 1]
        else:
            argv += args[i:i + 2]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_trace_without_a_model_needs_one_or_a_shape(trace_file, tmp_path, capsys):
    _, path = trace_file
    argv = ["validate", "--trace", str(path), "--profile", "h100-pcie", "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 1
    assert "--model" in capsys.readouterr().err


def test_out_must_be_a_directory(trace_file, tmp_path, capsys):
    _, path = trace_file
    target = tmp_path / "file"
    target.write_text("x")
    assert main(cli("--trace", str(path), "--profile", "h100-pcie", "--out", str(target))) == 1
    assert "not a directory" in capsys.readouterr().err


def test_without_cuda_validate_exits_1_unless_told_cpu(trace_file, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    _, path = trace_file
    assert main(["validate", "--trace", str(path), "--profile", "h100-pcie", "--out", str(tmp_path / "v")]) == 1
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1


# ---- metrics ---------------------------------------------------------------------------------------
def test_step_times_count_from_the_previous_pass_end():
    trace = simple_trace([[[0], [1]], [[2], [3]], [[1], [0]]], n_layers=2, n_experts=4)
    # cell ends: pass 0 ends at 3, pass 1 at 4, pass 2 at 10
    steps = step_times(trace, np.array([1.0, 3.0, 3.5, 4.0, 9.0, 10.0]))
    assert steps.tolist() == [3.0, 1.0, 6.0]


def test_error_summary_on_hand_numbers():
    real = [1.0, 2.0, 4.0, 8.0]
    sim = [1.1, 1.8, 4.0, 10.0]  # errors +10 %, -10 %, 0, +25 %
    e = error_summary(real, sim)
    assert e["n"] == 4
    assert e["mape"] == pytest.approx((0.1 + 0.1 + 0 + 0.25) / 4)
    assert e["mpe"] == pytest.approx((0.1 - 0.1 + 0 + 0.25) / 4)
    assert e["real_p50"] == pytest.approx(3.0) and e["sim_p50"] == pytest.approx(2.9)
    assert e["p50_error"] == pytest.approx(-0.1 / 3)
    assert e["ape_p50"] == pytest.approx(0.1)
    assert error_summary([0.0, float("nan")], [1.0, 1.0])["mape"] is None  # no usable step


def test_kendall_tau_b_on_hand_cases():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    # tau-b with a tie in y: pairs (12 c)(13 c)(23 tie-y): (2 - 0) / sqrt(3 * 2)
    assert kendall_tau([1, 2, 3], [1, 2, 2]) == pytest.approx(2 / math.sqrt(6))
    assert kendall_tau([1], [1]) is None
    assert ranking(["a", "b", "c"], [3.0, 1.0, 2.0]) == ["b", "c", "a"]


def test_decision_logs_name_their_first_difference():
    trace = random_trace(4, object_bytes=1000)
    profile = make_profile()
    topo = build_topology(profile, trace.total_object_bytes())
    config = PlanConfig(eviction="lru", prefetch="oracle", capacity_bytes=5000)
    a = DecisionLog.from_plan(plan_trace(trace, topo, config))
    b = DecisionLog.from_plan(plan_trace(trace, topo, config))
    assert a.first_difference(b) is None
    k = int(np.flatnonzero(a.victim_offsets[1:] > a.victim_offsets[:-1])[0])
    victims = a.victims.copy()
    victims[a.victim_offsets[k]] += 1
    assert f"copy {k}" in a.first_difference(DecisionLog(**{**b.__dict__, "victims": victims}))
    nbytes = a.copy_bytes.copy()
    nbytes[3] += 1
    assert "copy 3" in a.first_difference(DecisionLog(**{**b.__dict__, "copy_bytes": nbytes})) and "bytes" in \
        a.first_difference(DecisionLog(**{**b.__dict__, "copy_bytes": nbytes}))
    other = DecisionLog.from_plan(plan_trace(trace, topo, PlanConfig(eviction="fifo", prefetch="oracle",
                                                                     capacity_bytes=5000)))
    assert a.first_difference(other) is not None


@pytest.mark.gpu
def test_validate_on_cuda_with_olmoe_shapes(tmp_path, capsys):
    """Real shapes on the GPU: counts identical, timings meaningful, copies near the link's speed."""
    rng = np.random.default_rng(0)
    cells = [[[int(e) for e in rng.choice(64, 8, replace=False)] for _ in range(2)] for _ in range(12)]
    trace = simple_trace(cells, n_layers=2, n_experts=64, object_bytes=12582912, top_k=8)
    trace.meta.model = "olmoe-1b-7b"
    path = tmp_path / "olmoe.parquet"
    save_trace(trace, path)
    out = tmp_path / "val"
    rc = main(["validate", "--trace", str(path), "--profile", "h100-sxm", "--policies", "lru,least-stale,belady",
               "--capacity", "10%,25%", "--prefetch", "none,oracle", "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["all_identical"] and report["timings_meaningful"] and report["runs"] == 12
    runs = pd.read_parquet(out / "runs.parquet")
    assert (runs["h2d_throughput_Bps"] > 1e9).all() and runs["moved_equals_planned"].all()
    assert runs["step_mape"].notna().all()
