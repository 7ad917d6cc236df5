"""Reports: the HTML embeds real, non-empty plots and nothing from the network; count-only results
report too; the ranking's distances to the bounds are hand-checked; result files of every kind
moesim writes are read back to the same numbers."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import toy_plugin
from matplotlib import image as mpimg

import moesim
from moesim.cli import main
from moesim.reports import adapters, render, run_file, tables
from moesim.reports.frames import latency_frame, mrc_frame
from moesim.reports.ranking import ranking_table
from moesim.reports.readers import load_result_set
from moesim.reports.tables import ResultSet


def pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def assert_real_image(png: bytes) -> None:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    pixels = mpimg.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas


@pytest.fixture(scope="module")
def count_results() -> ResultSet:
    trace = toy_plugin.zipf_trace(seed=7, passes=20)
    return moesim.replay(trace, policy=["lru", "toy-fifo"], capacity=["10%", "30%", "60%"], tables=True)


def timed_like(run_id: str = "t" * 20, policy: str = "lru", stall: float = 0.004) -> ResultSet:
    """What a timed run leaves in the tables, built by hand (the engine is another room's)."""
    runs = pd.DataFrame([{
        "run_id": run_id, "status": "ok", "engine": "timed", "trace": "toy", "profile": "rtx4090", "eviction": policy,
        "prefetch": "none", "miss": "stall", "policy": policy, "capacity": "10%", "capacity_bytes": 6400,
        "capacity_share": 0.1, "scope": "global", "mode": "event", "seed": 0, "requests": 100, "hits": 60,
        "late_prefetch": 0, "misses": 40, "compulsory": 20, "capacity_misses": 20, "collision": 0, "hit_rate": 0.6,
        "total_s": 0.010 + stall, "compute_s": 0.010, "stall_s": stall, "cpu_wait_s": 0.0, "tpot_mean_s": 0.001,
        "time_bound_s": 0.011, "belady_misses": 30}])
    links = pd.DataFrame([{"run_id": run_id, "link": "h2d", "bytes": 40000, "copies": 40, "busy_s": 0.006,
                           "utilization": 0.4, "energy_j": 1e-3}])
    spans = [("compute", "dense", 0.0, 0.001), ("compute", "stall", 0.001, 0.002), ("compute", "expert", 0.002, 0.004),
             ("h2d engine 0", "demand", 0.001, 0.002), ("h2d engine 0", "prefetch", 0.002, 0.0035)]
    timeline = pd.DataFrame([{"run_id": run_id, "lane": lane, "kind": kind, "start_s": a, "end_s": b, "pass": 1,
                              "layer": 0} for lane, kind, a, b in spans])
    return ResultSet(runs=tables.conform(runs, "runs"), links=tables.conform(links, "links"),
                     timeline=tables.conform(timeline, "timeline"))


def test_report_embeds_at_least_four_real_plots_and_fetches_nothing(count_results, tmp_path):
    results = ResultSet.combine([count_results, timed_like()])
    report = render.write_report(results, tmp_path / "r.html", tmp_path / "r.md", title="t<b>")
    html = (tmp_path / "r.html").read_text()
    titles = [f.title for f in report.figures]
    for wanted in ("Miss-ratio curves", "Latency breakdown", "Hit rate per layer"):
        assert wanted in titles
    assert any(t.startswith("Timeline") for t in titles)
    images = pngs(html)
    assert len(images) == len(report.figures) >= 4
    for png in images:
        assert_real_image(png)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html) and "<script" not in html
    assert "t&lt;b&gt;" in html  # text is escaped
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# t&lt;b&gt;") and "## Policy ranking" in md  # Markdown escapes HTML too


def test_count_only_report_from_the_command_line(count_results, tmp_path, capsys):
    run_file.write_run_file(tmp_path / "runs.parquet", count_results, {"note": "test"})
    code = main(["report", str(tmp_path / "runs.parquet"), "--out", str(tmp_path / "c.html"), "--md",
                 str(tmp_path / "c.md"), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"] == 6 and data["failed"] == 0
    assert data["figures"] == ["Miss-ratio curves", "Misses by kind", "Hit rate per layer"]
    assert any("count-only" in n for n in data["notes"]) and any("Belady" in n for n in data["notes"])
    for png in pngs((tmp_path / "c.html").read_text()):
        assert_real_image(png)
    # the ranking orders each capacity's policies by misses
    md = (tmp_path / "c.md").read_text()
    assert re.search(r"^\| trace \|.*\| rank \| policy \|", md, re.M)
    ranking = ranking_table(count_results.runs)
    for _, g in ranking.groupby("capacity"):
        assert list(g["rank"]) == [1, 2] and list(g["misses"]) == sorted(g["misses"])


def test_report_command_mistakes_are_one_line(tmp_path, capsys):
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    for path in ("x.parquet", "plain.parquet", "missing.parquet"):
        assert main(["report", str(tmp_path / path), "--out", str(tmp_path / "o.html")]) == 1
        err = capsys.readouterr().err
        assert path in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.html").exists()


def test_a_failing_render_leaves_no_file(count_results, tmp_path, monkeypatch):
    def boom(report):
        raise RuntimeError("render failed")

    monkeypatch.setattr(render, "to_html", boom)
    with pytest.raises(RuntimeError):
        render.write_report(count_results, tmp_path / "r.html")
    assert list(tmp_path.iterdir()) == []


def test_run_file_round_trip(count_results, tmp_path):
    run_file.write_run_file(tmp_path / "a.parquet", count_results, {"x": 1})
    back, meta = run_file.read_run_file(tmp_path / "a.parquet")
    assert meta["x"] == 1 and meta["format"] == run_file.FORMAT
    for name in tables.TABLES:
        pd.testing.assert_frame_equal(back.table(name), count_results.table(name))
    run_file.write_run_file(tmp_path / "b.parquet", count_results, {"x": 1})
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_ranking_distances_by_hand():
    rows = []
    for policy, misses, offline in (("lru", 50, False), ("lfu", 40, False), ("belady", 25, True)):
        rows.append({"run_id": policy, "status": "ok", "engine": "count", "trace": "t", "policy": policy,
                     "eviction": policy, "prefetch": "none", "offline": offline, "capacity": "5%",
                     "capacity_bytes": 5, "scope": "global", "mode": "event", "seed": 0, "misses": misses})
    rows.append({"run_id": "timed", "status": "ok", "engine": "timed", "trace": "t", "profile": "p", "policy": "lru",
                 "eviction": "lru", "prefetch": "none", "capacity": "5%", "capacity_bytes": 5, "scope": "global",
                 "mode": "event", "seed": 0, "misses": 45, "belady_misses": 30, "total_s": 3.0, "time_bound_s": 2.0,
                 "tpot_mean_s": 0.1})
    rows.append({"run_id": "bad", "status": "error", "policy": "x", "trace": "t"})
    table = ranking_table(tables.conform(pd.DataFrame(rows), "runs")).set_index(["profile", "policy"])
    assert table.loc[("", "lfu"), "rank"] == 1 and table.loc[("", "lru"), "rank"] == 2
    assert pd.isna(table.loc[("", "belady"), "rank"])
    assert table.loc[("", "lru"), "misses_over_belady"] == pytest.approx(2.0)
    assert table.loc[("", "lfu"), "misses_over_belady"] == pytest.approx(1.6)
    assert table.loc[("p", "lru"), "misses_over_belady"] == pytest.approx(1.5)
    assert table.loc[("p", "lru"), "time_over_bound"] == pytest.approx(1.5)
    assert "x" not in table.index.get_level_values("policy")


def test_plot_inputs_from_tables(count_results):
    mrc = mrc_frame(count_results.runs)
    assert set(mrc["policy"]) == {"lru", "toy-fifo"} and sorted(set(mrc["capacity_share"])) == [0.1, 0.3, 0.6]
    lat = latency_frame(timed_like().runs, timed_like().links)
    assert sorted(lat["component"]) == ["compute", "copy h2d", "cpu_wait", "stall"]
    assert lat.set_index("component").loc["copy h2d", "seconds"] == pytest.approx(0.006)
    assert (lat["bound_s"] == 0.011).all()


def test_copy_engine_lanes_by_hand():
    # one engine free at 0; copies [0,2) [1,3) [2,4) [3,5) on two engines -> 0 1 0 1
    lanes = adapters.assign_engines(np.array([0.0, 1.0, 2.0, 3.0]), np.array([2.0, 3.0, 4.0, 5.0]), 2)
    assert lanes.tolist() == [0, 1, 0, 1]
    assert adapters.assign_engines(np.array([5.0, 0.0]), np.array([6.0, 4.0]), 1).tolist() == [0, 0]


def test_reads_count_results_in_the_replay_commands_layout(tmp_path):
    """`moesim replay --out` (policies room): long rows per (run, table, index), runs in metadata."""
    summary = {"requests": 10, "hits": 6, "late_prefetch": 0, "misses": 4, "compulsory": 3, "capacity": 1,
               "collision": 0, "bytes_fetched": 400, "hit_rate": 0.6, "evictions": 1, "bypasses": 0,
               "prefetch": {"issued": 0, "useful": 0, "late": 0, "wasted": 0, "bytes": 0}}
    config = {"policy": {"name": "lru", "label": "lru", "offline": False}, "capacity": "5%", "capacity_bytes": 200,
              "scope": "global", "mode": "event", "seed": 0}
    meta = {"moesim_version": "0.1.0", "trace": {"source": "bundled:qwen", "hash": "abc", "passes": 2,
                                                 "routed_accesses": 12, "total_object_bytes": 4000},
            "runs": [{"config": config, "summary": summary}]}
    rows = pd.DataFrame({"policy": ["lru"] * 4, "capacity": ["5%"] * 4, "capacity_bytes": [200] * 4,
                         "scope": ["global"] * 4, "mode": ["event"] * 4, "table": ["layer", "layer", "pass", "pass"],
                         "index": [0, 1, 0, 1], "phase": ["all", "all", "prefill", "decode"],
                         "requests": [5, 5, 6, 4], "hits": [3, 3, 3, 3], "late_prefetch": [0] * 4,
                         "misses": [2, 2, 3, 1], "compulsory": [2, 1, 3, 0], "capacity_misses": [0, 1, 0, 1],
                         "collision": [0] * 4, "bytes_fetched": [200, 200, 300, 100],
                         "hit_rate": [0.6, 0.6, 0.5, 0.75]})
    table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata(
        {b"moesim": json.dumps(meta).encode()})
    pq.write_table(table, tmp_path / "replay.parquet")
    results = load_result_set(tmp_path / "replay.parquet")
    run = results.runs.iloc[0]
    assert (run["trace"], run["policy"], run["capacity_bytes"], run["misses"], run["capacity_misses"]) == \
        ("bundled:qwen", "lru", 200, 4, 1)
    assert run["capacity_share"] == pytest.approx(0.05)
    assert results.layers["misses"].tolist() == [2, 2] and results.passes["phase"].tolist() == ["prefill", "decode"]


def test_reads_timed_results_in_the_engines_layout(tmp_path):
    """The timing engine's saved result: per-cell rows, summary and requests in metadata."""
    cells = pd.DataFrame({
        "pass": [0, 0, 1, 1], "layer": [0, 1, 0, 1], "phase": ["prefill", "prefill", "decode", "decode"],
        "start_s": [0.0, 1.0, 2.0, 3.5], "gate_s": [0.2, 1.2, 2.2, 3.7], "end_s": [1.0, 2.0, 3.5, 4.5],
        "compute_s": [0.8, 0.8, 0.8, 0.8], "stall_s": [0.0, 0.0, 0.7, 0.2], "requests": [2, 2, 1, 1],
        "hits": [0, 1, 0, 1], "late_prefetch": [0, 0, 1, 0], "misses": [2, 1, 0, 0], "compulsory": [2, 1, 0, 0],
        "capacity": [0, 0, 0, 0], "collision": [0, 0, 0, 0]})
    summary = {"requests": 6, "hits": 2, "late_prefetch": 1, "misses": 3, "compulsory": 3, "capacity": 0,
               "collision": 0, "hit_rate": 0.5, "lossy": False, "time": {"total_s": 4.5, "compute_s": 3.2,
                                                                         "stall_s": 0.9, "cpu_wait_s": 0.0},
               "tpot_s": {"mean": 2.5, "p90": 2.5}, "ttft_s": {"mean": 2.0}, "tokens_per_s": 0.44,
               "topology": {"host_link": "h2d"}, "links": {"h2d": {"bytes": 300, "copies": 3, "busy_s": 1.5}},
               "energy_j": {"total": 9.0, "links": {"h2d": 0.1}},
               "bounds": {"time_bound_s": 3.2, "belady_misses": 3, "tpot_bound_s": 1.6}}
    meta = {"format": "moesim.timed_result/1", "trace_hash": "h",
            "config": {"eviction": {"name": "lru", "kind": "eviction", "params": {}},
                       "prefetch": {"name": "oracle", "kind": "prefetch", "params": {"lookahead": 2}},
                       "miss": {"name": "stall", "kind": "miss", "params": {}}, "capacity_bytes": 300,
                       "scope": "global", "profile": "rtx4090", "profile_overrides": ["links.h2d.bandwidth=8GB/s"],
                       "seed": 0},
            "summary": summary, "requests": {"request": [0], "output_tokens": [2], "ttft_s": [2.0],
                                             "tpot_s": [2.5], "e2e_s": [4.5], "tokens_per_s": [0.44]}}
    table = pa.Table.from_pandas(cells, preserve_index=False).replace_schema_metadata(
        {b"moesim": json.dumps(meta).encode()})
    pq.write_table(table, tmp_path / "timed.parquet")
    results = load_result_set(tmp_path)
    run = results.runs.iloc[0]
    assert run["engine"] == "timed" and run["policy"] == "lru pf=oracle:lookahead=2"
    assert run["profile_set"] == "links.h2d.bandwidth=8GB/s" and run["bytes_moved"] == 300
    assert (run["total_s"], run["tpot_mean_s"], run["time_bound_s"], run["belady_misses"]) == (4.5, 2.5, 3.2, 3)
    layers = results.layers.set_index("layer")
    assert layers.loc[0, "misses"] == 2 and layers.loc[0, "hit_rate"] == pytest.approx(1 / 3)
    assert layers.loc[0, "stall_s"] == pytest.approx(0.7)
    assert results.links["busy_s"].tolist() == [1.5] and results.requests["tpot_s"].tolist() == [2.5]
    # the compute lane of the decode window: dense, stall, expert per cell
    lane = results.timeline.sort_values("start_s")
    assert lane["kind"].tolist() == ["dense", "stall", "expert", "dense", "stall", "expert"]
    assert lane["end_s"].iloc[1] == pytest.approx(2.9)
    assert any("compute stream only" in n for n in results.notes)
