"""Invariants of the in-memory Trace and the request stream built from it."""

from __future__ import annotations

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.sim.requests import build_request_stream
from moesim.traces.format.trace_meta import PREFILL, TraceMeta
from moesim.traces.format.build import build_trace, simple_trace


def test_object_ids_are_layer_major():
    t = simple_trace([[[1], [3]]], n_layers=2, n_experts=4)
    assert t.object_ids().tolist() == [1, 4 + 3]


def test_validate_rejects_expert_out_of_range_naming_the_access():
    t = simple_trace([[[1], [9]]], n_layers=2, n_experts=4)
    with pytest.raises(UserError, match=r"access 1: expert id 9 outside 0..3"):
        t.validate("t.parquet")


def test_validate_rejects_duplicate_expert_in_a_token_at_fixed_top_k():
    t = simple_trace([[[1, 1]]], n_layers=1, n_experts=4, top_k=2)
    with pytest.raises(UserError, match="twice"):
        t.validate()


@pytest.mark.parametrize("block", [1, 3, 4, 1 << 22])
def test_validate_checks_accesses_a_block_at_a_time_and_names_the_first_bad_one(monkeypatch, block):
    # blocks of 1, 3, 4 accesses: the bad access falls inside a later block, or on its first row
    from moesim.traces.format import trace_checks as trace_module

    monkeypatch.setattr(trace_module, "_CHECK_BLOCK", block)
    cell = [0, 1, 2, 3, 1, 2, 3, 0, 0, 2, 2, 2, 1, 1]  # top-2: tokens 5 and 6 repeat an expert
    t = simple_trace([[cell]], n_layers=1, n_experts=4, top_k=2)
    with pytest.raises(UserError, match="cell 0 \\(layer 0\\): a token routes to expert 2 twice"):
        t.validate()
    t = simple_trace([[[0, 1, 2, 3, 1, 2, 3, 0, 0, 9, 1, 7]]], n_layers=1, n_experts=4, top_k=2)
    with pytest.raises(UserError, match="access 9: expert id 9 outside 0..3"):
        t.validate()
    t = simple_trace([[[0, 1, 2, 3, 1, 2]]], n_layers=1, n_experts=4, top_k=2)
    t.weight = np.array([0.5, 0.5, 0.5, 0.5, -0.25, np.nan], dtype=np.float16)
    with pytest.raises(UserError, match="access 4: gate weight -0.25"):
        t.validate()


def test_validate_rejects_missing_experts_at_fixed_top_k():
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=2, object_bytes=[1])
    t = build_trace(meta, [{"phase": 1, "cells": [(0, [[1]])]}])
    with pytest.raises(UserError, match="1 accesses for 1 tokens at top-2"):
        t.validate()


def test_event_stream_dedupes_within_a_cell_keeping_first_order():
    # one prefill pass, layer 0: tokens route [2,1], [1,3], [2,0]
    t = simple_trace([[[2, 1, 1, 3, 2, 0]]], n_layers=1, n_experts=4, top_k=2, phases=[PREFILL])
    s = build_request_stream(t, "event")
    assert s.obj.tolist() == [2, 1, 3, 0]
    assert s.access_request.tolist() == [0, 1, 1, 2, 0, 3]
    seq = build_request_stream(t, "sequential")
    assert seq.obj.tolist() == [2, 1, 1, 3, 2, 0]


def test_content_hash_changes_with_any_expert():
    a = simple_trace([[[1], [2]]], n_layers=2, n_experts=4)
    b = simple_trace([[[1], [3]]], n_layers=2, n_experts=4)
    assert a.content_hash() != b.content_hash()
    assert a.content_hash() == simple_trace([[[1], [2]]], n_layers=2, n_experts=4).content_hash()


def test_total_object_bytes_uses_per_layer_sizes():
    t = simple_trace([[[0], [0]]], n_layers=2, n_experts=3, object_bytes=[10, 20])
    assert t.total_object_bytes() == 3 * 10 + 3 * 20
    assert np.array_equal(t.object_bytes_array(), [10, 10, 10, 20, 20, 20])
