"""What-if studies: grid axes, the plan they make, a count-only study end to end, and the timed
path end to end through a stand-in engine (tests/sweep/fake_engine.py)."""

from __future__ import annotations

import base64
import re

import fake_engine
import numpy as np
import pytest
import toy_plugin

from moesim.cli import main
from moesim.errors import UserError
from moesim.policies.registry import available
from moesim.sweeps import store
from moesim.sweeps.whatif import parse_axis, plan_whatif, run_whatif


@pytest.mark.parametrize("text, values", [
    ("links.h2d.bandwidth=8GB/s..64GB/s:4", ("8 GB/s", "16 GB/s", "32 GB/s", "64 GB/s")),
    ("links.h2d.bandwidth=8GB/s..64GB/s:3:lin", ("8 GB/s", "36 GB/s", "64 GB/s")),
    ("links.h2d.latency=1us..100us:3", ("1 us", "10 us", "100 us")),
    ("capacity=1%..25%:3", ("1%", "5%", "25%")),  # geometric: the middle is sqrt(1 x 25)
    ("capacity=16slots..256slots:5", ("16slots", "32slots", "64slots", "128slots", "256slots")),
    ("capacity=2GiB..8GiB:3", ("2 GiB", "4 GiB", "8 GiB")),
    ("links.h2d.copy_engines=1..8:4", ("1", "2", "4", "8")),
    ("links.h2d.copy_engines=1..3:5:lin", ("1", "2", "3")),  # rounded, repeats dropped
    ("tiers.vram.capacity=24GiB,80GiB", ("24GiB", "80GiB")),
])
def test_axis_values(text, values):
    axis = parse_axis(text)
    assert axis.path == text.split("=")[0]
    assert axis.values == values


@pytest.mark.parametrize("text, fragment", [
    ("bandwidth", "expected PATH=LO..HI:N"),
    ("links.h2d.bandwidth=0GB/s..8GB/s:3", "geometric spacing needs positive ends"),
    ("links.h2d.bandwidth=8GB/s..8GiB:3", "different kinds (bandwidth and bytes)"),
    ("links.h2d.bandwidth=fast,slow", "cannot read 'fast'"),
    ("capacity=1%..16slots:3", "same unit"),
])
def test_axis_mistakes(text, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)) as info:
        parse_axis(text)
    assert str(info.value).startswith(f"--vary {text}")


def test_plan_mistakes():
    trace = toy_plugin.zipf_trace(passes=4)
    bw = parse_axis("links.h2d.bandwidth=8GB/s..16GB/s:2")
    cap = parse_axis("capacity=10%..20%:2")
    with pytest.raises(UserError, match="at most two"):
        plan_whatif(trace, "p", [bw, cap, parse_axis("links.h2d.latency=1us,2us")], ["lru"])
    with pytest.raises(UserError, match="needs --profile"):
        plan_whatif(trace, None, [bw], ["lru"])
    with pytest.raises(UserError, match="given twice"):
        plan_whatif(trace, "p", [cap, cap], ["lru"])
    with pytest.raises(UserError, match="unknown eviction policy"):
        plan_whatif(trace, None, [cap], ["lru", "nope"])


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def test_count_only_study_runs_the_capacity_axis_and_reports(tmp_path):
    trace = toy_plugin.zipf_trace(seed=5, passes=20)
    axes = [parse_axis("capacity=10%..80%:4"), parse_axis("links.h2d.bandwidth=8GB/s..32GB/s:3")]
    plan = plan_whatif(trace, "rtx4090", axes, ["lru", "toy-fifo"], count_only=True, trace_name="toy")
    assert not plan.timed
    assert plan.spec.capacities == ("10%", "20%", "40%", "80%")
    assert any("do not change hit and miss counts" in n for n in plan.notes)
    bound = "belady" in {r.name for r in available("eviction")}
    assert plan.spec.eviction == (("lru", "toy-fifo", "belady") if bound else ("lru", "toy-fifo"))
    data = run_whatif(plan, tmp_path, jobs=1, progress=False)
    # the bandwidth axis adds no count-only runs: policies x 4 capacities
    assert data["runs"] == 4 * len(plan.spec.eviction) and data["failed"] == 0
    table = store.combined_table(tmp_path)
    lru = table[table["eviction"] == "lru"].sort_values("capacity_bytes")
    assert (np.diff(lru["hit_rate"].astype(float)) >= 0).all()
    if bound:  # Belady is the miss bound at every capacity
        by_cap = table.pivot_table(index="capacity", columns="eviction", values="misses", aggfunc="first")
        assert (by_cap["belady"] <= by_cap[["lru", "toy-fifo"]].min(axis=1)).all()
        assert "misses_over_belady" in (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "Miss-ratio curves" in html and len(_pngs(html)) >= 2
    assert "do not change hit and miss counts" in (tmp_path / "report.md").read_text()


def test_timed_study_sweeps_the_grid_and_draws_heatmaps(tmp_path, monkeypatch):
    calls = fake_engine.install(monkeypatch)
    trace = toy_plugin.zipf_trace(seed=6, passes=10)
    axes = [parse_axis("links.h2d.bandwidth=4GB/s..16GB/s:3"), parse_axis("capacity=10%..40%:3")]
    plan = plan_whatif(trace, "toybox", axes, ["lru"], trace_name="toy")
    assert plan.timed and len(plan.spec.profiles) == 3
    data = run_whatif(plan, tmp_path, jobs=1, progress=False)
    assert data["runs"] == 9 * len(plan.spec.eviction) and data["failed"] == 0 and data["timed"]
    # the driver loaded each grid point's profile once, with that point's setting
    assert sorted(calls) == sorted(("toybox", (("links.h2d.bandwidth", v),)) for v in ("4 GB/s", "8 GB/s", "16 GB/s"))
    table = store.combined_table(tmp_path)
    assert (table["engine"] == "timed").all()
    # the stand-in's stall is bytes / bandwidth of the misses: at one capacity, 4x the bandwidth is 1/4 the stall
    at = table[(table["capacity"] == "10%") & (table["eviction"] == "lru")].set_index("profile_set")
    slow, fast = at.loc["links.h2d.bandwidth=4 GB/s"], at.loc["links.h2d.bandwidth=16 GB/s"]
    assert slow["misses"] == fast["misses"]
    assert slow["stall_s"] == pytest.approx(4 * fast["stall_s"])
    assert slow["stall_s"] == pytest.approx(int(slow["misses"]) * 1000 / 4e9)
    html = (tmp_path / "report.html").read_text()
    for title in ("What-if: TPOT (ms) over links.h2d.bandwidth x capacity", "Latency breakdown", "Timeline"):
        assert title in html
    timeline = store.read_dataset(tmp_path).timeline
    assert set(timeline["lane"]) == {"compute", "h2d engine 0"}
    assert set(timeline[timeline["lane"] == "h2d engine 0"]["kind"]) == {"demand"}


def test_whatif_command_reports_a_missing_trace_reader_or_file_in_one_line(tmp_path, capsys):
    code = main(["whatif", "--trace", str(tmp_path / "none.parquet"), "--vary", "capacity=1%..5%:2",
                 "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "none.parquet" in err


def test_timed_runs_through_the_real_engine_when_this_build_has_it(tmp_path):
    import moesim

    trace = toy_plugin.zipf_trace(seed=8, passes=8, object_bytes=4 << 20)
    df = moesim.replay(trace, policy=["lru"], capacity=["25%"], profile="rtx4090",
                       profile_set={"links.h2d.bandwidth": "8 GB/s"}, prefetch=["none", "oracle"])
    assert (df["status"] == "ok").all(), df["error"].tolist()
    assert (df["engine"] == "timed").all() and (df["total_s"] >= df["time_bound_s"]).all()
    assert (df["requests"] == df["hits"] + df["late_prefetch"] + df["misses"]).all()
