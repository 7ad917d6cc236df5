"""Fuzzing: random bytes and mutated valid files must give a valid Trace or a UserError, nothing else.

Any other exception would reach the user as "internal error" (exit 2) for what is only a broken
input file.
"""

from __future__ import annotations

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
from moesim.traces import importers
from moesim.traces.format.trace import Trace
from moesim.traces.importers import Example, importer, importer_names

# CI runs a modest number of examples; MOESIM_FUZZ_EXAMPLES=2000 digs deeper locally.
FUZZ = settings(max_examples=int(os.environ.get("MOESIM_FUZZ_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

def native_seed() -> Example:
    """moesim's own Parquet format (not an importer), with every optional column."""
    from moesim.traces.format.build import build_trace
    from moesim.traces.format.trace_meta import DECODE, TraceMeta

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
    return Example.file("parquet", "t.parquet", sink.getvalue())


def seeds(names: list[str]) -> dict[str, tuple[str, Example]]:
    """"format:label" -> (format, example) for every example the importers `names` declare."""
    found: dict[str, tuple[str, Example]] = {}
    for name in names:
        for example in getattr(importer(name), "examples", lambda: [])():
            found[f"{name}:{example.label}"] = (name, example)
    return found


SEEDS = {"moesim:parquet": ("moesim", native_seed()), **seeds(importer_names())}
PARQUET_SEED = SEEDS["moesim:parquet"][1].files["t.parquet"]


def write_example(folder: Path, example: Example, content: bytes | None = None) -> Path:
    """The example's files in `folder` (the mutated file's bytes replaced by `content`); the path to load."""
    for rel, data in example.files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content if content is not None and rel == example.mutated else data)
    return folder / example.load if example.load else folder


def test_every_importer_has_a_fuzz_seed():
    """Each registered importer declares examples() (moesim/traces/importers/__init__.py), so it is fuzzed."""
    missing = [name for name in importer_names() if not any(f == name for f, _ in SEEDS.values())]
    assert missing == []


def test_a_new_importer_is_fuzzed_without_editing_this_file(monkeypatch):
    """Registering a module (one line in IMPORTER_MODULES) is all it takes for its examples to be seeds."""
    import sys
    import types

    toy = types.ModuleType("toy_importer_for_fuzz")
    toy.examples = lambda: [Example.file("csv", "t.csv", "layer,experts\n0,1\n")]
    monkeypatch.setitem(sys.modules, toy.__name__, toy)
    monkeypatch.setitem(importers.IMPORTER_MODULES, "toy", toy.__name__)
    assert seeds(importer_names())["toy:csv"] == ("toy", toy.examples()[0])


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
    fmt, example = SEEDS[name]
    load_trace(write_example(tmp_path, example), format=fmt, **example.options).validate()


@pytest.mark.parametrize("name", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_files_give_a_trace_or_a_user_error(tmp_path_factory, name, data):
    fmt, example = SEEDS[name]
    content = data.draw(mutations(example.files[example.mutated]))
    path = write_example(tmp_path_factory.mktemp("fuzz"), example, content)
    only_user_errors(path, fmt, **example.options)
    only_user_errors(path, None)  # detection must not crash either


@FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from([".parquet", ".csv", ".json", ".jsonl", ".npy",
                                                                ".route.csv", ".tsv", ".bin"]))
def test_random_bytes_give_a_user_error(tmp_path_factory, content, suffix):
    path = tmp_path_factory.mktemp("rand") / f"t{suffix}"
    path.write_bytes(content)
    only_user_errors(path, None)


INT_COLUMNS = ["pass", "phase", "request", "position", "token", "layer", "expert", "ann_r"]


@FUZZ
@given(column=st.sampled_from(INT_COLUMNS + ["weight", "pred_p"]), row=st.integers(0, 6),
       value=st.one_of(st.none(), st.integers(-3, 40)))
def test_parquet_with_a_wrong_value_gives_a_user_error(tmp_path_factory, column, row, value):
    folder = tmp_path_factory.mktemp("pq")
    (folder / "seed.parquet").write_bytes(PARQUET_SEED)
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
    table = pq.read_table(pa.BufferReader(PARQUET_SEED))
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
    (tmp_path / "seed.parquet").write_bytes(PARQUET_SEED)
    table = pq.read_table(tmp_path / "seed.parquet")
    data = table.to_pydict()
    assert data["pred_p"][1] is None and data["pred_p"][0] is not None
    data["pred_p"][1] = [0]
    pq.write_table(pa.table(data, schema=table.schema), tmp_path / "m.parquet")
    with pytest.raises(UserError) as err:
        load_trace(tmp_path / "m.parquet")
    assert "pred_p" in err.value.message and "not its cell's first" in err.value.message


def test_a_header_broken_across_lines_gives_a_one_line_error(tmp_path):
    """Found by the fuzzer: a quote opened in the header makes one column name hold the newlines of
    the rows after it; the error that lists the columns must still be one line (moesim/errors.py)."""
    path = tmp_path / "activations.csv"
    path.write_text('"Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,"[0, 1]"\n')
    outcome = only_user_errors(path, "activation-csv")
    assert isinstance(outcome, UserError) and "no column" in str(outcome), outcome


def test_an_infinite_token_count_is_a_user_error(tmp_path):
    """Found by the fuzzer: "num_tokens": 1e3081 parses as inf, which int() cannot convert."""
    path = tmp_path / "t.jsonl"
    path.write_text('{"step": 0, "stage": "pre_dispatch", "block": "decoder", "layer": 1, "rank": 0, '
                    '"num_tokens": 1e3081, "topk": 2, "top_indices": [[3, 1]]}\n')
    outcome = only_user_errors(path, "megatron")
    assert isinstance(outcome, UserError) and "num_tokens" in str(outcome), outcome
