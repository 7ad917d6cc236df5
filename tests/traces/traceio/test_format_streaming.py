"""Reading a moesim Parquet file a chunk of passes at a time, and writing it a piece of passes at a
time, give what whole-file reading and one-table writing give: the same trace, the same error for a
broken file, the same bytes. `batch_rows=WHOLE` makes the whole file one chunk: the reader then
checks every rule over all rows in order, which is the reference for the error a file reports."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fast_helpers import traced_peak

from moesim.errors import UserError
from moesim.traces.format import parquet_codec
from moesim.traces.format import parquet_read
from moesim.traces.format import parquet_write
from moesim.traces.format.parquet_codec import METADATA_KEY, read_trace, trace_to_table, write_trace
from moesim.traces.format.parquet_write import file_metadata, fixed_size_tables, row_pieces
from moesim.traces.synth.synthetic import generate, preset
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace

WHOLE = 1 << 40
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def traces(draw):
    """Up to 6 passes with tokens, cells (some empty, some short), weights, an annotation, a prediction."""
    n_layers, n_experts = draw(st.integers(1, 3)), draw(st.integers(3, 6))
    top_k = draw(st.one_of(st.none(), st.integers(1, 2)))
    weights = draw(st.booleans())
    passes = []
    for _ in range(draw(st.integers(1, 6))):
        tokens = [(draw(st.integers(0, 2)), draw(st.integers(0, 30))) for _ in range(draw(st.integers(0, 3)))]
        cells = []
        for layer in draw(st.lists(st.integers(0, n_layers - 1), max_size=n_layers, unique=True)):
            per_token = [draw(st.lists(st.integers(0, n_experts - 1), min_size=k, max_size=k, unique=True))
                         for k in [top_k or draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, len(tokens))))]]
            cell_w = [[0.25] * len(row) for row in per_token]
            cells.append((layer, per_token, cell_w) if weights else (layer, per_token))
        passes.append({"phase": draw(st.sampled_from([PREFILL, DECODE])), "tokens": tokens, "cells": cells})
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=[4] * n_layers)
    trace = build_trace(meta, passes)
    if trace.n_accesses:
        trace.annotations["r"] = (np.arange(trace.n_accesses) % 5).astype(np.int8)
    trace.predictions["p"] = np.arange(trace.n_cells * 2, dtype=np.int16).reshape(trace.n_cells, 2)
    return trace


def outcome(path: Path, batch_rows: int):
    """The loaded trace's content hash, or the error message."""
    try:
        return read_trace(path, batch_rows=batch_rows).content_hash()
    except UserError as exc:
        return f"error: {exc}"


@SETTINGS
@given(trace=traces(), batch_rows=st.integers(1, 9))
def test_small_chunks_read_the_saved_trace(tmp_path_factory, traces_equal, trace, batch_rows):
    path = tmp_path_factory.mktemp("s") / "t.parquet"
    save = trace_to_table(trace)
    pq.write_table(save, path)
    loaded = read_trace(path, batch_rows=batch_rows)
    if trace.weight is not None and trace.n_accesses == 0:
        trace.weight = None  # no access, nothing weighed: the file says "no weights"
    traces_equal(trace, loaded)


def mutated_table(table: pa.Table, data) -> pa.Table | None:
    """The table with one to three rows changed, swapped, dropped or repeated."""
    cols = table.to_pydict()
    for _ in range(data.draw(st.integers(1, 3))):
        n = len(cols["pass"])
        row = data.draw(st.integers(0, n - 1))
        kind = data.draw(st.sampled_from(["set", "set", "swap", "drop", "repeat"]))
        if kind == "set":
            name = data.draw(st.sampled_from([c for c in cols if not c.startswith("pred_")]))
            value = data.draw(st.one_of(st.none(), st.integers(-2, 8)))
            cols[name][row] = float("inf") if name == "weight" and value == 8 else value
        elif kind == "swap" and n > 1:
            other = min(row + data.draw(st.integers(1, 3)), n - 1)
            for values in cols.values():
                values[row], values[other] = values[other], values[row]
        elif kind == "drop" and n > 1:
            for values in cols.values():
                del values[row]
        elif kind == "repeat":
            for values in cols.values():
                values.insert(row, values[row])
    try:
        return pa.table(cols, schema=table.schema)
    except (pa.ArrowException, OverflowError):
        return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace=traces(), data=st.data())
def test_a_broken_file_reports_the_whole_file_error_at_any_chunk_size(tmp_path_factory, trace, data):
    if trace.weight is not None and trace.n_accesses == 0:
        trace.weight = None
    table = trace_to_table(trace)
    assume(table.num_rows > 0)
    mutated = mutated_table(table, data)
    assume(mutated is not None)
    path = tmp_path_factory.mktemp("m") / "m.parquet"
    pq.write_table(mutated, path)
    expected = outcome(path, WHOLE)
    for batch_rows in (1, 2, 5):
        assert outcome(path, batch_rows) == expected, batch_rows


# ---- cells cut between runs: SPLIT_BATCHES = 1 makes every pass, and every cell, longer than ------
# ---- the split size split, down to a chunk per run at batch_rows = 1 -----------------------------


def permuted_runs(trace, data):
    """The trace with one cell's runs in another token order (a layout that needs access_token)."""
    if trace.access_token is not None or trace.n_accesses == 0 or trace.meta.top_k is None:
        return trace
    tokens = trace.canonical_access_tokens().copy()
    cell = data.draw(st.integers(0, trace.n_cells - 1))
    lo, hi = int(trace.cell_offsets[cell]), int(trace.cell_offsets[cell + 1])
    runs = tokens[lo:hi].reshape(-1, trace.meta.top_k)
    tokens[lo:hi] = runs[data.draw(st.permutations(range(runs.shape[0])))].reshape(-1)
    trace.access_token = tokens
    trace.normalize_access_token()
    return trace


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace=traces(), batch_rows=st.integers(1, 4), data=st.data())
def test_cells_cut_between_runs_read_the_saved_trace(tmp_path_factory, traces_equal, trace, batch_rows, data):
    if trace.weight is not None and trace.n_accesses == 0:
        trace.weight = None
    trace = permuted_runs(trace, data)
    path = tmp_path_factory.mktemp("c") / "t.parquet"
    pq.write_table(trace_to_table(trace), path)
    with mock.patch.object(parquet_read, "SPLIT_BATCHES", 1):
        loaded = read_trace(path, batch_rows=batch_rows)
    traces_equal(trace, loaded)
    assert (loaded.access_token is None) == (trace.access_token is None)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace=traces(), data=st.data())
def test_a_broken_file_cut_inside_cells_reports_the_whole_file_error(tmp_path_factory, trace, data):
    if trace.weight is not None and trace.n_accesses == 0:
        trace.weight = None
    table = trace_to_table(trace)
    assume(table.num_rows > 0)
    mutated = mutated_table(table, data)
    assume(mutated is not None)
    path = tmp_path_factory.mktemp("m") / "m.parquet"
    pq.write_table(mutated, path)
    expected = outcome(path, WHOLE)
    with mock.patch.object(parquet_read, "SPLIT_BATCHES", 1):
        for batch_rows in (1, 2, 3):
            assert outcome(path, batch_rows) == expected, batch_rows


def one_cell_file(path: Path, tokens: int = 300, n_layers: int = 1) -> Path:
    """One prefill pass of `tokens` tokens at `n_layers` layers, top-2, weights and a prediction:
    cells of 2 x tokens rows."""
    meta = TraceMeta(n_layers=n_layers, n_experts=8, top_k=2, object_bytes=[4] * n_layers)
    per_token = [[t % 8, (t + 3) % 8] for t in range(tokens)]
    cells = [(layer, per_token, [[0.5, 0.25]] * tokens) for layer in range(n_layers)]
    trace = build_trace(meta, [{"phase": PREFILL, "cells": cells}])
    trace.predictions["p"] = np.array([[1, 2, 3]] * n_layers, dtype=np.int16)
    pq.write_table(trace_to_table(trace), path)
    return path


def chunk_sizes(path: Path, batch_rows: int) -> tuple[list[int], str]:
    sizes = []
    real = parquet_read.ChunkDecoder

    def recording(table, *args, **kwargs):
        sizes.append(table.num_rows)
        return real(table, *args, **kwargs)
    with mock.patch.object(parquet_read, "ChunkDecoder", recording):
        result = outcome(path, batch_rows)
    return sizes, result


def test_one_long_cell_is_read_a_few_runs_at_a_time(tmp_path):
    path = one_cell_file(tmp_path / "t.parquet")
    whole_sizes, whole = chunk_sizes(path, WHOLE)
    sizes, cut = chunk_sizes(path, 16)
    assert whole_sizes == [600] and cut == whole and not whole.startswith("error")
    # chunks of at most SPLIT_BATCHES batches and one more (the batch the cut falls in), each ending
    # on a run: all but the last hold whole top-2 runs
    assert len(sizes) > 5 and max(sizes) <= 16 * (parquet_read.SPLIT_BATCHES + 1) and sum(sizes) == 600
    assert all(size % 2 == 0 for size in sizes)


def test_a_token_repeated_in_a_cut_cell_is_the_whole_file_error(tmp_path):
    # token 3 comes back at row 501, many chunks after its run at rows 6-7 (token 250 keeps row 500)
    path = write_changed(tmp_path / "t.parquet", {("token", 501): 3, ("position", 501): 3},
                         pq.read_table(one_cell_file(tmp_path / "one.parquet")))
    message = f"error: {path}: row 501: token 3 appears again in its cell after other tokens"
    assert chunk_sizes(path, WHOLE)[1].startswith(message)
    assert chunk_sizes(path, 16)[1].startswith(message)


def test_a_token_that_disagrees_with_its_row_chunks_earlier_is_the_whole_file_error(tmp_path):
    # token 50's rows at layer 0 (rows 100-101) say position 50; at layer 1 (row 700), many chunks
    # later, 999: the carried token table must keep the first row's value
    table = pq.read_table(one_cell_file(tmp_path / "two.parquet", n_layers=2))
    path = write_changed(tmp_path / "t.parquet", {("position", 700): 999}, table)
    message = (f"error: {path}: row 700: token 50 of pass 0 has request/position (0, 999) here but (0, 50) "
               "on an earlier row")
    assert chunk_sizes(path, WHOLE)[1] == message
    assert chunk_sizes(path, 16)[1] == message


def test_a_prediction_on_a_cut_cells_later_row_is_refused(tmp_path):
    table = pq.read_table(one_cell_file(tmp_path / "one.parquet"))
    path = write_changed(tmp_path / "t.parquet", {("pred_p", 64): [1, 2, 3]}, table)
    for batch_rows in (WHOLE, 16):
        assert chunk_sizes(path, batch_rows)[1] == (f"error: {path}: row 64: field 'pred_p' is set on a row that is "
                                                    "not its cell's first (predictions are per cell)")


# ---- hand-made files: four decode passes of one token, two layers, top-2: 4 rows per pass --------


def four_passes() -> pa.Table:
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[4, 4])
    passes = [{"phase": DECODE, "tokens": [(0, p)],
               "cells": [(0, [[0, 1]], [[0.5, 0.5]]), (1, [[2, 3]], [[0.5, 0.5]])]} for p in range(4)]
    return trace_to_table(build_trace(meta, passes))


def write_changed(path: Path, changes: dict[tuple[str, int], object], table: pa.Table | None = None) -> Path:
    table = four_passes() if table is None else table
    cols = table.to_pydict()
    for (name, row), value in changes.items():
        cols[name][row] = value
    pq.write_table(pa.table(cols, schema=table.schema), path)
    return path


def test_an_earlier_rule_broken_in_a_later_chunk_wins(tmp_path):
    # row 5 repeats an expert (a late rule), row 13 has layer 9 (an early rule): a whole-file read
    # reports the layer; so must a read whose chunk of row 5 comes before the chunk of row 13
    path = write_changed(tmp_path / "t.parquet", {("expert", 5): 0, ("layer", 13): 9})
    for batch_rows in (WHOLE, 4, 1):
        assert outcome(path, batch_rows) == f"error: {path}: row 13: field 'layer': 9 outside 0..1"


def test_a_null_weight_is_an_error_once_a_later_chunk_sets_weights(tmp_path):
    # pass 0 has no weights at all (its chunk alone looks weightless); pass 2 has an infinite one
    nulls = {("weight", r): None for r in range(4)}
    path = write_changed(tmp_path / "t.parquet", {**nulls, ("weight", 9): float("inf")})
    for batch_rows in (WHOLE, 4, 1):
        assert outcome(path, batch_rows) == f"error: {path}: row 0: field 'weight' is null here but set on other rows"


def test_a_pass_number_is_checked_against_the_row_before_the_chunk(tmp_path):
    path = write_changed(tmp_path / "t.parquet", {("pass", r): 3 for r in range(8, 12)})
    for batch_rows in (WHOLE, 4, 1):
        assert outcome(path, batch_rows) == (f"error: {path}: row 8: field 'pass': 3 follows 1; "
                                             "passes are numbered 0, 1, 2, ... in row order")


def test_a_prediction_width_missing_from_the_metadata_comes_from_the_first_cell(tmp_path):
    # pass 0 has nothing (its chunk has no cell); the width must come from pass 1's first cell
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=1, object_bytes=[4])
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [], "cells": []},
                               {"phase": DECODE, "cells": [(0, [[1]])]},
                               {"phase": DECODE, "cells": [(0, [[2]])]}])
    trace.predictions["p"] = np.array([[7, 8, 9], [4, 5, 6]], dtype=np.int16)
    table = trace_to_table(trace)
    stored = json.loads(table.schema.metadata[METADATA_KEY])
    stored["prediction_widths"] = {}
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(stored).encode()}), tmp_path / "t.parquet")
    for batch_rows in (WHOLE, 1):
        assert read_trace(tmp_path / "t.parquet", batch_rows=batch_rows).predictions["p"].tolist() == [[7, 8, 9],
                                                                                                     [4, 5, 6]]


def test_a_repeated_column_is_a_user_error(tmp_path):
    table = four_passes()
    pq.write_table(table.append_column("ann_x", pa.array([1] * 16, pa.int8()))
                   .append_column("ann_x", pa.array([2] * 16, pa.int8())), tmp_path / "t.parquet")
    assert outcome(tmp_path / "t.parquet", WHOLE) == f"error: {tmp_path / 't.parquet'}: column 'ann_x' appears 2 times"


# ---- writing ---------------------------------------------------------------------------------


def test_fixed_size_tables_cut_exactly_and_keep_every_row():
    def table(values):
        return pa.table({"x": pa.array(values, pa.int32())})

    pieces = [table([0, 1, 2]), table([]), table([3, 4, 5, 6, 7]), table([8, 9])]
    out = list(fixed_size_tables(pieces, 4))
    assert [t.num_rows for t in out] == [4, 4, 2]
    assert [t.column("x").num_chunks for t in out] == [1, 1, 1]  # contiguous, as one table's slices are
    assert sum((t.column("x").to_pylist() for t in out), []) == list(range(10))
    assert [t.num_rows for t in fixed_size_tables([table([0, 1]), table([2, 3])], 2)] == [2, 2]
    assert [t.num_rows for t in fixed_size_tables([table([])], 4)] == [0]  # an empty trace: one empty table


@SETTINGS
@given(trace=traces(), piece_rows=st.integers(1, 6), group_rows=st.integers(1, 9))
def test_pieces_write_the_bytes_of_one_table(tmp_path_factory, trace, piece_rows, group_rows):
    if trace.weight is not None and trace.n_accesses == 0:
        trace.weight = None
    folder = tmp_path_factory.mktemp("w")
    whole = pa.concat_tables(row_pieces(trace, piece_rows=WHOLE))  # one piece: the whole-trace layout
    assert pa.concat_tables(row_pieces(trace, piece_rows=piece_rows)).equals(whole)
    pq.write_table(whole.replace_schema_metadata(file_metadata(trace)), folder / "one.parquet",
                   compression="zstd", row_group_size=group_rows)
    with mock.patch.object(parquet_write, "PIECE_ROWS", piece_rows), \
            mock.patch.object(parquet_codec, "ROW_GROUP_SIZE", group_rows):
        write_trace(trace, folder / "pieces.parquet")
    assert (folder / "pieces.parquet").read_bytes() == (folder / "one.parquet").read_bytes()
    groups = pq.ParquetFile(folder / "pieces.parquet").metadata.num_row_groups
    assert groups == max(1, math.ceil(whole.num_rows / group_rows))


# ---- memory: decoding and encoding work a chunk at a time -------------------------------------


def test_working_memory_follows_the_chunk_not_the_file(tmp_path):
    # Whole-table decoding and encoding allocated ~86 and ~149 bytes per access in numpy on this
    # trace. In chunks of 4096 rows it is the trace (3.6 B/access), Trace.validate's temporaries
    # (~4.7) and one chunk; the writer also holds one row group's columns (~27 B per row, so
    # row groups are made small here: at the real 1 Mi rows that is a fixed ~28 MB).
    trace = generate(dataclasses.replace(preset("olmoe"), accesses=200_000, seed=3))
    path = tmp_path / "t.parquet"
    with mock.patch.object(parquet_write, "PIECE_ROWS", 4096), \
            mock.patch.object(parquet_codec, "ROW_GROUP_SIZE", 16384):
        save_peak = traced_peak(lambda: write_trace(trace, path))
    load_peak = traced_peak(lambda: read_trace(path, batch_rows=4096))
    assert load_peak / trace.n_accesses < 16
    assert save_peak / trace.n_accesses < 16
