"""Regression tests for issue #16 (continued from tests/test_hardening.py): crashes on a user's
mistake, denial of service, and the smaller cases, one test per case of the issue.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from moesim import atomic_io
from moesim.cli import main
from moesim.errors import UserError
from moesim.sweeps import store
from moesim.sweeps.runner import run_sweep
from moesim.sweeps.spec import parse_spec
from moesim.traces.format.io import load_trace
from moesim.units import parse_quantity
from tests.hardening_helpers import ROOT, fails, trace, trace_file, with_metadata  # noqa: F401 (fixtures)


# ---- crashes on a user's mistake ---------------------------------------------------------------
@pytest.mark.parametrize("capacity", ["1e9TiB", "99999999999999999999slots", "1e400%", "9" * 5000 + "MiB"])
def test_huge_capacities_are_one_line(capacity, trace, capsys):
    line = fails(["replay", "--trace", trace, "--policy", "lru", "--capacity", capacity], capsys, "--capacity")
    assert len(line) < 300  # a 5,000-digit value is not echoed whole


def test_huge_object_bytes_and_experts_in_metadata(trace, tmp_path, capsys):
    fails(["traces", "validate", with_metadata(trace, tmp_path / "a.parquet", object_bytes=[10**30] * 4)], capsys,
          "object_bytes")
    fails(["traces", "validate", with_metadata(trace, tmp_path / "b.parquet", n_experts=2_000_000_000)], capsys,
          "n_experts", "memory")
    fails(["traces", "validate", with_metadata(trace, tmp_path / "c.parquet", kind="bogus")], capsys, "kind")


@pytest.mark.parametrize("argv,fragment", [
    (["--accesses", "1e15"], "--accesses"),
    (["--requests", "100000000000"], "--requests"),
    (["--set", "seed=-1"], "seed"),
    (["--seed", str(2**64)], "seed"),
    (["--set", "n_experts=0"], "n_experts must be >= 1"),
    (["--set", "n_experts=2000000000"], "memory"),
    (["--set", "object_bytes=1e30B"], "object_bytes"),
])
def test_synth_sizes_and_seeds(argv, fragment, tmp_path, capsys):
    fails(["traces", "synth", *argv, "--out", tmp_path / "s.parquet"], capsys, fragment)
    assert not (tmp_path / "s.parquet").exists()


def test_a_file_read_as_a_folder_format_is_one_line(tmp_path, capsys):
    log = tmp_path / "x.jsonl"
    log.write_text('{"layer": 0, "position": 0, "experts": [1]}\n')
    fails(["traces", "info", log, "--format", "flame"], capsys, "x.jsonl")


# ---- denial of service -------------------------------------------------------------------------
def test_grids_are_capped_and_max_runs_lifts_the_cap(trace, tmp_path, capsys):
    fails(["whatif", "--trace", trace, "--profile", "a100-80gb", "--vary",
           "links.h2d.bandwidth=1GB/s..2GB/s:100000000", "--out", tmp_path / "w"], capsys, "--max-runs")
    spec = tmp_path / "big.yaml"
    spec.write_text("traces: {t: v.parquet}\neviction: [lru]\ncapacities: [" +
                    ", ".join(f"'{i}slots'" for i in range(1, 101)) + "]\nseeds: [" +
                    ", ".join(str(i) for i in range(101)) + "]\n")
    (tmp_path / "v.parquet").write_bytes(trace.read_bytes())
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "10,100 runs", "--max-runs")
    with pytest.raises(UserError, match="more than the limit of 5"):
        run_sweep(parse_spec({"traces": {"t": str(trace)}, "eviction": ["lru", "fifo"], "capacities": ["1%", "2%",
                                                                                                     "3%"]}),
                  tmp_path / "o2", max_runs=5)


def test_sigkill_of_a_two_job_sweep_leaves_no_workers(trace, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("traces: {t: v.parquet}\neviction: [lru, fifo, lfu, belady]\ncapacities: [" +
                    ", ".join(f"'{i}%'" for i in range(1, 60)) + "]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-m", "moesim", "sweep", str(spec), "--out", str(tmp_path / "o"),
                              "--jobs", "2", "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and not workers:
        assert child.poll() is None
        workers = _children(child.pid)
        time.sleep(0.05)
    while time.monotonic() < deadline and not store.run_files(tmp_path / "o"):
        time.sleep(0.05)
    workers = _children(child.pid)
    assert workers, "the sweep started no worker processes"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    end = time.monotonic() + 20
    while time.monotonic() < end and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived their sweep"


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---- smaller -----------------------------------------------------------------------------------
def test_names_are_escaped_for_the_terminal_and_markdown(trace, tmp_path, capsys):
    evil = with_metadata(trace, tmp_path / "e.parquet", model="\x1b[2J| <b>x</b>\n")
    assert main(["traces", "info", str(evil)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b" in out
    from moesim.safe_text import markdown_cell

    cell = markdown_cell("a|b\n<script>[x](http://e)")
    assert "\n" not in cell and "<" not in cell and "\\|" in cell and "\\[" in cell
    # the Markdown summary of a sweep whose trace name is an injection: one table row, nothing raw
    spec = tmp_path / "spec.yaml"
    spec.write_text("traces: {'x|y<script>\\n': v.parquet}\neviction: [lru]\ncapacities: ['25%']\n")
    (tmp_path / "v.parquet").write_bytes(trace.read_bytes())
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--jobs", "1", "--no-progress"]) == 0
    assert main(["report", str(tmp_path / "o"), "--out", str(tmp_path / "r.html"), "--md", str(tmp_path / "r.md")]) == 0
    md = (tmp_path / "r.md").read_text()
    assert "<script>" not in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert any("x\\|y" in row for row in rows)
    for row in rows:  # every table row keeps its table's columns: no cell split by the name's pipe
        assert len(re.split(r"(?<!\\)\|", row)) in {len(re.split(r"(?<!\\)\|", r)) for r in rows if r.startswith("|---")}


def test_validate_refuses_negative_weights_and_files_without_rows(trace, tmp_path, capsys):
    t = load_trace(trace)
    t.weight = t.weight.copy()
    t.weight[3] = -0.5
    with pytest.raises(UserError, match="access 3: gate weight -0.5"):
        t.validate("x")
    table = pq.read_table(trace)
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)
    fails(["traces", "validate", empty], capsys, "no passes")


def test_map_may_not_send_two_fields_to_one_column(tmp_path, capsys):
    log = tmp_path / "g.csv"
    log.write_text("request,pos,layer,experts\n0,0,0,1;2\n")
    fails(["traces", "validate", log, "--map", "position=pos,request=pos"], capsys, "--map", "both read column")


def test_numbers_from_users_are_range_checked():
    from moesim.units import check_seed, parse_count, show

    assert parse_count("10M", "x") == 10_000_000 and parse_count("2e6", "x") == 2_000_000
    for bad in ("1.5", "1e400", "nan", "9" * 5000, "-1"):
        with pytest.raises(UserError):
            parse_count(bad, "x")
    assert check_seed(2**64 - 1, "s") == 2**64 - 1
    with pytest.raises(UserError):
        check_seed(2**64, "s")
    assert len(show("9" * 5000)) < 80 and len(show(10**5000)) < 80
    assert np.isfinite(parse_quantity("80 GiB", "bytes"))


@pytest.mark.parametrize("n_layers", [4, 1])
def test_a_long_pass_is_read_a_few_cells_or_runs_at_a_time(n_layers, tmp_path, monkeypatch):
    """The 60 M-row one-pass file needed the whole pass decoded at once; now a pass is cut where a
    cell ends, a cell between two runs, and the next chunk carries what the rules need
    (bench.hardening_memory measures the memory). One prefill of 500 tokens x top-2, at 4 layers
    (cells of 1,000 rows) or 1 (one cell of 1,000 rows: the case a cut at cells could not split)."""
    from moesim.traces.format import parquet_read
    from moesim.traces.format.io import save_trace
    from moesim.traces.format.parquet_codec import read_trace
    from moesim.traces.synth.synthetic import SynthConfig, generate

    trace = generate(SynthConfig(n_layers=n_layers, n_experts=16, top_k=2).with_settings(
        ["prefill=fixed:500", "decode=fixed:0", "n_requests=1", "weights=true"]))
    assert trace.n_passes == 1 and trace.n_accesses == 1000 * n_layers
    path = tmp_path / "one-pass.parquet"
    save_trace(trace, path)
    sizes = []
    real = parquet_read.ChunkDecoder

    def recording(table, *args, **kwargs):
        sizes.append(table.num_rows)
        return real(table, *args, **kwargs)
    monkeypatch.setattr(parquet_read, "ChunkDecoder", recording)
    loaded = read_trace(path, batch_rows=64)
    assert loaded.content_hash() == trace.content_hash()
    assert len(sizes) >= 4 and max(sizes) <= 64 * (parquet_read.SPLIT_BATCHES + 1)


def test_nan_weights_and_zero_experts_have_plain_messages(trace, tmp_path, capsys):
    import pyarrow as pa

    log = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"request": [0, 0], "position": [0, 0], "layer": [0, 1], "experts": [[1, 2], [0, 3]],
                             "weights": [[float("nan"), 0.5], [0.5, 0.5]]}), log)
    line = fails(["traces", "validate", log], capsys, "field 'weights': nan is not a finite number")
    assert "np.float64" not in line
    fails(["traces", "validate", with_metadata(trace, tmp_path / "z.parquet", n_experts=0)], capsys,
          "n_layers and n_experts must be at least 1")


def test_outside_a_command_reading_a_file_does_not_forbid_rewriting_it(tmp_path):
    """In a notebook, report(dir) then sweep(spec, dir) again is the plan, not a mistake."""
    path = tmp_path / "x.parquet"
    path.write_text("x")
    atomic_io.note_input(path)
    atomic_io.check_output(path)  # no command running: nothing noted
    atomic_io.begin_command()
    try:
        atomic_io.note_input(path)
        with pytest.raises(UserError, match="also an input"):
            atomic_io.check_output(path)
    finally:
        atomic_io.end_command()
    atomic_io.check_output(path)


def test_a_huge_value_is_not_echoed_whole_by_argument_errors(trace, capsys):
    line = fails(["replay", "--trace", trace, "--capacity", "5%", "--seed", "9" * 5000], capsys, "--seed")
    assert len(line) < 200
