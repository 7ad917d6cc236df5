"""Fuzzing: random bytes and mutated valid files must give a valid Trace or a UserError, nothing else.

Any other exception would reach the user as "internal error" (exit 2) for what is only a broken
input file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.traces.format.io import load_trace, save_trace
from moesim.traces.format.parquet_codec import trace_to_table
from moesim.traces.format.trace import Trace

# CI runs a modest number of examples; MOESIM_FUZZ_EXAMPLES=2000 digs deeper locally.
FUZZ = settings(max_examples=int(os.environ.get("MOESIM_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

ROUTE_CSV = ("# route_trace v1\n# model=/x/toy.gguf arch=toy n_layer=2 n_expert=4 n_expert_used=2\n"
             "# layer=0 expert_bytes=100 dense_bytes=10\n# layer=1 expert_bytes=200 dense_bytes=10\n"
             "turn,phase,step,layer,slot,expert,weight,residency,expert_bytes\n"
             "0,0,0,0,0,1,0.6,0,100\n0,0,0,0,1,2,0.4,0,100\n0,0,0,1,0,3,0.7,0,200\n0,0,0,1,1,0,0.3,0,200\n"
             "0,1,1,0,0,1,0.5,1,0\n0,1,1,0,1,3,0.5,0,100\n0,1,1,1,0,3,0.9,1,0\n0,1,1,1,1,2,0.1,0,200\n")
STRATA_JSON = json.dumps({"version": 2, "tokens": 3, "layers": 2, "expertsPerLayer": 4, "topK": 1,
                          "source": {"model": {"id": "toy"}}, "selections": [[[1], [2]], [[3], [0]], [[2], [2]]]})
GENERIC_CSV = "req,position,layer,experts,weights,phase\n0,0,0,1;2,0.5;0.5,prefill\n0,0,1,3;0,0.9;0.1,prefill\n" \
              "0,1,0,2;1,0.5;0.5,decode\n0,1,1,0;3,0.6;0.4,decode\n"
GENERIC_JSONL = '{"n_experts": 4, "top_k": 2, "expert_bytes": "1 KiB"}\n' \
                '{"position": 0, "layer": 0, "experts": [1, 2], "phase": "prefill"}\n' \
                '{"position": 0, "layer": 1, "experts": [3, 0], "phase": "prefill"}\n' \
                '{"position": 1, "layer": 0, "experts": [0, 2], "phase": "decode"}\n'
MEGATRON_JSONL = ('{"step": 0, "stage": "pre_dispatch", "block": "decoder", "layer": 1, "rank": 0, "num_tokens": 2, '
                  '"topk": 2, "top_indices": [[0, 1], [2, 3]]}\n'
                  '{"step": 1, "stage": "pre_dispatch", "block": "decoder", "layer": 1, "rank": 0, "num_tokens": 1, '
                  '"topk": 2, "top_indices": [[3, 1]]}\n')
MOECAP_TOKEN_JSONL = ('{"forward_pass_id": 0, "rank": 0, "forward_mode": "prefill", "topk_ids": [[[-1, -1]], '
                      '[[0, 3]], [[2, 1]]]}\n{"forward_pass_id": 1, "rank": 0, "topk_ids": [[[-1, -1]], [[1, 2]], '
                      '[[3, 0]]]}\n')
MOECAP_PASS_JSON = ('{"records": [{"forward_pass_id": 0, "rank": 0, "expert_counts": [[1, 1, 2, 0]]}, '
                    '{"forward_pass_id": 1, "rank": 0, "expert_counts": [[0, 1, 1, 0]]}]}')
ACTIVATION_CSV = ('Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,"[0, 1]"\n1,0,b,"[2, 3]"\n'
                  '2,0,a,"[1, 2]"\n2,0,b,"[0, 3]"\n1,1,c,"[3, 0]"\n2,1,c,"[2, 1]"\n')
FLAME_CSV = "layer_id,token_id,expert_0,expert_1,expert_2\n0,0,0.1,0.0,0.5\n0,1,0.0,0.2,0.3\n"


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def seed_files() -> dict[str, tuple[str, str, bytes]]:
    """format -> (file name, format, valid content)."""
    from moesim.traces.format.trace_meta import DECODE, TraceMeta
    from moesim.traces.format.build import build_trace

    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[8, 8])
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 3), (1, 5)],
                                "cells": [(0, [[0, 1], [2, 3]], [[0.5, 0.5], [0.2, 0.8]]),
                                          (1, [[1, 2]], [[1.0, 0.0]])]}])
    trace.access_token = np.array([0, 0, 1, 1, 1, 1])
    trace.annotations["r"] = np.arange(6, dtype=np.int8)
    trace.predictions["p"] = np.arange(4, dtype=np.int16).reshape(2, 2)
    import io

    sink = io.BytesIO()
    pq.write_table(trace_to_table(trace), sink, compression="zstd")
    counts = np.zeros((2, 2, 4), dtype=np.float32)
    counts[0, 0] = [1, 1, 0, 0]
    counts[1, 1] = [0, 2, 1, 1]
    return {
        "moesim": ("t.parquet", "moesim", sink.getvalue()),
        "bigmoeonedge": ("t.route.csv", "bigmoeonedge", ROUTE_CSV.encode()),
        "stratamoe": ("t.json", "stratamoe", STRATA_JSON.encode()),
        "vllm": ("t.npy", "vllm", npy_bytes(np.array([[[0, 1], [2, 3]], [[3, 1], [0, 2]]], dtype=np.int16))),
        "moe-infinity": ("t.npy", "moe-infinity", npy_bytes(counts)),
        "generic-csv": ("t.csv", "generic", GENERIC_CSV.encode()),
        "generic-jsonl": ("t.jsonl", "generic", GENERIC_JSONL.encode()),
        "megatron": ("router_trace.jsonl", "megatron", MEGATRON_JSONL.encode()),
        "moecap-per-token": ("record.jsonl", "moecap", MOECAP_TOKEN_JSONL.encode()),
        "moecap-per-pass": ("record.json", "moecap", MOECAP_PASS_JSON.encode()),
        "activation-csv": ("activations.csv", "activation-csv", ACTIVATION_CSV.encode()),
    }


SEEDS = seed_files()
OPTIONS = {"moe-infinity": {"top_k": 2}, "vllm": {"prefill_len": 1}, "moecap": {"top_k": 2}}


def test_every_importer_has_a_fuzz_seed():
    """A new importer joins the fuzzing by adding its seed here; this fails until it does."""
    from moesim.traces.importers import importer_names

    folders = {"flame"}  # a folder layout, fuzzed by test_mutated_flame_folder
    assert set(importer_names()) <= {fmt for _, fmt, _ in SEEDS.values()} | folders


def only_user_errors(path: Path, fmt: str | None, **options) -> Trace | UserError:
    """Load `path`: either a valid Trace or a one-line UserError, nothing else; returns which."""
    try:
        trace = load_trace(path, format=fmt, **options)
    except UserError as exc:
        assert "\n" not in str(exc)
        return exc
    trace.validate()
    return trace


@st.composite
def mutations(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "token"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[pos:pos + draw(st.integers(1, 16))]
        else:
            out[pos:pos + 1] = draw(st.sampled_from([b",", b"\n", b"-1", b"99999", b"nan", b"[", b'"', b"#", b";",
                                                     b"1e308", b"\x00", b"{}", b"null"]))
    return bytes(out)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_files_are_valid(tmp_path, name):
    file, fmt, content = SEEDS[name]
    (tmp_path / file).write_bytes(content)
    load_trace(tmp_path / file, format=fmt, **OPTIONS.get(fmt, {})).validate()


@pytest.mark.parametrize("name", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_files_give_a_trace_or_a_user_error(tmp_path_factory, name, data):
    file, fmt, content = SEEDS[name]
    path = tmp_path_factory.mktemp("fuzz") / file
    path.write_bytes(data.draw(mutations(content)))
    only_user_errors(path, fmt, **OPTIONS.get(fmt, {}))
    only_user_errors(path, None)  # detection must not crash either


@FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from([".parquet", ".csv", ".json", ".jsonl", ".npy",
                                                                ".route.csv", ".tsv", ".bin"]))
def test_random_bytes_give_a_user_error(tmp_path_factory, content, suffix):
    path = tmp_path_factory.mktemp("rand") / f"t{suffix}"
    path.write_bytes(content)
    only_user_errors(path, None)


@FUZZ
@given(data=st.data())
def test_mutated_flame_folder(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("flame")
    for layer in (2, 3):
        (folder / f"Layer_{layer}").mkdir()
        text = FLAME_CSV.encode()
        if layer == 3:
            text = data.draw(mutations(text))
        (folder / f"Layer_{layer}" / f"toy_runid1_epoch1_layer{layer}.csv").write_bytes(text)
    only_user_errors(folder, "flame", seq_len=1)


INT_COLUMNS = ["pass", "phase", "request", "position", "token", "layer", "expert", "ann_r"]


@FUZZ
@given(column=st.sampled_from(INT_COLUMNS + ["weight", "pred_p"]), row=st.integers(0, 6),
       value=st.one_of(st.none(), st.integers(-3, 40)))
def test_parquet_with_a_wrong_value_gives_a_user_error(tmp_path_factory, column, row, value):
    folder = tmp_path_factory.mktemp("pq")
    (folder / "seed.parquet").write_bytes(SEEDS["moesim"][2])
    table = pq.read_table(folder / "seed.parquet")
    data = table.to_pydict()
    row = row % table.num_rows
    if column == "pred_p":
        data[column][row] = None if value is None else [value] * (1 + value % 3)
    elif column == "weight":
        data[column][row] = None if value is None else float(value) / 7
    else:
        data[column][row] = value
    try:
        mutated = pa.table(data, schema=table.schema)
    except (pa.ArrowInvalid, OverflowError):
        return  # the value does not fit the column type: not a file anyone can write
    pq.write_table(mutated, folder / "m.parquet")
    outcome = only_user_errors(folder / "m.parquet", None)
    if isinstance(outcome, Trace):  # accepted: then exactly as written (weights at float16), nothing dropped
        got = trace_to_table(outcome).select(mutated.column_names).to_pydict()
        want = mutated.to_pydict()
        want["weight"] = [None if w is None else float(np.float16(w)) for w in want["weight"]]
        got["weight"] = [None if w is None else float(np.float16(w)) for w in got["weight"]]
        assert got == want, (column, row, value)
    elif value is None:  # a missing value is refused, naming the column
        assert column in str(outcome) or column.removeprefix("ann_") in str(outcome), str(outcome)


def test_a_null_in_a_required_column_is_refused_naming_it(tmp_path):
    table = pq.read_table(pa.BufferReader(SEEDS["moesim"][2]))
    data = table.to_pydict()
    data["expert"][2] = None
    pq.write_table(pa.table(data, schema=table.schema), tmp_path / "m.parquet")
    outcome = only_user_errors(tmp_path / "m.parquet", None)
    assert isinstance(outcome, UserError) and "expert" in str(outcome)


def test_a_valid_trace_survives_the_fuzz_harness(tmp_path, rich_trace):
    save_trace(rich_trace, tmp_path / "r.parquet")
    loaded = only_user_errors(tmp_path / "r.parquet", None)
    assert isinstance(loaded, Trace), loaded
    assert trace_to_table(loaded).equals(trace_to_table(rich_trace))


def test_a_footer_claiming_negative_rows_is_a_user_error():
    """A mutated file the fuzzer found (the footer's row count became negative): once a ValueError."""
    path = Path(__file__).with_name("negative_row_count.parquet")
    outcome = only_user_errors(path, "moesim")
    assert isinstance(outcome, UserError) and "footer claims" in str(outcome), outcome


def test_a_prediction_on_a_cells_later_row_is_refused_not_dropped(tmp_path):
    """Found by the fuzz case above: pred_p set on row 1 (not its cell's first row) was read back as
    null. The format keeps predictions on a cell's first row, so the reader names the row instead."""
    (tmp_path / "seed.parquet").write_bytes(SEEDS["moesim"][2])
    table = pq.read_table(tmp_path / "seed.parquet")
    data = table.to_pydict()
    assert data["pred_p"][1] is None and data["pred_p"][0] is not None
    data["pred_p"][1] = [0]
    pq.write_table(pa.table(data, schema=table.schema), tmp_path / "m.parquet")
    with pytest.raises(UserError) as err:
        load_trace(tmp_path / "m.parquet")
    assert "pred_p" in err.value.message and "not its cell's first" in err.value.message
