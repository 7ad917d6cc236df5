"""Readers on small hand-written files: the engine's CSV + summary + log, generic CSV/JSONL, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.runs.readers import parse_column_map, read_run

ENGINE_CSV = """step,steps,wall_ms,io_ms,compute_ms,read_bytes,cache_hit_pct,stall_ms,mgmt_ms
1,3,100.0,150.0,60.0,4096000,10.00,30.0,10.0
2,3,90.0,120.0,55.0,3000000,20.00,25.0,10.0
3,3,80.0,0.0,80.0,0,30.00,0.0,0.0
# summary tokens=3 s/tok=0.090 n_prompt=5 prefill_s=1.250 stall_s/tok=0.018 cache_budget_MiB=1500.0
"""
LOG = """\ufeffgeneration: 3 tokens, 0.090 s/token
bmoe: expert streaming ON  n_expert=128 o_direct=1 io_threads=2 cache=1500 MiB
validate_override: Using metadata override (  int) 'gemma4.expert_used_count' = 6
moe-overlap: stall 0.018 s/token
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_engine_csv_with_summary_and_log(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", ENGINE_CSV)
    _write(tmp_path, "r.log", LOG)
    _write(tmp_path, "r.metrics", "peak_rss_kb=100\nmem_avail_floor_kb=1647292\n")
    run = read_run(path)
    assert run.steps["wall_s"].tolist() == pytest.approx([0.100, 0.090, 0.080])
    assert run.steps["read_bytes"].tolist() == [4096000, 3000000, 0]
    assert run.steps["mgmt_s"].tolist() == pytest.approx([0.010, 0.010, 0.0])
    cfg = run.config
    assert (cfg.cache_mib, cfg.lanes, cfg.overlap, cfg.top_k, cfg.n_prompt, cfg.prefill_s) == (1500.0, 2, True, 6, 5, 1.25)
    assert run.sidecar["mem_avail_floor_kb"] == 1647292
    assert run.hit_pct_cumulative.tolist() == [10.0, 20.0, 30.0]
    assert run.tpot_s()["median"] == pytest.approx(0.090)


def test_serial_run_without_log_is_serial_and_no_cache_is_budget_zero(tmp_path: Path) -> None:
    text = ("step,steps,wall_ms,io_ms,compute_ms,read_bytes,cache_hit_pct,stall_ms\n"
            "1,2,600,440,160,947564544,-1.00,0.000\n2,2,610,450,160,947560448,-1.00,0.000\n"
            "# summary tokens=2 s/tok=0.605 stall_s/tok=0.000 n_prompt=42 prefill_s=6.5\n")
    run = read_run(_write(tmp_path, "s.csv", text))
    assert run.config.overlap is False
    assert run.config.cache_mib == 0.0
    assert run.config.mmap is False


def test_mmap_run_reads_nothing_and_has_no_cache(tmp_path: Path) -> None:
    text = ("step,steps,wall_ms,io_ms,compute_ms,read_bytes,cache_hit_pct,stall_ms\n"
            "1,1,3669.3,0.000,3669.3,0,-1.00,0.000\n# summary tokens=1 read_MiB=0.0\n")
    assert read_run(_write(tmp_path, "m.csv", text)).config.mmap is True


def test_options_fill_and_override_the_files(tmp_path: Path) -> None:
    run = read_run(_write(tmp_path, "r.csv", ENGINE_CSV))
    assert run.config.lanes is None
    merged = run.config.merged(lanes=4, cache_mib=None, top_k=8)
    assert (merged.lanes, merged.cache_mib, merged.top_k) == (4, 1500.0, 8)


def test_bad_number_names_file_row_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.csv", ENGINE_CSV.replace("90.0,120.0", "90.0,abc"))
    with pytest.raises(UserError, match=r"bad\.csv: row 2, field io_ms: not a number: 'abc'"):
        read_run(path)


def test_steps_must_increase_and_not_engine_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "dup.csv", ENGINE_CSV.replace("2,3,90.0", "1,3,90.0"))
    with pytest.raises(UserError, match=r"row 2, field step"):
        read_run(path)
    with pytest.raises(UserError, match="--columns"):
        read_run(_write(tmp_path, "other.csv", "i,lat\n1,2\n"))


def test_generic_csv_and_jsonl_with_a_column_map(tmp_path: Path) -> None:
    csv = _write(tmp_path, "g.csv", "i,lat,b,h\n1,12.5,4096,3\n2,10.0,0,5\n")
    run = read_run(csv, columns="step=i,wall_ms=lat,read_bytes=b,hits=h")
    assert run.steps["wall_s"].tolist() == pytest.approx([0.0125, 0.010])
    assert run.steps["hits"].tolist() == [3, 5]
    assert np.isnan(run.steps["io_s"]).all()
    jl = _write(tmp_path, "g.jsonl", '{"i": 1, "t": 0.2}\n\n{"i": 2, "t": 0.3}\n')
    assert read_run(jl, columns="step=i,wall_s=t").steps["wall_s"].tolist() == [0.2, 0.3]
    with pytest.raises(UserError, match=r"g\.jsonl: row 2: no column 't'"):
        read_run(_write(tmp_path, "g.jsonl", '{"i": 1, "t": 0.2}\n{"i": 2}\n'), columns="step=i,wall_s=t")


def test_column_map_mistakes_are_one_line() -> None:
    with pytest.raises(UserError, match="say the unit"):
        parse_column_map("step=i,wall=lat")
    with pytest.raises(UserError, match="needs 'wall'"):
        parse_column_map("step=i")
    with pytest.raises(UserError, match="unknown field 'speed'"):
        parse_column_map("step=i,wall_s=x,speed=y")
