"""`moesim traces info | convert | validate | formats` and the bundled traces, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moesim.cli import main
from moesim.traces.format.bundled import BUNDLED, build_bundled, bundled_names, bundled_trace_path, load_bundled
from moesim.traces.format.io import load_trace, save_trace
from moesim.traces.format.parquet_codec import trace_to_table


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_on_bundled_qwen_meets_the_acceptance_numbers(capsys):
    code, out, _ = run(capsys, "traces", "info", "bundled:qwen", "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["layers"], info["experts"], info["top_k"]) == (48, 128, 6)
    assert info["tokens"] == {"prefill": 28, "decode": 128, "total": 156}
    assert info["passes"] == {"prefill": 1, "decode": 128, "total": 129}
    assert info["routed_accesses"] == 44_766 and info["requests"] == 1
    assert info["extra"]["engine_cache_bytes"] == 4000 * 2**20
    assert info["provenance"]["licence"] == "Apache-2.0"
    assert info["provenance"]["upstream_commit"] == "36020f2f127f061f837fa2ff430e9d1d745438f9"
    assert info["total_routed_bytes"] == 128 * sum(info["object_bytes"]["per_layer"])


def test_info_text_is_readable(capsys):
    code, out, _ = run(capsys, "traces", "info", "bundled:switch-base-8")
    assert code == 0
    assert "layers 6 (model layers [1, 3, 5, 7, 9, 11]), experts 8, top-k 1" in out
    assert "tokens 215 (prefill 215, decode 0); requests 10" in out


def test_bundled_traces_are_all_present_and_valid():
    assert bundled_names() == sorted(BUNDLED) == ["gemma", "qwen", "switch-base-8"]
    for name in bundled_names():
        trace = load_bundled(name)
        trace.validate()
        assert trace.meta.provenance["licence"] == "Apache-2.0"
        assert load_trace(f"bundled:{name}").content_hash() == trace.content_hash()


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_file_is_the_deterministic_conversion_of_its_recording(name, tmp_path, shared_dir):
    save_trace(build_bundled(name, shared_dir), tmp_path / f"{name}.parquet")
    assert (tmp_path / f"{name}.parquet").read_bytes() == bundled_trace_path(name).read_bytes()


def test_unknown_bundled_name(capsys):
    code, _, err = run(capsys, "traces", "info", "bundled:nope")
    assert code == 1 and "no bundled trace 'nope'; bundled: gemma, qwen, switch-base-8" in err


def test_convert_then_validate_round_trip(tmp_path, capsys):
    out = tmp_path / "q.parquet"
    code, text, _ = run(capsys, "traces", "convert", "bundled:gemma", "--out", str(out), "--json")
    assert code == 0 and json.loads(text)["routed_accesses"] == 28_260
    assert out.read_bytes() == bundled_trace_path("gemma").read_bytes()
    code, text, _ = run(capsys, "traces", "validate", str(out))
    assert code == 0 and "valid (129 passes" in text


def test_formats_lists_every_importer(capsys):
    code, out, _ = run(capsys, "traces", "formats", "--json")
    names = [f["name"] for f in json.loads(out)]
    assert code == 0 and names == ["moesim", "bigmoeonedge", "stratamoe", "flame", "vllm", "moe-infinity",
                                   "megatron", "moecap", "activation-csv", "generic"]


def write_bad_files(folder: Path) -> dict[str, tuple[Path, list[str], str]]:
    """One bad input per kind of mistake: (path, extra CLI args, what the one-line error must say)."""
    folder.mkdir()
    cases = {}
    route = ("# route_trace v1\n# model=m.gguf arch=a n_layer=1 n_expert=4 n_expert_used=1\n"
             "# layer=0 expert_bytes=8 dense_bytes=0\nphase,step,layer,expert\n")
    (folder / "range.route.csv").write_text(route + "1,0,0,9\n")
    cases["expert out of range"] = (folder / "range.route.csv", [], "line 5: field 'expert': 9 outside 0..3")
    (folder / "neg.route.csv").write_text(route + "1,0,-2,1\n")
    cases["negative layer"] = (folder / "neg.route.csv", [], "line 5: field 'layer': -2 outside 0..0")
    (folder / "type.route.csv").write_text(route + "1,0,zero,1\n")
    cases["wrong type"] = (folder / "type.route.csv", [], "line 5: field 'layer': 'zero' is not an integer")
    (folder / "cut.route.csv").write_text(route + "1,0,0\n")
    cases["truncated row"] = (folder / "cut.route.csv", [], "line 5: field 'expert'")
    np.save(folder / "ids.npy", np.array([[[0, 0]]], dtype=np.int16))
    cases["duplicate expert"] = (folder / "ids.npy", ["--option", "n_experts=4"], "expert 0 appears twice")
    data = (folder / "ids.npy").read_bytes()
    (folder / "short.npy").write_bytes(data[:-2])
    cases["truncated npy"] = (folder / "short.npy", [], "truncated")
    (folder / "blob.xyz").write_bytes(b"\x00\x01garbage")
    cases["unknown format"] = (folder / "blob.xyz", [], "cannot tell this file's format")
    (folder / "t.json").write_text('{"version": 2, "tokens": 1, "layers": 1, "expertsPerLayer": 2, "topK": 1, "sel')
    cases["truncated json"] = (folder / "t.json", ["--format", "stratamoe"], "not valid JSON")
    good = load_bundled("switch-base-8")
    save_trace(good, folder / "good.parquet")
    (folder / "cut.parquet").write_bytes((folder / "good.parquet").read_bytes()[:1000])
    cases["truncated parquet"] = (folder / "cut.parquet", ["--format", "moesim"], "not a readable Parquet file")
    return cases


@pytest.mark.parametrize("case", ["expert out of range", "negative layer", "wrong type", "truncated row",
                                  "duplicate expert", "truncated npy", "unknown format", "truncated json",
                                  "truncated parquet"])
def test_bad_input_exits_1_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    path, extra, expected = write_bad_files(tmp_path / "in")[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run(capsys, "traces", "convert", str(path), "--out", str(out_dir / "x.parquet"), *extra)
    assert code == 1
    assert err.startswith(f"moesim: error: {path}") and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(out_dir.iterdir()) == []  # nothing written, no temporary file left
    code, _, err = run(capsys, "traces", "validate", str(path), *extra)
    assert code == 1 and expected in err


def test_unknown_format_name_and_misplaced_map(tmp_path, capsys):
    code, _, err = run(capsys, "traces", "info", "bundled:qwen", "--format", "vllm")
    assert code == 1 and "bundled traces are in the moesim format, not 'vllm'" in err
    code, _, err = run(capsys, "traces", "info", str(bundled_trace_path("qwen")), "--format", "nope")
    assert code == 1 and "unknown format 'nope'" in err
    code, _, err = run(capsys, "traces", "info", "x.csv", "--format", "vllm", "--map", "layer=l")
    assert code == 1 and "--map applies to --format generic" in err
    code, _, err = run(capsys, "traces", "info", "missing.parquet")
    assert code == 1 and "missing.parquet: no such file or folder" in err


def test_table_of_bundled_switch_is_small_and_dense():
    table = trace_to_table(load_bundled("switch-base-8"))
    assert table.num_rows == 1290 and table.column("expert").null_count == 0
