"""assemble (moesim/traces/importers/assemble.py) from Routes built by hand: the grouping into passes,
tokens and cells, the dtypes it stores, and every error it raises, message and line exactly."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.traces.importers.assemble import INT32_MAX, Routes, assemble
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta, expert_dtype

FLOAT16_MAX = float(np.finfo(np.float16).max)


def routes(rows, weights=None):
    """rows: (new_pass, phase, request, position, layer, [experts]); line numbers 2, 3, ..."""
    counts = [len(r[5]) for r in rows]
    return Routes(
        line=np.arange(2, 2 + len(rows)),
        new_pass=np.array([r[0] for r in rows], dtype=bool),
        phase=np.array([r[1] for r in rows], dtype=np.int64),
        request=np.array([r[2] for r in rows], dtype=np.int64),
        position=np.array([r[3] for r in rows], dtype=np.int64),
        layer=np.array([r[4] for r in rows], dtype=np.int64),
        expert_offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        expert=np.array([e for r in rows for e in r[5]], dtype=np.int64),
        weight=None if weights is None else np.array(weights, dtype=np.float64),
    )


def meta(top_k=2, n_layers=2, n_experts=4):
    return TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=[8] * n_layers)


# a prefill of 2 tokens (layer-major), then a decode step; a second request's prefill
GOOD = [(1, PREFILL, 0, 0, 0, [0, 1]), (0, PREFILL, 0, 1, 0, [2, 3]), (0, PREFILL, 0, 0, 1, [1, 2]),
        (0, PREFILL, 0, 1, 1, [0, 3]), (1, DECODE, 0, 2, 0, [3, 0]), (0, DECODE, 0, 2, 1, [2, 1]),
        (1, PREFILL, 1, 0, 0, [1, 0])]


def test_grouping_dtypes_and_access_tokens():
    trace = assemble(routes(GOOD, weights=[0.5] * 14), meta(), "f.csv")
    assert trace.pass_phase.tolist() == [PREFILL, DECODE, PREFILL]
    assert trace.pass_cell_offsets.tolist() == [0, 2, 4, 5]
    assert trace.pass_token_offsets.tolist() == [0, 2, 3, 4]
    assert trace.token_request.tolist() == [0, 0, 0, 1] and trace.token_position.tolist() == [0, 1, 2, 0]
    assert trace.cell_layer.tolist() == [0, 1, 0, 1, 0] and trace.cell_tokens.tolist() == [2, 2, 1, 1, 1]
    assert trace.expert.tolist() == [0, 1, 2, 3, 1, 2, 0, 3, 3, 0, 2, 1, 1, 0]
    # the stored layout (the Parquet schema and memory per access rest on it)
    assert trace.pass_phase.dtype == np.int8 and trace.cell_layer.dtype == np.int16
    assert trace.token_request.dtype == np.int32 and trace.token_position.dtype == np.int32
    assert trace.cell_tokens.dtype == np.int32 and trace.expert.dtype == expert_dtype(4)
    assert trace.weight.dtype == np.float16
    assert trace.meta.top_k == 2


def test_uneven_experts_per_token_keep_their_access_tokens():
    """One cell, token 0 -> [1], token 1 -> [2, 3]: which token each access belongs to is kept."""
    trace = assemble(routes([(1, PREFILL, 0, 0, 0, [1]), (0, PREFILL, 0, 1, 0, [2, 3])]), meta(top_k=None), "f")
    assert trace.expert.tolist() == [1, 2, 3]
    assert trace.access_token is not None and trace.access_token.tolist() == [0, 1, 1]
    assert trace.meta.top_k is None  # not inferred unless asked
    equal = assemble(routes([(1, PREFILL, 0, 0, 0, [1, 2]), (0, PREFILL, 0, 1, 0, [2, 3])]), meta(top_k=None), "f")
    assert equal.meta.top_k is None
    inferred = assemble(routes([(1, PREFILL, 0, 0, 0, [1, 2])]), meta(top_k=None), "f", infer_top_k=True)
    assert inferred.meta.top_k == 2


def test_the_same_request_and_position_in_two_passes_are_two_tokens():
    """A log that re-runs a position (an explicit pass column, e.g. a retried step): two passes, two tokens."""
    trace = assemble(routes([(1, DECODE, 0, 5, 0, [0, 1]), (1, DECODE, 0, 5, 0, [2, 3])]), meta(), "f")
    assert trace.pass_token_offsets.tolist() == [0, 1, 2] and trace.token_position.tolist() == [5, 5]


@pytest.mark.parametrize("rows,weights,message", [
    ([], None, "f.csv: no routing rows"),
    ([(1, 2, 0, 0, 0, [0, 1])], None, "f.csv: line 2: field 'phase': 2 is not 0 (prefill) or 1 (decode)"),
    ([(1, 0, 0, 0, 0, [0, 1]), (0, 0, 0, 0, 2, [0, 1])], None, "f.csv: line 3: field 'layer': 2 outside 0..1"),
    ([(1, 0, 0, 0, -1, [0, 1])], None, "f.csv: line 2: field 'layer': -1 outside 0..1"),
    ([(1, 0, -1, 0, 0, [0, 1])], None, f"f.csv: line 2: field 'request': -1 outside 0..{INT32_MAX}"),
    ([(1, 0, 0, INT32_MAX + 1, 0, [0, 1])], None,
     f"f.csv: line 2: field 'position': {INT32_MAX + 1} outside 0..{INT32_MAX}"),
    ([(1, 0, 0, 0, 0, [0, 1]), (0, 0, 0, 1, 0, [])], None, "f.csv: line 3: no expert ids in this row"),
    ([(1, 0, 0, 0, 0, [0, 4])], None, "f.csv: line 2: field 'expert': 4 outside 0..3"),
    ([(1, 0, 0, 0, 0, [0, 1])], [0.5, float("nan")],
     "f.csv: line 2: field 'weight': nan is not a finite number within float16 range (weights are kept at float16)"),
    ([(1, 0, 0, 0, 0, [0, 1])], [70000.0, 0.5],
     "f.csv: line 2: field 'weight': 70000.0 is not a finite number within float16 range (weights are kept at "
     "float16)"),
    ([(1, 0, 0, 0, 0, [0, 1]), (0, 1, 0, 0, 1, [0, 1]), (0, 0, 0, 0, 1, [0, 1])], None,
     "f.csv: line 3: field 'phase': 1 differs from the rest of its pass"),
    ([(1, 0, 3, 1, 1, [2, 2])], None,
     "f.csv: line 2: field 'expert': 2 appears twice for the token at request 3, position 1, layer 1"),
    ([(1, 0, 0, 0, 0, [0, 1]), (0, 0, 0, 0, 0, [2])], None,
     "f.csv: line 2: the token at request 0, position 0, layer 0 routes to 3 experts; top-k is 2"),
])
def test_errors_name_the_line_and_field(rows, weights, message):
    with pytest.raises(UserError) as err:
        assemble(routes(rows, weights) if rows else routes([]), meta(), "f.csv")
    assert str(err.value) == message


def test_limits_are_inclusive():
    """INT32_MAX is a valid position and the largest float16 a valid weight (negative ones are refused)."""
    trace = assemble(routes([(1, 0, INT32_MAX, INT32_MAX, 1, [0, 1])], weights=[FLOAT16_MAX, 0.0]),
                     meta(), "f.csv")
    assert trace.token_position.tolist() == [INT32_MAX] and trace.token_request.tolist() == [INT32_MAX]
    assert np.isfinite(trace.weight.astype(np.float64)).all()


def test_line_word_names_the_source_rows():
    with pytest.raises(UserError) as err:
        assemble(routes([(1, 2, 0, 0, 0, [0, 1])]), meta(), "t.jsonl", line_word="record")
    assert str(err.value).startswith("t.jsonl: record 2: ")


def test_first_appearance_ids_and_first_index_by_hand():
    from moesim.traces.importers.assemble import first_appearance_ids, first_index_of

    ids, n = first_appearance_ids(np.array([7, 3, 7, 5, 3]))
    assert (ids.tolist(), n, ids.dtype) == ([0, 1, 0, 2, 1], 3, np.int64)
    ids, n = first_appearance_ids(np.array([1, 1, 2, 1]), np.array([0, 0, 0, 9]))  # pairs (1,0) (2,0) (1,9)
    assert (ids.tolist(), n) == ([0, 0, 1, 2], 3)
    assert first_index_of(ids, n).tolist() == [0, 2, 3]
    empty, n = first_appearance_ids(np.array([], dtype=np.int64))
    assert (empty.size, empty.dtype, n) == (0, np.int64, 0)


def test_a_pass_of_more_tokens_than_an_int32_counts_is_refused(monkeypatch):
    """The guard against 2**31 tokens in one pass, exercised at a limit of 2 (the module's INT32_MAX,
    read at call time): 2 tokens in a pass are fine, 3 are one error naming the file."""
    import moesim.traces.importers.assemble as assemble_module

    monkeypatch.setattr(assemble_module, "INT32_MAX", 2)
    three = [(1, PREFILL, 0, 0, 0, [0, 1]), (0, PREFILL, 0, 1, 0, [2, 3]), (0, PREFILL, 0, 2, 0, [1, 2])]
    assert assemble(routes(three[:2]), meta(n_layers=1), "log.csv").n_tokens == 2
    with pytest.raises(UserError) as info:
        assemble(routes(three), meta(n_layers=1), "log.csv")
    assert str(info.value) == "log.csv: a pass has more tokens than an int32 can count"
