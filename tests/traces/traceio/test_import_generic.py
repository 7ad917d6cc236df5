"""The generic CSV / JSONL / Parquet importer, starting with the two worked examples in the README."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moesim.cli import main
from moesim.errors import UserError
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE, PREFILL

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"
CSV_MAP = "request=req,position=tok,layer=lyr,experts=topk_ids,weights=topk_w,phase=stage"


def test_readme_example_1_csv_with_a_column_map(tmp_path, capsys):
    out = tmp_path / "router_log.parquet"
    assert main(["traces", "convert", str(EXAMPLES / "router_log.csv"), "--out", str(out), "--map", CSV_MAP,
                 "--option", "n_experts=8", "--option", "expert_bytes=3 MiB"]) == 0
    trace = load_trace(out)
    # hand-read from the file: a 3-token prefill of request 7 (layer-major), then decode steps 3 and 4
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE]
    assert np.diff(trace.pass_token_offsets).tolist() == [3, 1, 1]
    assert set(trace.token_request.tolist()) == {7} and trace.token_position.tolist() == [0, 1, 2, 3, 4]
    assert trace.expert.tolist() == [3, 1, 3, 6, 0, 3, 2, 5, 5, 7, 2, 4, 3, 1, 2, 5, 6, 3, 5, 0]
    assert trace.weight[:2].tolist() == pytest.approx([0.6, 0.4], abs=1e-3)
    assert (trace.meta.top_k, trace.meta.n_layers, trace.meta.object_bytes) == (2, 2, [3 * 2**20] * 2)
    capsys.readouterr()
    assert main(["traces", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["touched"]["total"] == {"objects": 9, "bytes": 9 * 3 * 2**20}
    assert info["routed_accesses"] == 20 and info["tokens"] == {"prefill": 3, "decode": 2, "total": 5}


def test_readme_example_2_jsonl_with_a_meta_line_and_a_batched_decode(tmp_path):
    trace = load_trace(EXAMPLES / "batched_routes.jsonl")
    assert trace.meta.model == "toy-moe" and trace.meta.object_bytes == [3 * 2**20] * 2
    assert trace.pass_phase.tolist() == [PREFILL, PREFILL, DECODE]
    assert np.diff(trace.pass_token_offsets).tolist() == [2, 1, 2]
    decode = trace.pass_cell_offsets[2]
    assert trace.cell_tokens[decode] == 2  # both requests' tokens share the decode pass's layer-0 cell
    assert trace.expert[trace.cell_offsets[decode]:trace.cell_offsets[decode + 1]].tolist() == [1, 2, 4, 5]
    assert trace.weight is None


def test_one_expert_per_row_equals_a_list_per_row(tmp_path):
    rows = pd.read_csv(EXAMPLES / "router_log.csv", comment="#")
    long = []
    for _, r in rows.iterrows():
        for e, w in zip(r["topk_ids"].split(";"), r["topk_w"].split(";")):
            long.append({"request": r["req"], "position": r["tok"], "layer": r["lyr"], "expert": int(e),
                         "weight": float(w), "phase": r["stage"]})
    pd.DataFrame(long).to_csv(tmp_path / "long.csv", index=False)
    pd.DataFrame(long).to_parquet(tmp_path / "long.parquet")
    listed = load_trace(EXAMPLES / "router_log.csv", format="generic", column_map=CSV_MAP)
    for path in (tmp_path / "long.csv", tmp_path / "long.parquet"):
        other = load_trace(path)
        for name in ("pass_phase", "pass_token_offsets", "cell_layer", "cell_offsets", "expert", "weight"):
            assert np.array_equal(getattr(listed, name), getattr(other, name)), (path.suffix, name)


def test_token_major_rows_give_the_same_cells_as_layer_major(tmp_path):
    lines = ["position,layer,experts,phase"]
    for t in range(3):
        for layer in range(2):
            lines.append(f"{t},{layer},{(t + layer) % 4} {(t + layer + 1) % 4},prefill")
    (tmp_path / "tm.csv").write_text("\n".join(lines) + "\n")
    trace = load_trace(tmp_path / "tm.csv")
    assert trace.n_passes == 1 and trace.cell_layer.tolist() == [0, 1] and trace.cell_tokens.tolist() == [3, 3]
    assert trace.expert.tolist() == [0, 1, 1, 2, 2, 3, 1, 2, 2, 3, 3, 0]


def test_two_prompts_back_to_back_are_two_prefill_passes(tmp_path):
    """Request 0's 2-token prompt, then request 1's 2-token prompt, no decode between them and no pass
    column: the change of request alone starts a new pass (each prompt is one prefill pass). Then one
    decode step each, at positions 2 and 2. Without a pass column the default rule (--pass-by prompt)
    runs passes request by request in position order, so request 0's decode step comes before
    request 1's prompt."""
    lines = ["request,position,layer,experts,phase"]
    for req, expert in ((0, 1), (1, 2)):
        for pos in range(2):
            for layer in range(2):
                lines.append(f"{req},{pos},{layer},{expert} {expert + 1},prefill")
    lines += ["0,2,0,0 3,decode", "0,2,1,0 3,decode", "1,2,0,3 0,decode", "1,2,1,3 0,decode"]
    (tmp_path / "two.csv").write_text("\n".join(lines) + "\n")
    trace = load_trace(tmp_path / "two.csv", n_experts=4)
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, PREFILL, DECODE]
    assert np.diff(trace.pass_token_offsets).tolist() == [2, 1, 2, 1]
    assert trace.token_request.tolist() == [0, 0, 0, 1, 1, 1]
    assert trace.token_position.tolist() == [0, 1, 2, 0, 1, 2]
    assert trace.cell_tokens.tolist() == [2, 2, 1, 1, 2, 2, 1, 1]
    assert trace.expert.tolist()[:8] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert trace.expert.tolist()[8:12] == [0, 3, 0, 3]
    assert trace.expert.tolist()[12:20] == [2, 3, 2, 3, 2, 3, 2, 3]


def test_a_batched_pass_keeps_two_requests_at_the_same_position_apart(tmp_path):
    """A pass column groups a batched decode step: requests 0 and 1 both at position 3 are two tokens
    of one pass (one cell per layer with 2 tokens), not one token routed to 4 experts."""
    lines = ["pass,request,position,layer,experts,phase"]
    for layer in range(2):
        lines += [f"0,0,3,{layer},0 1,decode", f"0,1,3,{layer},2 3,decode"]
    (tmp_path / "batch.csv").write_text("\n".join(lines) + "\n")
    trace = load_trace(tmp_path / "batch.csv", n_experts=4)
    assert trace.n_passes == 1 and trace.meta.top_k == 2
    assert trace.token_request.tolist() == [0, 1] and trace.token_position.tolist() == [3, 3]
    assert trace.cell_tokens.tolist() == [2, 2]
    assert trace.expert.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]

def test_decode_steps_of_one_request_are_one_pass_each(tmp_path):
    """Without a pass column, a decode row at a new position starts a new pass: three steps, three passes."""
    lines = ["request,position,layer,experts,phase"] + [f"0,{pos},0,{pos % 4},decode" for pos in (5, 6, 7)]
    (tmp_path / "steps.csv").write_text("\n".join(lines) + "\n")
    trace = load_trace(tmp_path / "steps.csv", n_experts=4)
    assert trace.n_passes == 3 and trace.pass_phase.tolist() == [DECODE] * 3
    assert trace.token_position.tolist() == [5, 6, 7] and trace.expert.tolist() == [1, 2, 3]

def test_variable_experts_per_token_keep_their_tokens(tmp_path):
    (tmp_path / "v.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"position": 0, "layer": 0, "experts": [1]},
        {"position": 0, "layer": 1, "experts": [2, 3, 0]},
    ]) + "\n")
    trace = load_trace(tmp_path / "v.jsonl", n_experts=4)
    assert trace.meta.top_k is None and trace.n_passes == 1 and trace.cell_tokens.tolist() == [1, 1]


@pytest.mark.parametrize("lines,options,message", [
    (['{"n_experts": 4}', '{"position": 0, "layer": 0, "experts": [4]}'], {},
     r"line 2: field 'expert': 4 outside 0..3"),
    (['{"position": 0, "layer": -1, "experts": [1]}'], {}, r"line 1: field 'layer': -1 outside"),
    (['{"position": 0, "layer": 0, "experts": [1, 1]}'], {}, r"line 1: field 'expert': 1 appears twice"),
    (['{"top_k": 2}', '{"position": 0, "layer": 0, "experts": [1]}'], {},
     r"line 2: .*routes to 1 experts; top-k is 2"),
    (['{"position": 0, "layer": 0, "experts": "one"}'], {}, r"line 1: field 'experts': 'one' is not a number"),
    (['{"position": 0, "layer": 0, "experts": [1], "phase": "warmup"}'], {}, r"line 1: field 'phase': 'warmup'"),
    (['{"position": 0, "layer": 0, "experts": [1]}', '{"position": 1, "layer": 0'], {}, r"line 2: not valid JSON"),
    (['{"n_experts": 4}', '{"position": 0, "layer": 0, "experts": [1]}'], {"n_experts": 5},
     r"--option n_experts=5 disagrees with the meta line's 4"),
    (['{"position": 0, "layer": 0, "experts": [1], "weights": [0.5, 0.5]}'], {}, r"line 1: 2 weights for 1 experts"),
    (['{"pos": 0, "layer": 0, "ids": [1]}'], {"column_map": "experts=ids,nope=x"}, r"unknown field 'nope'"),
    (['{"pos": 0, "layer": 0, "ids": [1]}'], {"column_map": "experts=idz"}, r"no column 'idz'"),
    (['{"position": 0, "experts": [1]}'], {}, r"no column for field 'layer'"),
])
def test_generic_errors_name_the_line_and_field(tmp_path, lines, options, message):
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message):
        load_trace(tmp_path / "bad.jsonl", format="generic", **options)


def test_csv_errors_count_preamble_lines(tmp_path):
    (tmp_path / "bad.csv").write_text("# logger v3\n# more\nposition,layer,expert\n0,0,1\n0,0,x\n")
    with pytest.raises(UserError, match=r"bad.csv: line 5: field 'experts': 'x' is not a number"):
        load_trace(tmp_path / "bad.csv")


def test_annotation_columns_and_a_pass_column(tmp_path):
    (tmp_path / "a.csv").write_text("step_id,request,position,layer,expert,hit\n"
                                    "0,0,5,0,1,1\n0,1,9,0,2,0\n1,0,6,0,1,1\n")
    trace = load_trace(tmp_path / "a.csv", format="generic", column_map="pass=step_id,ann_hit=hit")
    assert trace.n_passes == 2 and np.diff(trace.pass_token_offsets).tolist() == [2, 1]
    assert trace.annotations["hit"].tolist() == [1, 0, 1]
