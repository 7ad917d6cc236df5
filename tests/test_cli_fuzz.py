"""Every command that reads a file or a number, driven with generated bad input (issue #16).

Whatever hypothesis feeds in (malformed Parquet/CSV/JSONL/YAML, wrong types, out-of-range and
huge numbers, paths that are folders, missing, or equal to an input), a command must:
  - exit 0 or 1, never 2 (a traceback is a bug in moesim);
  - on 1 print exactly one error line, naming the file, row, field or option;
  - change no input file, and leave no temporary file behind.
Commands run in this process through moesim.cli.main (fast); MOESIM_MEMORY_LIMIT keeps a huge
but "valid" size from generating for minutes: moesim.limits refuses it as it would a real one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")

NOTE = "moesim: note:"
ERROR = "moesim: error: "
# what an error line must name: an option, a file, a row/line/field/key, or a setting
LOCATED = re.compile(r"--[a-z]|\.(parquet|csv|jsonl|yaml|html|md)\b|/|\brow\b|\bline\b|field|: (seed|capacit"
                     r"|traces|eviction|profiles|imports|seeds|n_|count|value|object_bytes)|spec|synth|sweep|policy|"
                     r"capacity|layer|expert")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Valid inputs the bad cases start from, made once: a tiny trace, a result file, a spec, a sweep
    folder, a profile and CSV/JSONL logs."""
    root = tmp_path_factory.mktemp("fuzz")
    inputs = root / "in"
    inputs.mkdir()
    trace = inputs / "t.parquet"
    assert main(["traces", "synth", "--requests", "2", "--set", "n_layers=4", "--set", "n_experts=8",
                 "--set", "top_k=2", "--set", "prefill=fixed:4", "--set", "decode=fixed:4", "--set", "weights=true",
                 "--out", str(trace)]) == 0
    result = inputs / "r.parquet"
    assert main(["replay", "--trace", str(trace), "--policy", "lru", "--capacity", "50%", "--out", str(result)]) == 0
    spec = inputs / "s.yaml"
    spec.write_text("traces: {t: t.parquet}\neviction: [lru]\ncapacities: ['50%']\n")
    dataset = inputs / "sweep"
    assert main(["sweep", str(spec), "--out", str(dataset), "--jobs", "1", "--no-progress"]) == 0
    profile = inputs / "p.yaml"
    shutil.copy(Path(__file__).parents[1] / "moesim/hw_profiles/data/rtx4090.yaml", profile)
    (inputs / "g.csv").write_text("request,position,layer,experts\n0,0,0,1;2\n0,0,1,0;3\n0,1,0,2;1\n0,1,1,3;0\n")
    (inputs / "g.jsonl").write_text('{"request": 0, "position": 0, "layer": 0, "experts": [1, 2]}\n'
                                    '{"request": 0, "position": 0, "layer": 1, "experts": [0, 3]}\n')
    (inputs / "folder").mkdir()
    return {"root": root, "in": inputs, "trace": trace, "result": result, "spec": spec, "dataset": dataset,
            "profile": profile}


@pytest.fixture(autouse=True)
def _small_memory(monkeypatch):
    monkeypatch.setenv("MOESIM_MEMORY_LIMIT", str(16 * 2**20))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")]


def run_checked(world: dict[str, Path], argv: list[str]) -> tuple[int, str]:
    """Run `argv` and assert the contract; returns (exit code, stderr)."""
    before = _digest(world["in"])
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    text = err.getvalue()
    assert code in (0, 1), f"{argv}: exit {code}\n{text[-3000:]}"
    assert "Traceback" not in text, f"{argv}:\n{text[-3000:]}"
    if code == 1:
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith(NOTE)]
        assert len(lines) == 1 and lines[0].startswith(ERROR), f"{argv}: {text!r}"
        message = lines[0][len(ERROR):]
        assert LOCATED.search(message) or re.match(r"\S+: ", message), \
            f"{argv}: the error names no file/option: {lines[0]!r}"
    assert _digest(world["in"]) == before, f"{argv} changed an input"
    assert not _temporaries(world["root"]), f"{argv} left {_temporaries(world['root'])}"
    return code, text


# ---- generated bad values ----------------------------------------------------------------------
HUGE = ["9" * 5000, "99999999999999999999", str(2**64), "1e400", "-1", "-0", "0", "nan", "inf", "-inf",
        "1e15", "1e-300", "0x10", "", " ", "1.5", "1e9TiB", "99999999999999999999slots", "1e-300 B/s",
        "5%%", "-5%", "1e308%", "abc", "[1, 2]", "{a: 1}", "null", "true", "\x1b[31m", "1e6 GB"]
numbers = st.one_of(st.sampled_from(HUGE), st.integers(min_value=-2**70, max_value=2**70).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.text(alphabet="0123456789.eE+-%kKMGTiBbslots /", max_size=12))
capacities = st.one_of(numbers, st.tuples(numbers, st.sampled_from(["%", "MiB", "slots", "GB", " TiB", "B"])).map(
    "".join))


@st.composite
def corrupt_parquet(draw, source: Path) -> bytes:
    data = bytearray(source.read_bytes())
    how = draw(st.sampled_from(["truncate", "flip", "footer", "empty", "garbage"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "footer":  # a damaged footer length or metadata
        i = draw(st.integers(max(0, len(data) - 64), len(data) - 5))
        data[i] ^= draw(st.integers(1, 255))
        return bytes(data)
    if how == "empty":
        return b""
    return draw(st.binary(max_size=200)) + b"PAR1"


yaml_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from([
        "a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ntraces: {t: t.parquet}\neviction: [lru]\ncapacities: ['5%']\n",
        "traces: {t: t.parquet}\neviction: [lru, fifo]\neviction: [lru]\ncapacities: ['5%']\n",
        "traces: {t: {factory: 'os:system', args: {command: 'touch pwned'}}}\neviction: [lru]\ncapacities: [5%]\n",
        "imports: [os]\ntraces: {t: t.parquet}\neviction: [lru]\ncapacities: ['5%']\n",
        "!!python/object/apply:os.system ['touch pwned']\n",
        "traces: {t: t.parquet}\neviction: [lru]\ncapacities: ['5%']\nseeds: [" + "9" * 30 + "]\n",
        "traces: {t: t.parquet}\neviction: [lru]\ncapacities: ['1e9TiB']\n",
        "traces: {t: {synthetic: {accesses: 1e12}}}\neviction: [lru]\ncapacities: ['5%']\n",
        "traces: {t: {synthetic: {n_experts: 2000000000}}}\neviction: [lru]\ncapacities: ['5%']\n",
        "traces: {t: missing.parquet}\neviction: [lru]\ncapacities: ['5%']\n",
        "traces: {t: t.parquet}\neviction: [nosuch]\ncapacities: ['5%']\n",
        "traces: {t: t.parquet}\neviction: [lru]\ncapacities: ['5%']\nprofiles: [{name: rtx4090, set: {links.h2d.b"
        "andwidth: 1e-300 B/s}}]\n",
        "name: x\nlinks: {h2d: {bandwidth: 1e-300 B/s}}\n",
    ]),
    st.builds(lambda k, v: f"traces: {{t: t.parquet}}\neviction: [lru]\ncapacities: ['5%']\n{k}: {v}\n",
              st.sampled_from(["seeds", "scope", "replay", "tables", "profiles", "capacities", "bogus"]),
              st.sampled_from(HUGE + ["[-1]", "[1.5]", "{passes: 3}", "[[1]]"])),
)

csv_text = st.one_of(
    st.text(max_size=120),
    st.lists(st.tuples(st.sampled_from(["0", "1", "-1", "x", "", "9" * 30, "nan", "1e400"]),
                       st.sampled_from(["0", "1", "-3", "", "2.5", "9" * 30]),
                       st.sampled_from(["0", "1", "-1", "99999", ""]),
                       st.sampled_from(["1;2", "1;1", "-1", "", "x", "9" * 30, "[1, 2]"])),
             min_size=0, max_size=6).map(
        lambda rows: "request,position,layer,experts\n" + "".join(",".join(r) + "\n" for r in rows)),
)

jsonl_text = st.one_of(
    st.text(max_size=120),
    st.lists(st.fixed_dictionaries({
        "request": st.sampled_from([0, -1, "a", None, 2**70]),
        "position": st.sampled_from([0, 1, -2, 1.5, None, "p"]),
        "layer": st.sampled_from([0, 1, -1, 10**9, None]),
        "experts": st.sampled_from([[1, 2], [1, 1], [], [-1], "x", None, [10**20]]),
        "weights": st.sampled_from([[0.5, 0.5], [float("nan"), 1.0], [-1.0, 2.0], None]),
    }), max_size=5).map(lambda rows: "".join(__import__("json").dumps(r) + "\n" for r in rows)),
)


def _path_choice(world: dict[str, Path], kind: str, out_dir: Path, *inputs: str) -> st.SearchStrategy[str]:
    """An output path: a fresh file, a folder, a missing folder's child, a file's child, or one of the
    command's own inputs (which it must refuse to replace)."""
    return st.sampled_from([
        str(out_dir / f"o.{kind}"), str(world["in"] / "folder"), str(world["trace"] / "x"),
        str(out_dir / "new" / "deeper" / f"o.{kind}"), "/proc/o", *inputs,
    ])


# ---- the commands ------------------------------------------------------------------------------
@st.composite
def trace_file(draw, world: dict[str, Path], work: Path) -> str:
    """A trace argument: the good one, a corrupted Parquet, bad CSV/JSONL, a folder, a missing path."""
    choice = draw(st.sampled_from(["good", "parquet", "csv", "jsonl", "folder", "missing", "bundled"]))
    if choice == "good":
        return str(world["trace"])
    if choice == "folder":
        return str(world["in"] / "folder")
    if choice == "missing":
        return str(work / "missing.parquet")
    if choice == "bundled":
        return draw(st.sampled_from(["bundled:nosuch", "bundled:", "bundled:qwen/../../x"]))
    path = work / f"bad.{choice}"
    if choice == "parquet":
        path.write_bytes(draw(corrupt_parquet(world["trace"])))
    else:
        path.write_text(draw(csv_text if choice == "csv" else jsonl_text), encoding="utf-8")
    return str(path)


@st.composite
def command(draw, world: dict[str, Path], work: Path) -> list[str]:
    name = draw(st.sampled_from(["info", "validate", "convert", "synth", "replay", "report", "sweep", "sweep-table",
                                 "whatif", "profiles", "info-format", "stats", "compare", "synth-tol", "fit"]))
    if name == "stats":
        return ["traces", "stats", draw(trace_file(world, work)), "--k", draw(numbers)]
    if name == "fit":  # a good trace only: fitting one takes seconds; the bad files are the others' job
        return ["traces", "fit", str(world["trace"]), "--seed", draw(numbers), "--out",
                draw(_path_choice(world, "yaml", work, str(world["trace"])))]
    if name == "compare":
        return ["compare", "--trace", draw(trace_file(world, work)), "--policies",
                draw(st.sampled_from(["lru,fifo", "lru", "nosuch", "lfu:decay=" + draw(numbers)])),
                "--capacity", ",".join(draw(st.lists(capacities, min_size=1, max_size=3)))]
    if name == "synth-tol":
        return ["traces", "synth-tol", "--zipf", draw(numbers), "--layers", draw(numbers), "--row-bytes",
                draw(capacities), "--vocab", draw(numbers), "--out", draw(_path_choice(world, "parquet", work))]
    if name in ("info", "validate"):
        return ["traces", name, draw(trace_file(world, work))]
    if name == "info-format":
        return ["traces", "info", draw(trace_file(world, work)), "--format",
                draw(st.sampled_from(["flame", "generic", "vllm", "bigmoeonedge", "nosuch", "moesim"]))]
    if name == "convert":
        src = draw(trace_file(world, work))
        return ["traces", "convert", src, "--out", draw(_path_choice(world, "parquet", work, src))]
    if name == "synth":
        flag = draw(st.sampled_from(["--accesses", "--requests", "--seed", "--set seed", "--set n_experts",
                                     "--set n_layers", "--set object_bytes", "--set top_k", "--set zipf"]))
        value = draw(numbers)
        args = [flag, value] if not flag.startswith("--set") else ["--set", f"{flag.split()[1]}={value}"]
        return ["traces", "synth", *args, "--out", draw(_path_choice(world, "parquet", work))]
    if name == "replay":
        argv = ["replay", "--trace", draw(trace_file(world, work)), "--policy", "lru", "--capacity", draw(capacities)]
        if draw(st.booleans()):
            argv += ["--seed", draw(numbers)]
        if draw(st.booleans()):
            argv += ["--out", draw(_path_choice(world, "parquet", work, argv[2]))]
        return argv
    if name == "report":
        src = draw(st.sampled_from([str(world["result"]), str(world["dataset"]), draw(trace_file(world, work))]))
        argv = ["report", src, "--out", draw(_path_choice(world, "html", work, src))]
        if draw(st.booleans()):
            mine = [str(world["dataset"] / "table.parquet")] if src == str(world["dataset"]) else []
            argv += ["--md", draw(st.sampled_from([argv[-1], str(work / "r.md"), src, *mine]))]
        return argv
    if name == "sweep":
        spec = work / "spec.yaml"
        spec.write_text(draw(yaml_text), encoding="utf-8")
        shutil.copy(world["trace"], work / "t.parquet")
        return ["sweep", str(spec), "--out", str(work / "sw"), "--jobs", "1", "--no-progress",
                "--max-runs", draw(st.sampled_from(["20", "0", "-1", "x", "9" * 50]))]
    if name == "sweep-table":
        src = draw(st.sampled_from([str(world["dataset"]), str(world["in"] / "folder"), str(world["trace"]),
                                    str(work / "nowhere")]))
        mine = [str(world["dataset"] / "table.parquet")] if src == str(world["dataset"]) else [src]
        return ["sweep-table", src, "--out",
                draw(_path_choice(world, draw(st.sampled_from(["parquet", "csv", "txt"])), work, *mine))]
    if name == "whatif":
        return ["whatif", "--trace", draw(trace_file(world, work)), "--count-only", "--jobs", "1", "--no-progress",
                "--max-runs", "20", "--vary", f"capacity={draw(capacities)}..50%:{draw(numbers)}",
                "--out", str(work / "wi")]
    profile = work / "p.yaml"
    profile.write_text(draw(yaml_text), encoding="utf-8")
    return ["profiles", "validate", str(profile)]


@settings(max_examples=int(os.environ.get("MOESIM_FUZZ_EXAMPLES", "120")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_bad_input_never_crashes_loses_or_leaves_anything(world, data, tmp_path_factory):
    work = tmp_path_factory.mktemp("case", numbered=True)
    work_in_root = world["root"] / work.name
    work_in_root.mkdir()
    try:
        argv = data.draw(command(world, work_in_root), label="argv")
        run_checked(world, argv)
    finally:
        shutil.rmtree(work_in_root, ignore_errors=True)
