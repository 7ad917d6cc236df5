"""The Parquet format: lossless, deterministic, laid out as docs/trace-format.md says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.traces.format.io import load_trace, save_trace
from moesim.traces.format.parquet_codec import FORMAT_VERSION, trace_to_table
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace, simple_trace


def test_every_feature_round_trips_exactly_and_resaves_to_the_same_bytes(tmp_path: Path, rich_trace, traces_equal):
    trace = rich_trace
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    save_trace(trace, first)
    loaded = load_trace(first)
    traces_equal(trace, loaded)
    assert loaded.content_hash() == trace.content_hash()
    save_trace(loaded, second)
    assert first.read_bytes() == second.read_bytes()


def test_rows_follow_the_documented_layout(tmp_path: Path):
    # pass 0: prefill of request 5, tokens at positions 0 and 1, top-1, layers 0 then 1;
    # pass 1: two tokens, a layer-0 cell of one token (a short cell holds the pass's last tokens, so
    # token 1 = request 6; token 0 routes nowhere) and an empty cell at layer 1.
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=1, object_bytes=[8, 8])
    trace = build_trace(meta, [
        {"phase": PREFILL, "tokens": [(5, 0), (5, 1)], "cells": [(0, [[3], [1]]), (1, [[0], [2]])]},
        {"phase": DECODE, "tokens": [(5, 2), (6, 0)], "cells": [(0, [[2]]), (1, [])]},
    ])
    save_trace(trace, tmp_path / "t.parquet")
    rows = pq.read_table(tmp_path / "t.parquet").to_pydict()
    assert rows == {
        "pass": [0, 0, 0, 0, 1, 1, 1],
        "phase": [0, 0, 0, 0, 1, 1, 1],
        "request": [5, 5, 5, 5, 5, 6, None],
        "position": [0, 1, 0, 1, 2, 0, None],
        "token": [0, 1, 0, 1, 0, 1, None],
        "layer": [0, 0, 1, 1, None, 0, 1],
        "expert": [3, 1, 0, 2, None, 2, None],
        "weight": [None] * 7,
    }
    meta_json = json.loads(pq.read_schema(tmp_path / "t.parquet").metadata[b"moesim"])
    assert meta_json["format_version"] == FORMAT_VERSION
    assert meta_json["meta"]["object_bytes"] == [8, 8]


def test_pandas_sees_the_documented_columns_and_types(tmp_path: Path, rich_trace):
    save_trace(rich_trace, tmp_path / "t.parquet")
    schema = pq.read_schema(tmp_path / "t.parquet")
    assert schema.names == ["pass", "phase", "request", "position", "token", "layer", "expert", "weight",
                            "ann_flag", "ann_residency", "ann_score", "pred_lookahead_1", "pred_prob"]
    types = {f.name: f.type for f in schema}
    assert types["pass"] == pa.int32() and types["phase"] == pa.int8() and types["layer"] == pa.int16()
    assert types["expert"] == pa.int16() and types["weight"] == pa.float32()
    assert types["ann_residency"] == pa.int8() and types["pred_lookahead_1"] == pa.list_(pa.int16())
    frame = pd.read_parquet(tmp_path / "t.parquet")
    assert int(frame["expert"].notna().sum()) == rich_trace.n_accesses


def test_many_experts_use_int32_ids(tmp_path: Path):
    trace = simple_trace([[[40000], [5]]], n_layers=2, n_experts=50000)
    save_trace(trace, tmp_path / "t.parquet")
    assert pq.read_schema(tmp_path / "t.parquet").field("expert").type == pa.int32()
    assert load_trace(tmp_path / "t.parquet").expert.tolist() == [40000, 5]


@st.composite
def random_traces(draw):
    n_layers = draw(st.integers(1, 4))
    n_experts = draw(st.integers(2, 9))
    fixed_k = draw(st.one_of(st.none(), st.integers(1, 2)))
    weights = draw(st.booleans())
    passes = []
    for _ in range(draw(st.integers(0, 4))):
        n_tok = draw(st.integers(0, 3))
        tokens = [(draw(st.integers(0, 3)), draw(st.integers(0, 50))) for _ in range(n_tok)]
        cells = []
        layers = draw(st.lists(st.integers(0, n_layers - 1), max_size=n_layers, unique=True))
        for layer in layers:
            used = draw(st.integers(0, n_tok))
            per_token = []
            for _ in range(used):
                k = fixed_k or draw(st.integers(1, min(3, n_experts)))  # k distinct experts must exist
                per_token.append(draw(st.lists(st.integers(0, n_experts - 1), min_size=k, max_size=k, unique=True)))
            cell_w = [[draw(st.floats(0, 1, width=16)) for _ in row] for row in per_token] if weights else None
            cells.append((layer, per_token, cell_w) if weights else (layer, per_token))
        passes.append({"phase": draw(st.sampled_from([PREFILL, DECODE])), "tokens": tokens, "cells": cells})
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=fixed_k,
                     object_bytes=draw(st.lists(st.integers(1, 10**9), min_size=n_layers, max_size=n_layers)))
    trace = build_trace(meta, passes)
    if weights and trace.weight is None:  # no access at all: nothing to weigh
        trace.weight = np.zeros(0, dtype=np.float16)
    if trace.n_accesses and draw(st.booleans()):
        trace.annotations["a"] = np.asarray(draw(st.lists(st.integers(-128, 127), min_size=trace.n_accesses,
                                                          max_size=trace.n_accesses)), dtype=np.int8)
    if draw(st.booleans()):
        width = draw(st.integers(0, 3))
        trace.predictions["p"] = np.arange(trace.n_cells * width, dtype=np.int32).reshape(trace.n_cells, width)
    return trace


@settings(max_examples=60, deadline=None)
@given(random_traces())
def test_random_traces_round_trip_and_resave_identically(tmp_path_factory, traces_equal, trace):
    trace.validate()
    folder = tmp_path_factory.mktemp("rt")
    save_trace(trace, folder / "a.parquet")
    loaded = load_trace(folder / "a.parquet")
    if trace.weight is not None and trace.n_accesses == 0:
        trace.weight = None  # an empty weight column reads back as "no weights"
    traces_equal(trace, loaded)
    save_trace(loaded, folder / "b.parquet")
    assert (folder / "a.parquet").read_bytes() == (folder / "b.parquet").read_bytes()


def test_saving_validates_first_and_writes_nothing_on_error(tmp_path: Path):
    bad = simple_trace([[[1], [7]]], n_layers=2, n_experts=4)
    target = tmp_path / "out.parquet"
    with pytest.raises(UserError, match="expert id 7 outside 0..3"):
        save_trace(bad, target)
    assert list(tmp_path.iterdir()) == []
    save_trace(simple_trace([[[1], [2]]], n_layers=2, n_experts=4), target)
    before = target.read_bytes()
    with pytest.raises(UserError):
        save_trace(bad, target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_two_consecutive_cells_of_one_layer_cannot_be_stored():
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=1, object_bytes=[1])
    trace = build_trace(meta, [{"phase": DECODE, "cells": [(0, [[1]]), (0, [[2]])]}])
    with pytest.raises(UserError, match="both layer 0"):
        trace_to_table(trace)


def test_uneven_cells_without_access_token_cannot_be_stored():
    trace = build_trace(TraceMeta(n_layers=1, n_experts=4, top_k=None, object_bytes=[1]),
                        [{"phase": DECODE, "cells": [(0, [[1], [2, 3]])]}])
    assert trace.access_token is not None  # build_trace records which token each access is
    trace.access_token = None
    with pytest.raises(UserError, match="do not split evenly"):
        trace_to_table(trace)


def test_loaded_bundled_trace_is_compact():
    trace = load_trace("bundled:qwen")
    assert trace.expert.dtype == np.int16 and trace.weight.dtype == np.float16
    assert trace.cell_layer.dtype == np.int16
    # the pruned last prefill layer (final prompt token only) is the canonical layout: no per-access index
    assert trace.access_token is None
    last = int(trace.pass_cell_offsets[1]) - 1
    assert trace.access_tokens()[trace.cell_offsets[last]:trace.cell_offsets[last + 1]].tolist() == [27] * 6
    assert trace.nbytes() < 8 * trace.n_accesses  # experts, weights, residency, cell and token tables


def test_canonical_token_layout_is_not_stored():
    trace = simple_trace([[[1, 2, 3, 0]]], n_layers=1, n_experts=4, top_k=2)
    trace.access_token = np.array([0, 0, 1, 1])
    trace.normalize_access_token()
    assert trace.access_token is None
    assert trace.access_tokens().tolist() == [0, 0, 1, 1]
