"""Regression tests for issue #16, one per reported case: nothing lost, nothing executed, no tracebacks.

Each test reproduces a line of the issue as written and checks the fixed behaviour: exit 1 with one
line naming the option/file, the input unchanged, nothing half-written.
"""

from __future__ import annotations

import json
import os
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
from moesim.sweeps.spec import load_spec, parse_spec
from moesim.traces.format.io import load_trace
from moesim.units import parse_quantity

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("h16") / "v.parquet"
    assert main(["traces", "synth", "--requests", "2", "--set", "n_layers=4", "--set", "n_experts=8",
                 "--set", "top_k=2", "--set", "prefill=fixed:4", "--set", "decode=fixed:8", "--set", "weights=true",
                 "--out", str(path)]) == 0
    return path


@pytest.fixture()
def trace(trace_file, tmp_path) -> Path:
    copy = tmp_path / "v.parquet"
    copy.write_bytes(trace_file.read_bytes())
    return copy


def fails(argv: list[str], capsys, *fragments: str) -> str:
    """Run argv; it must exit 1 with one error line holding every fragment."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("moesim: note:")]
    assert len(lines) == 1 and lines[0].startswith("moesim: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def with_metadata(src: Path, dst: Path, **changes) -> Path:
    """A copy of a moesim Parquet trace whose metadata fields are replaced (bypassing the writer)."""
    table = pq.read_table(src)
    meta = json.loads(table.schema.metadata[b"moesim"])
    target = meta["meta"] if "meta" in meta else meta
    target.update(changes)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"moesim": json.dumps(meta).encode()}), dst)
    return dst


def small_spec(folder: Path, extra: str = "", trace: str = "v.parquet") -> Path:
    spec = folder / "spec.yaml"
    spec.write_text(f"traces: {{t: {trace}}}\neviction: [lru, fifo]\ncapacities: ['25%', '50%']\n{extra}")
    return spec


# ---- data loss ---------------------------------------------------------------------------------
def test_an_output_equal_to_an_input_is_refused_and_the_input_kept(trace, tmp_path, capsys):
    before = trace.read_bytes()
    fails(["replay", "--trace", trace, "--policy", "lru", "--capacity", "5%", "--out", trace], capsys, "also an input")
    fails(["traces", "fit", trace, "--out", trace], capsys, "also an input")
    assert trace.read_bytes() == before
    result = tmp_path / "r.parquet"
    assert main(["replay", "--trace", str(trace), "--policy", "lru", "--capacity", "5%", "--out", str(result)]) == 0
    kept = result.read_bytes()
    fails(["report", result, "--out", result], capsys, "--out", "also an input")
    fails(["report", result, "--out", tmp_path / "a.html", "--md", tmp_path / "a.html"], capsys, "--md")
    assert result.read_bytes() == kept and not (tmp_path / "a.html").exists()
    out = tmp_path / "sw"
    run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
    table = (out / store.TABLE).read_bytes()
    fails(["report", out, "--out", tmp_path / "r.html", "--md", out / store.TABLE], capsys, "also an input")
    assert (out / store.TABLE).read_bytes() == table


@pytest.mark.parametrize("command", [
    ["traces", "convert", "{trace}", "--out", "{dir}"],
    ["traces", "synth", "--requests", "1", "--out", "{dir}"],
    ["traces", "fit", "{trace}", "--out", "{dir}"],
    ["report", "{result}", "--out", "{dir}"],
    ["sweep-table", "{sweep}", "--out", "{dir}"],
    ["traces", "convert", "{trace}", "--out", "{trace}/x.parquet"],
    ["traces", "synth", "--requests", "1", "--out", "/proc/no/x.parquet"],
])
def test_a_directory_or_unwritable_output_is_one_line(command, trace, tmp_path, capsys):
    result = tmp_path / "r.parquet"
    assert main(["replay", "--trace", str(trace), "--policy", "lru", "--capacity", "5%", "--out", str(result)]) == 0
    sweep = tmp_path / "sw"
    run_sweep(load_spec(small_spec(tmp_path)), sweep, jobs=1, progress=False)
    (tmp_path / "folder").mkdir()
    argv = [a.format(trace=trace, dir=tmp_path / "folder", result=result, sweep=sweep) for a in command]
    fails(argv, capsys)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_damaged_table_is_rebuilt_and_a_damaged_run_file_rerun(trace, tmp_path, capsys):
    out = tmp_path / "sw"
    first = run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
    reference = first.table
    table = out / store.TABLE
    table.write_bytes(table.read_bytes()[:50])  # truncated cache
    assert main(["sweep-table", str(out), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 4
    run = store.run_files(out)[0]
    run.write_bytes(run.read_bytes()[:100])  # truncated run file: not done
    assert main(["sweep-table", str(out)]) == 0
    assert "damaged run file" in capsys.readouterr().err
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    again = run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
    assert again.ran == 1 and again.skipped == 3
    assert (out / store.RUNS / (run.name + store.DAMAGED)).is_file()  # kept aside, not deleted
    assert again.table.drop(columns=[]).equals(reference)


def test_temporary_files_of_dead_writers_go_and_live_ones_stay(trace, tmp_path):
    target = tmp_path / "conv.parquet"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".conv.parquet.{dead_pid}.abc123.tmp"
    live = tmp_path / f".conv.parquet.{os.getppid()}.def456.tmp"
    stale.write_text("x")
    live.write_text("y")
    assert main(["traces", "convert", str(trace), "--out", str(target)]) == 0
    assert not stale.exists() and live.exists()


def test_a_report_pair_is_written_as_one_unit(tmp_path, monkeypatch):
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    html.write_text("old html")
    md.write_text("old md")
    calls = []
    real = atomic_io._publish

    def publish_then_die(tmp, target, label):
        calls.append(target)
        raise KeyboardInterrupt  # killed before the first rename
    monkeypatch.setattr(atomic_io, "_publish", publish_then_die)
    with pytest.raises(KeyboardInterrupt):
        atomic_io.write_texts_atomic({html: "new html", md: "new md"})
    monkeypatch.setattr(atomic_io, "_publish", real)
    assert html.read_text() == "old html" and md.read_text() == "old md"  # both old: never a mixed pair
    assert not list(tmp_path.glob(".*.tmp"))
    atomic_io.write_texts_atomic({html: "new html", md: "new md"})
    assert html.read_text() == "new html" and md.read_text() == "new md"


def test_two_sweeps_into_one_folder_the_second_is_refused(trace, tmp_path):
    out = tmp_path / "sw"
    (out / store.RUNS).mkdir(parents=True)
    inflight = out / store.RUNS / f".x.parquet.{os.getpid()}.zz.tmp"
    with store.locked(out):
        inflight.write_text("another sweep's file")
        with pytest.raises(UserError, match="another sweep"):
            run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)
        assert inflight.exists()  # the refused sweep touched nothing
    run_sweep(load_spec(small_spec(tmp_path)), out, jobs=1, progress=False)  # the lock went with its holder
    assert not inflight.exists()  # and the next start cleaned what a dead sweep left


# ---- code execution and spec loading -----------------------------------------------------------
def test_a_spec_runs_no_code_without_allow_code(trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "evil.yaml"
    spec.write_text("traces: {f: {factory: 'os:system', args: {command: 'touch pwned'}}}\neviction: [lru]\n"
                    "capacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "evil.yaml: traces: f: factory", "--allow-code")
    spec.write_text("imports: [os]\ntraces: {t: v.parquet}\neviction: [lru]\ncapacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "evil.yaml: imports", "--allow-code")
    assert not (tmp_path / "pwned").exists()


def test_duplicate_keys_and_alias_bombs_are_refused(tmp_path, capsys):
    spec = tmp_path / "dup.yaml"
    spec.write_text("traces: {t: v.parquet}\neviction: [lru, fifo]\neviction: [lru]\ncapacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "dup.yaml", "duplicate key 'eviction'")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    spec.write_text(bomb + "traces: {t: v.parquet}\neviction: [lru]\ncapacities: ['5%']\n")
    start = time.monotonic()
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "anchors and aliases")
    assert time.monotonic() - start < 5
    profile = tmp_path / "p.yaml"
    profile.write_text(bomb)
    fails(["profiles", "validate", profile], capsys, "anchors and aliases")


def test_relative_trace_paths_resolve_against_the_spec_folder(trace, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outcome = run_sweep(load_spec(small_spec(tmp_path)), tmp_path / "o", jobs=1, progress=False)
    assert (outcome.table["status"] == "ok").all() and len(outcome.table) == 4


def test_sweep_errors_name_the_spec_file_and_key(trace, tmp_path, capsys):
    spec = small_spec(tmp_path, trace="missing.parquet")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: traces: t")
    spec = small_spec(tmp_path, extra=f"seeds: [{2**64}]\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: seeds", "outside 0..2**64-1")
    spec.write_text("traces: {t: v.parquet}\neviction: [lru]\ncapacities: ['1e9TiB']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: capacities")
    spec.write_text("traces: {t: {synthetic: {accesses: 1e12}}}\neviction: [lru]\ncapacities: ['5%']\n")
    fails(["sweep", spec, "--out", tmp_path / "o"], capsys, "spec.yaml: traces: t", "memory")


# ---- silent wrong results ----------------------------------------------------------------------
def test_a_model_of_another_shape_is_refused(trace, capsys):
    fails(["replay", "--trace", trace, "--policy", "lru", "--capacity", "25%", "--model", "mixtral-8x7b",
           "--profile", "a100-80gb"], capsys, "--model", "32 MoE layers x 8 experts")


def test_set_without_profile_is_refused(trace, capsys):
    fails(["replay", "--trace", trace, "--policy", "lru", "--capacity", "25%", "--set", "links.h2d.bandwidth=1GB/s"],
          capsys, "--set", "--profile")


def test_an_absurd_bandwidth_is_refused_by_profiles_validate(tmp_path, capsys):
    text = (ROOT / "moesim/hw_profiles/data/rtx4090.yaml").read_text()
    assert "value: 25 GB/s" in text
    bad = text.replace("value: 25 GB/s", "value: 1e-300 B/s", 1)
    profile = tmp_path / "p.yaml"
    profile.write_text(bad)
    fails(["profiles", "validate", profile], capsys, "below 1 per second")
    with pytest.raises(UserError, match="below 1 per second"):
        parse_quantity("1e-300 B/s", "bandwidth")


@pytest.mark.parametrize("command", ["replay", "compare"])
def test_layer_scope_with_a_profile_runs(command, trace, capsys):
    policy = ["--policy", "lru"] if command == "replay" else ["--policies", "lru"]
    assert main([command, "--trace", str(trace), *policy, "--capacity", "25%", "--scope", "layer",
                 "--profile", "a100-80gb"]) == 0


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


def test_a_long_pass_is_read_a_few_cells_at_a_time(tmp_path, monkeypatch):
    """The 60 M-row one-pass file needed the whole pass decoded at once; now a pass is cut where a
    cell ends and the next chunk carries its phase and tokens (bench.hardening_memory measures the
    memory). One prefill of 500 tokens x 4 layers x top-2: cells of 1,000 rows."""
    from moesim.traces.format import parquet_read
    from moesim.traces.format.io import save_trace
    from moesim.traces.format.parquet_codec import read_trace
    from moesim.traces.synth.synthetic import SynthConfig, generate

    trace = generate(SynthConfig(n_layers=4, n_experts=16, top_k=2).with_settings(
        ["prefill=fixed:500", "decode=fixed:0", "n_requests=1", "weights=true"]))
    assert trace.n_passes == 1 and trace.n_accesses == 4000
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
    assert len(sizes) >= 4 and max(sizes) <= 1000 + 64 * parquet_read.SPLIT_BATCHES


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
