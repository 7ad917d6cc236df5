"""Router logs of every layout import right or are refused (issue 15): passes, tokens, requests,
phases and layers against hand-counted values; the doctor's warnings and the refusals by their text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moesim.cli import main
from moesim.errors import UserError
from moesim.traces.importers.doctor import diagnose
from moesim.traces.format.io import load_trace
from moesim.traces.format.trace_meta import DECODE, PREFILL

from .router_log_files import (LAYER_MAJOR_EXPERTS, activation_csv, batched_experts, batched_layer_files,
                               layer_major_jsonl, megatron_jsonl, moecap_per_pass, moecap_per_token)

LAYER_MAJOR_MAP = "request=problem_id,position=token_idx,weights=gating_probs"


def tokens_per_pass(trace) -> list[int]:
    return np.diff(trace.pass_token_offsets).tolist()


def cell_experts(trace, p: int, layer: int) -> list[int]:
    for c in range(trace.pass_cell_offsets[p], trace.pass_cell_offsets[p + 1]):
        if trace.cell_layer[c] == layer:
            return trace.expert[trace.cell_offsets[c]:trace.cell_offsets[c + 1]].tolist()
    return []


# ---- layer-major rows ------------------------------------------------------------------------------------


def test_layer_major_log_with_a_prompt_length_gives_one_prefill_and_decode_steps(tmp_path):
    path = layer_major_jsonl(tmp_path)
    trace = load_trace(path, format="generic", column_map=LAYER_MAJOR_MAP, prompt_len=3, n_experts=8,
                       expert_bytes="1 MiB")
    # hand count: tokens 0..2 are one prefill pass, tokens 3 and 4 one decode pass each
    assert tokens_per_pass(trace) == [3, 1, 1]
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE]
    assert np.diff(trace.pass_cell_offsets).tolist() == [2, 2, 2]  # every pass runs both layers
    assert trace.token_position.tolist() == [0, 1, 2, 3, 4] and set(trace.token_request.tolist()) == {0}
    assert trace.meta.provenance["request_ids"] == {"p-17": 0}
    e = LAYER_MAJOR_EXPERTS
    assert cell_experts(trace, 0, 0) == e[0][0] + e[0][1] + e[0][2]
    assert cell_experts(trace, 1, 1) == e[1][3] and cell_experts(trace, 2, 0) == e[0][4]
    assert diagnose(trace) == []


def test_layer_major_log_without_phase_is_one_pass_per_token_never_one_access_per_pass(tmp_path):
    path = layer_major_jsonl(tmp_path)
    trace = load_trace(path, format="generic", column_map=LAYER_MAJOR_MAP)
    assert tokens_per_pass(trace) == [1] * 5  # not 10 one-layer passes, as row order would give
    assert np.diff(trace.pass_cell_offsets).tolist() == [2] * 5
    assert trace.pass_phase.tolist() == [DECODE] * 5
    assert [f.code for f in diagnose(trace)] == ["placeholder-sizes", "phase-fit"]  # the prompt is not grouped
    same = load_trace(path, format="generic", column_map=LAYER_MAJOR_MAP, pass_by="token")
    for name in ("pass_phase", "pass_token_offsets", "pass_cell_offsets", "cell_layer", "expert", "token_position"):
        assert np.array_equal(getattr(same, name), getattr(trace, name)), name


def test_the_order_of_the_rows_does_not_change_the_trace(tmp_path):
    path = layer_major_jsonl(tmp_path)
    lines = path.read_text().splitlines()
    rng = np.random.default_rng(7)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines[i] for i in rng.permutation(len(lines))) + "\n")
    a = load_trace(path, format="generic", column_map=LAYER_MAJOR_MAP, prompt_len=3)
    b = load_trace(shuffled, format="generic", column_map=LAYER_MAJOR_MAP, prompt_len=3)
    assert tokens_per_pass(a) == tokens_per_pass(b) and a.pass_phase.tolist() == b.pass_phase.tolist()
    for p in range(a.n_passes):
        for layer in (0, 1):  # the same experts per token (a prompt's token order follows the rows)
            assert sorted(cell_experts(a, p, layer)) == sorted(cell_experts(b, p, layer))


def test_row_order_splitting_is_caught_by_the_doctor(tmp_path):
    # a step column that changes on every row of a layer-major log: the old one-access-per-pass failure
    rows = ["seq,position,layer,experts"]
    for layer in (0, 1):
        for t in range(4):
            rows.append(f"{layer * 4 + t},{t},{layer},{(t + layer) % 4}")
    (tmp_path / "split.csv").write_text("\n".join(rows) + "\n")
    trace = load_trace(tmp_path / "split.csv", format="generic", pass_by="column:seq")
    assert trace.n_passes == 8
    codes = [f.code for f in diagnose(trace)]
    assert "one-layer-passes" in codes
    message = next(f.message for f in diagnose(trace) if f.code == "one-layer-passes")
    assert "8 of 8 passes hold a single layer's routing" in message and "--pass-by token" in message


# ---- batched, one file per layer -------------------------------------------------------------------------


def batched_cli(logs, *extra):
    return [str(logs / "moe_layer*.jsonl"), "--layer-from-filename", "moe_layer{layer}", "--pass-by", "reset:token",
            "--map", "request=req_id", *extra]


def test_batched_per_layer_files_with_restarting_index_string_ids_and_a_warmup(tmp_path, capsys):
    logs = batched_layer_files(tmp_path)
    out = tmp_path / "batched.parquet"
    assert main(["traces", "convert", *batched_cli(logs, "--skip", "passes:1"), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    trace = load_trace(out)
    # hand count (router_log_files.BATCHES): a 5-token prefill, then decode batches of 2, 2 and 1
    assert tokens_per_pass(trace) == [5, 2, 2, 1]
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE, DECODE]
    assert trace.meta.provenance["request_ids"] == {"r1": 0, "r2": 1}  # the skipped warm-up's "dummy" is gone
    assert trace.token_request.tolist() == [0, 0, 0, 1, 1, 0, 1, 0, 1, 0]
    assert trace.token_position.tolist() == [0, 1, 2, 0, 1, 3, 2, 4, 3, 5]
    assert (trace.meta.n_layers, trace.meta.layer_ids, trace.meta.model, trace.meta.top_k) == (2, [0, 8], "toy-moe", 2)
    assert trace.meta.object_bytes == [2**20, 2**20] and trace.meta.n_experts == 8
    assert np.diff(trace.pass_cell_offsets).tolist() == [2, 2, 2, 2]
    # batch b of the file is pass b-1 after the skipped warm-up; slot order is kept inside a cell
    assert cell_experts(trace, 1, 1) == batched_experts(8, 2, 0) + batched_experts(8, 2, 1)
    assert diagnose(trace) == []


def test_the_warmup_pass_is_named_with_the_option_that_skips_it(tmp_path, capsys):
    logs = batched_layer_files(tmp_path)
    assert main(["traces", "validate", *batched_cli(logs)]) == 0
    out = capsys.readouterr().out
    assert "valid (5 passes" in out
    assert ("warm-up: the first pass holds 12 tokens, 2.4x any other pass, and its requests never run again: "
            "a warm-up or profiling pass? pass --skip passes:1") in out


def test_per_layer_files_that_disagree_name_the_file_and_line(tmp_path):
    # layer 8 misses r2 in decode step 1; in layer 0's file that row is line 8 (meta line, 5 prefill rows, r1)
    logs = batched_layer_files(tmp_path, warmup=False, drop_slot=(8, 1, 1))
    with pytest.raises(UserError, match=r"moe_layer0.jsonl: line 8: request r2 position 2 in pass 1 has no row in "
                                        r"moe_layer8.jsonl"):
        load_trace(logs / "moe_layer*.jsonl", format="generic", column_map="request=req_id", pass_by="reset:token",
                   layer_from_filename="moe_layer{layer}")


def test_a_batch_index_taken_for_the_position_is_caught(tmp_path):
    logs = batched_layer_files(tmp_path, warmup=False)
    trace = load_trace(logs, format="generic", column_map="request=req_id,position=token",
                       layer_from_filename="moe_layer{layer}", pass_by="reset:token")
    found = {f.code: f.message for f in diagnose(trace)}
    assert "repeated-positions" in found and "leave position out of --map" in found["repeated-positions"]


def test_the_meta_line_can_name_the_layer_of_its_file(tmp_path):
    for layer in (3, 5):
        lines = [json.dumps({"layer_id": layer, "n_routed_experts": 4, "num_experts_per_tok": 1})]
        lines += [json.dumps({"request_id": "a", "position": p, "experts": [(p + layer) % 4]}) for p in range(3)]
        (tmp_path / f"layer_{layer}.jsonl").write_text("\n".join(lines) + "\n")
    trace = load_trace(tmp_path, format="generic", prompt_len=2)
    assert (trace.meta.n_layers, trace.meta.layer_ids, trace.meta.top_k) == (2, [3, 5], 1)
    assert tokens_per_pass(trace) == [2, 1] and trace.pass_phase.tolist() == [PREFILL, DECODE]


def test_one_file_per_request(tmp_path):
    for name, prompt in (("req_a", 2), ("req_b", 3)):
        rows = ["position,layer,experts,phase"]
        for p in range(prompt + 1):
            for layer in (0, 1):
                phase = "prefill" if p < prompt else "decode"
                rows.append(f"{p},{layer},{(p + layer) % 4};{(p + layer + 1) % 4},{phase}")
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    trace = load_trace(tmp_path / "req_*.csv", format="generic")
    assert tokens_per_pass(trace) == [2, 1, 3, 1]
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, PREFILL, DECODE]
    assert trace.meta.provenance["request_ids"] == {"req_a.csv": 0, "req_b.csv": 1}
    named = load_trace(tmp_path / "req_*.csv", format="generic", request_from_filename="req_{request}")
    assert named.meta.provenance["request_ids"] == {"a": 0, "b": 1}


# ---- sparse layers, placeholders, filters ----------------------------------------------------------------


def one_layer_file(tmp_path):
    rows = ["request,position,layer,experts"] + [f"0,{p},12,{p % 8};{(p + 3) % 8}" for p in range(6)]
    (tmp_path / "layer12.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "layer12.csv"


def test_a_file_of_one_layer_keeps_that_layer_only_and_percent_capacity_counts_it(tmp_path):
    from moesim.sim.capacity import parse_capacity

    path = one_layer_file(tmp_path)
    trace = load_trace(path, format="generic", expert_bytes="1 MiB", prompt_len=3)
    assert (trace.meta.n_layers, trace.meta.layer_ids) == (1, [12])
    assert parse_capacity("25%", trace).bytes == 2 * 2**20  # 25 % of 8 experts x 1 MiB of the one layer
    padded = load_trace(path, format="generic", expert_bytes="1 MiB", n_layers=16, prompt_len=3)
    assert padded.meta.n_layers == 16 and parse_capacity("25%", padded).bytes == 2 * 2**20
    found = {f.code: f.message for f in diagnose(padded)}
    assert found["empty-layers"].startswith("15 of 16 layers hold no routing (layers [0, 1, 2, 3, 4, 5, 6, 7] and "
                                            "7 more): drop --option n_layers")


def test_placeholder_sizes_refuse_byte_capacities_and_timed_runs_but_not_slots(tmp_path, capsys):
    path = one_layer_file(tmp_path)
    base = ["--trace", str(path), "--option", "prompt_len=3"]
    assert main(["replay", *base, "--capacity", "25%"]) == 1
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # the doctor's warnings come first, the error is the last line
    assert last.startswith("moesim: error: --capacity: the capacity '25%' (bytes or %) needs object sizes")
    assert "--option expert_bytes=SIZE" in last
    assert main(["replay", *base, "--capacity", "4slots", "--profile", "h100-pcie"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("moesim: error: --profile: a timed run (--profile) needs object sizes")
    assert main(["replay", *base, "--capacity", "4slots", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["runs"][0]["config"]["capacity_bytes"] == 4
    assert "moesim: warning: object sizes are 1-byte placeholders" in captured.err
    assert main(["replay", *base, "--option", "expert_bytes=1 MiB", "--capacity", "25%", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["config"]["capacity_bytes"] == 2 * 2**20


def test_filters_where_drop_range_and_skip_rows(tmp_path):
    rows = ["req,position,layer,experts,kind,t"]
    for p in range(6):
        rows.append(f"a,{p},0,{p % 4},{'dummy' if p == 0 else 'real'},{p * 10}")
    (tmp_path / "f.csv").write_text("\n".join(rows) + "\n")

    def positions(**options):
        trace = load_trace(tmp_path / "f.csv", format="generic", column_map="request=req", **options)
        return trace.token_position.tolist()

    assert positions(where="kind=real") == [1, 2, 3, 4, 5]
    assert positions(drop=["kind=dummy", "position=5"]) == [1, 2, 3, 4]
    assert positions(range="t=10:30") == [1, 2, 3]
    assert positions(range="t=:20", skip_rows=1) == [1, 2]
    with pytest.raises(UserError, match=r"--where: no column 'nope'"):
        positions(where="nope=1")
    with pytest.raises(UserError, match=r"no routing rows left after"):
        positions(where="kind=none")


def test_uuid_request_ids_are_numbered_and_kept(tmp_path):
    ids = ["3f2b8a4e-1c2d-4e5f-9a8b-7c6d5e4f3a2b", "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"]
    rows = ["request_id,position,layer,experts,phase"]
    for r in ids:
        rows += [f"{r},0,0,1,prefill", f"{r},1,0,2,prefill", f"{r},2,0,3,decode"]
    (tmp_path / "u.csv").write_text("\n".join(rows) + "\n")
    trace = load_trace(tmp_path / "u.csv")
    assert trace.meta.provenance["request_ids"] == {ids[0]: 0, ids[1]: 1}
    assert tokens_per_pass(trace) == [2, 1, 2, 1] and trace.token_request.tolist() == [0, 0, 0, 1, 1, 1]


# ---- Megatron-Core, MoE-CAP, activation CSV ---------------------------------------------------------------


def test_megatron_router_trace(tmp_path):
    trace = load_trace(megatron_jsonl(tmp_path))
    assert trace.meta.provenance["format"] == "megatron"
    # hand count: step 0 = 3 tokens (prefill), step 1 = 1 token; mtp, post_dispatch and rank-1 records left out
    assert tokens_per_pass(trace) == [3, 1] and trace.pass_phase.tolist() == [PREFILL, DECODE]
    assert (trace.meta.n_layers, trace.meta.layer_ids, trace.meta.top_k) == (2, [1, 2], 2)
    assert cell_experts(trace, 0, 0) == [0, 1, 2, 3, 1, 2] and cell_experts(trace, 1, 1) == [0, 2]
    assert trace.token_position.tolist() == [0, 1, 2, 3]
    later = load_trace(megatron_jsonl(tmp_path), stage="post_dispatch")
    assert tokens_per_pass(later) == [3] and later.meta.layer_ids == [1]  # only layer 1 was logged there


def test_moecap_per_token(tmp_path):
    trace = load_trace(moecap_per_token(tmp_path))
    assert trace.meta.provenance["format"] == "moecap" and "lossy" not in trace.meta.extra
    assert tokens_per_pass(trace) == [2, 1] and trace.pass_phase.tolist() == [PREFILL, DECODE]
    assert (trace.meta.n_layers, trace.meta.layer_ids) == (2, [1, 2])  # dense layer 0 left out
    assert cell_experts(trace, 0, 0) == [0, 3, 1, 2] and cell_experts(trace, 1, 1) == [1, 0]  # rank 0 only


def test_moecap_per_pass_counts_are_dealt_and_marked_lossy(tmp_path):
    with pytest.raises(UserError, match=r"per_pass records keep counts only: give --option top_k=K"):
        load_trace(moecap_per_pass(tmp_path))
    trace = load_trace(moecap_per_pass(tmp_path), top_k=2)
    assert "counts" in trace.meta.extra["lossy"]
    assert tokens_per_pass(trace) == [3, 1] and trace.pass_phase.tolist() == [PREFILL, DECODE]
    assert trace.meta.n_layers == 1 and trace.meta.layer_ids is None
    got = np.bincount(trace.expert[: trace.cell_offsets[1]], minlength=4).tolist()
    assert got == [2, 1, 3, 0] and sorted(cell_experts(trace, 1, 0)) == [1, 3]


def test_activation_csv_dump(tmp_path):
    trace = load_trace(activation_csv(tmp_path), model="deepseek-v2-lite", n_experts=64)
    assert trace.meta.provenance["format"] == "activation-csv"
    assert tokens_per_pass(trace) == [3, 1, 1] and trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE]
    assert (trace.meta.n_layers, trace.meta.layer_ids, trace.meta.top_k) == (2, [1, 2], 3)
    assert trace.token_position.tolist() == [0, 1, 2, 3, 4]
    assert cell_experts(trace, 0, 0) == [1, 2, 8, 3, 4, 10, 5, 6, 12]
    assert "object_bytes_unknown" not in trace.meta.extra  # the catalog entry gives the size
    separate = load_trace(activation_csv(tmp_path), batch_is="request")
    assert separate.token_request.tolist() == [0, 0, 0, 1, 2]
    assert separate.pass_phase.tolist() == [PREFILL, DECODE, DECODE]


# ---- every command takes the trace-input flags ------------------------------------------------------------


@pytest.mark.parametrize("command", [["traces", "stats"], ["traces", "info"], ["traces", "validate"]])
def test_trace_commands_take_map_and_option(tmp_path, capsys, command):
    path = layer_major_jsonl(tmp_path)
    assert main([*command, str(path), "--map", LAYER_MAJOR_MAP, "--option", "prompt_len=3", "--json"]) == 0
    capsys.readouterr()


def test_compare_takes_format_map_and_option_and_errors_have_one_prefix(tmp_path, capsys):
    path = layer_major_jsonl(tmp_path)
    assert main(["compare", "--trace", str(path), "--format", "generic", "--map", LAYER_MAJOR_MAP, "--option",
                 "prompt_len=3", "--option", "expert_bytes=1 MiB", "--capacity", "25%", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trace"]["passes"] == 3
    assert main(["replay", "--trace", str(path), "--capacity", "1%", "--no-such-flag"]) == 1
    assert "moesim: error: moesim:" not in capsys.readouterr().err


def test_convert_refuses_an_out_name_that_is_not_parquet(tmp_path, capsys):
    path = layer_major_jsonl(tmp_path)
    assert main(["traces", "convert", str(path), "--out", str(tmp_path / "x.csv")]) == 1
    assert "--out: moesim writes traces as Parquet; name the file .parquet, not 'x.csv'" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


# ---- the README walk-throughs ("Importing router logs"), on the files they name ------------------------------

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples" / "router_logs"


def test_readme_walkthrough_layer_major(tmp_path, capsys):
    log = EXAMPLES / "layer_major.jsonl"
    flags = ["--map", "request=problem_id,position=token_idx,weights=gating_probs"]
    assert main(["traces", "validate", str(log), *flags]) == 0
    out = capsys.readouterr().out
    assert "valid (12 passes, 24 cells, 48 routed accesses); the trace doctor warns (2)" in out
    assert "phase-fit: all 12 passes hold one token and none is prefill" in out
    assert main(["traces", "convert", str(log), "--out", str(tmp_path / "lm.parquet"), *flags,
                 "--option", "prompt_len=3", "--option", "expert_bytes=4 MiB"]) == 0
    trace = load_trace(tmp_path / "lm.parquet")
    # hand count: two problems, each one 3-token prefill then three decode tokens
    assert tokens_per_pass(trace) == [3, 1, 1, 1, 3, 1, 1, 1]
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE, DECODE] * 2
    assert trace.meta.provenance["request_ids"] == {"gsm8k-0017": 0, "gsm8k-0042": 1}
    assert diagnose(trace) == []


def test_readme_walkthrough_batched_per_layer_files(tmp_path, capsys):
    pattern = str(EXAMPLES / "batched" / "moe_layer*.jsonl")
    flags = ["--layer-from-filename", "moe_layer{layer}", "--map", "request=req_id"]
    assert main(["traces", "info", pattern, *flags]) == 1
    assert "pass --pass-by reset:COLUMN" in capsys.readouterr().err
    assert main(["traces", "validate", pattern, *flags, "--pass-by", "reset:token"]) == 0
    assert "warm-up: the first pass holds 16 tokens" in capsys.readouterr().out
    assert main(["traces", "convert", pattern, *flags, "--pass-by", "reset:token", "--skip", "passes:1",
                 "--out", str(tmp_path / "b.parquet")]) == 0
    trace = load_trace(tmp_path / "b.parquet")
    # hand count from the files: batches of 7 (r1 x3, r2 x4: prefill), 2, 2, 5 (r1, r2, r3's 3-token
    # prompt: prefill), 3, 2 and 1 tokens after the 16-token warm-up
    assert tokens_per_pass(trace) == [7, 2, 2, 5, 3, 2, 1]
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE, PREFILL, DECODE, DECODE, DECODE]
    assert trace.meta.provenance["request_ids"] == {"r1": 0, "r2": 1, "r3": 2}
    assert (trace.meta.layer_ids, trace.meta.object_bytes) == ([0, 8], [4 * 2**20] * 2)
    assert diagnose(trace) == []


def test_a_step_column_names_the_pass_and_a_time_range_keeps_rows(tmp_path):
    (tmp_path / "s.csv").write_text(
        "request,step,layer,experts,ts\n"
        "a,0,0,1;2,2026-05-01T10:00:00\na,0,0,2;3,2026-05-01T10:00:00\n"
        "a,1,0,3;0,2026-05-01T10:00:05\na,2,0,0;1,2026-05-01T10:00:09\n")
    trace = load_trace(tmp_path / "s.csv", pass_by="column:step")
    # step names the pass, so it is not taken for the position: positions are counted 0..3
    assert tokens_per_pass(trace) == [2, 1, 1] and trace.token_position.tolist() == [0, 1, 2, 3]
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE]
    kept = load_trace(tmp_path / "s.csv", pass_by="column:step", range="ts=2026-05-01T10:00:00..2026-05-01T10:00:06")
    assert tokens_per_pass(kept) == [2, 1]
    with pytest.raises(UserError, match=r"--range: expected COLUMN=LO:HI or COLUMN=LO..HI"):
        load_trace(tmp_path / "s.csv", range="ts=10:00:00")


def test_whatif_takes_the_trace_input_flags(tmp_path, capsys):
    path = layer_major_jsonl(tmp_path)
    assert main(["whatif", "--trace", str(path), "--map", LAYER_MAJOR_MAP, "--option", "prompt_len=3",
                 "--option", "expert_bytes=1 MiB", "--vary", "capacity=25%,50%", "--policies", "lru",
                 "--out", str(tmp_path / "wi"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == 4  # lru and the belady bound at two capacities


def test_files_whose_layer_column_holds_one_layer_each_are_per_layer_files(tmp_path):
    for layer in (0, 4):
        rows = ["req,slot,layer,experts"] + [f"{r},{s},{layer},{(s + layer) % 4};{(s + layer + 1) % 4}"
                                              for r, s in (("a", 0), ("a", 1), ("a", 0), ("b", 1), ("a", 0))]
        (tmp_path / f"l{layer}.csv").write_text("\n".join(rows) + "\n")
    trace = load_trace(tmp_path, format="generic", column_map="request=req", pass_by="reset:slot")
    # passes: [a, a] (a's 2-token prompt), [a, b] (b joins with one token), [a]
    assert tokens_per_pass(trace) == [2, 2, 1] and trace.meta.layer_ids == [0, 4]
    assert trace.token_request.tolist() == [0, 0, 0, 1, 0] and trace.token_position.tolist() == [0, 1, 2, 0, 3]
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, DECODE]
