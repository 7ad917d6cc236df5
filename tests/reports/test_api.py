"""The Python API: `import moesim` stays light; replay, sweep, load_results and report agree with
the count replay they wrap and with each other."""

from __future__ import annotations

import subprocess
import sys

import pytest
import toy_plugin

import moesim
from moesim.sim import metrics
from moesim.sim.count_replay import ReplayConfig, count_replay


def test_import_moesim_loads_no_heavy_module():
    code = "import sys, moesim; print(sorted(m for m in ('pandas', 'numpy', 'matplotlib', 'pyarrow', 'ray') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_replay_matches_the_count_replay():
    trace = toy_plugin.zipf_trace(seed=11, passes=15)
    df = moesim.replay(trace, policy=["lru", "toy-fifo"], capacity=["20%", 12_000], mode="sequential")
    assert list(zip(df["policy"], df["capacity"])) == [("lru", "20%"), ("lru", "12000B"), ("toy-fifo", "20%"),
                                                       ("toy-fifo", "12000B")]
    for _, row in df.iterrows():
        direct = metrics.summary(count_replay(trace, ReplayConfig(policy=row["eviction"], mode="sequential",
                                                                  capacity_bytes=int(row["capacity_bytes"]))))
        assert (row["hits"], row["misses"], row["collision"]) == (direct["hits"], direct["misses"],
                                                                   direct["collision"])
    assert df.loc[0, "capacity_bytes"] == 12_800  # 20% of 4 layers x 16 experts x 1000 bytes


def test_replay_mistakes_are_user_errors():
    trace = toy_plugin.zipf_trace(passes=3)
    with pytest.raises(moesim.errors.UserError, match="unknown eviction policy"):
        moesim.replay(trace, policy="nope")
    with pytest.raises(moesim.errors.UserError, match="need a timed run"):
        moesim.replay(trace, prefetch="oracle")


def test_sweep_load_results_and_report_agree(tmp_path):
    trace = toy_plugin.zipf_trace(seed=12, passes=10)
    spec = {"traces": {"toy": trace}, "eviction": ["lru", "toy-fifo"], "capacities": ["10%", "50%"]}
    table = moesim.sweep(spec, tmp_path / "s")
    assert len(table) == 4 and (table["status"] == "ok").all()
    loaded = moesim.load_results(tmp_path / "s")
    assert loaded.equals(table)
    everything = moesim.load_results(tmp_path / "s", tables=True)
    assert len(everything.layers) == 4 * trace.meta.n_layers
    direct = moesim.replay(trace, policy=["lru", "toy-fifo"], capacity=["10%", "50%"], trace_name="toy")
    assert sorted(direct["run_id"]) == sorted(table["run_id"])  # the same runs, so the same ids
    assert moesim.report(tmp_path / "s", tmp_path / "r.html").is_file()
