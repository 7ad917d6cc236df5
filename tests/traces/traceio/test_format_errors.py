"""A broken moesim Parquet file is a one-line UserError naming the file, the row and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moesim.errors import UserError
from moesim.traces.format.io import load_trace, save_trace
from moesim.traces.format.parquet_codec import METADATA_KEY, trace_to_table
from moesim.traces.format.trace_meta import PREFILL, TraceMeta
from moesim.traces.format.build import build_trace


def small_trace():
    """Prefill of 2 tokens, top-2, 2 layers, 4 experts, weights: 8 rows, one per access."""
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[4, 4])
    return build_trace(meta, [{"phase": PREFILL, "cells": [
        (0, [[0, 1], [2, 3]], [[0.5, 0.5], [0.5, 0.5]]),
        (1, [[1, 2], [3, 0]], [[0.5, 0.5], [0.5, 0.5]]),
    ]}])


def write_mutated(path: Path, mutate, schema_change=None) -> Path:
    table = trace_to_table(small_trace())
    data = table.to_pydict()
    mutate(data)
    schema = table.schema if schema_change is None else schema_change(table.schema)
    pq.write_table(pa.table(data, schema=schema), path)
    return path


def set_cell(column: str, row: int, value):
    def mutate(data):
        data[column][row] = value
    return mutate


@pytest.mark.parametrize("column,row,value,message", [
    ("expert", 5, 9, r"row 5: field 'expert': 9 outside 0..3"),
    ("layer", 6, -1, r"row 6: field 'layer': -1 outside 0..1"),
    ("pass", 3, 2, r"row 3: field 'pass': 2 follows 0"),
    ("phase", 7, 1, r"row 7: field 'phase': 1 differs from the rest of pass 0"),
    ("expert", 1, 0, r"row 1: field 'expert': 0 appears twice for token 0 at layer 0"),
    ("request", 3, 9, r"row 3: token 1 of pass 0 has request/position \(9, 1\)"),
    ("weight", 2, None, r"row 2: field 'weight' is null here but set on other rows"),
    ("layer", 0, None, r"row 0: field 'layer' is null on a row that names an expert"),
    ("token", 2, 0, r"row 2: token 0 of pass 0 has request/position \(0, 1\) here but \(0, 0\)"),
    ("token", 2, -3, r"row 2: field 'token': -3 is negative"),
])
def test_bad_value_names_row_and_field(tmp_path, column, row, value, message):
    path = write_mutated(tmp_path / "t.parquet", set_cell(column, row, value))
    with pytest.raises(UserError, match=message) as err:
        load_trace(path)
    assert str(err.value).startswith(str(path))
    assert "\n" not in str(err.value)


def test_a_missing_row_leaves_a_token_short_of_top_k(tmp_path):
    def drop_row_3(data):
        for values in data.values():
            del values[3]
    path = write_mutated(tmp_path / "t.parquet", drop_row_3)
    with pytest.raises(UserError, match=r"row 2: token 1 of pass 0 routes to 1 experts at layer 0; top-k is 2"):
        load_trace(path)


def test_a_token_split_across_a_cell_is_refused(tmp_path):
    def swap(data):  # rows 1 and 2 exchange: token 0, token 1, token 0, token 1 in layer 0
        for values in data.values():
            values[1], values[2] = values[2], values[1]
    path = write_mutated(tmp_path / "t.parquet", swap)
    with pytest.raises(UserError, match=r"row 2: token 0 appears again in its cell after other tokens"):
        load_trace(path)


def test_wrong_column_type_is_named(tmp_path):
    def as_text(data):
        data["expert"] = [str(v) for v in data["expert"]]

    def schema(s):
        return s.set(s.get_field_index("expert"), pa.field("expert", pa.string()))
    path = write_mutated(tmp_path / "t.parquet", as_text, schema)
    with pytest.raises(UserError, match=r"column 'expert' has type string; expected integers"):
        load_trace(path)


def test_unknown_and_missing_columns_are_named(tmp_path):
    table = trace_to_table(small_trace())
    pq.write_table(table.append_column("note", pa.array(["x"] * table.num_rows)), tmp_path / "extra.parquet")
    with pytest.raises(UserError, match=r"unknown column 'note'"):
        load_trace(tmp_path / "extra.parquet")
    pq.write_table(table.drop_columns(["token"]), tmp_path / "missing.parquet")
    with pytest.raises(UserError, match=r"missing column 'token'"):
        load_trace(tmp_path / "missing.parquet")


def test_metadata_problems(tmp_path):
    table = trace_to_table(small_trace())
    meta = json.loads(table.schema.metadata[METADATA_KEY])

    def write(name, value: bytes | None):
        t = table.replace_schema_metadata({} if value is None else {METADATA_KEY: value})
        pq.write_table(t, tmp_path / name)
        return tmp_path / name

    with pytest.raises(UserError, match="no 'moesim' key"):
        load_trace(write("none.parquet", None), format="moesim")
    with pytest.raises(UserError, match="not valid JSON"):
        load_trace(write("json.parquet", b"{oops"))
    newer = dict(meta, format_version=99)
    with pytest.raises(UserError, match="newer moesim"):
        load_trace(write("newer.parquet", json.dumps(newer).encode()))
    broken = dict(meta, meta={"n_layers": 2})
    with pytest.raises(UserError, match="'meta' is incomplete"):
        load_trace(write("meta.parquet", json.dumps(broken).encode()))


def test_truncated_file_is_a_user_error(tmp_path):
    save_trace(small_trace(), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.parquet"):
        load_trace(tmp_path / "cut.parquet")
