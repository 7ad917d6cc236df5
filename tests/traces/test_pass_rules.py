"""Grouping router-log rows into passes (moesim/traces/importers/pass_rules.py), each case by hand.

Rows are built directly as LogRows (one expert list per row), so every pass id, phase and the
execution order (pass, then layer, then row order) below is read off the rows by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.errors import UserError
from moesim.traces.importers.pass_rules import (LogRows, PassRule, PhaseRule, dense_rank, group_rows,
                                                 parse_pass_rule, running_count)
from moesim.traces.format.trace_meta import DECODE, PREFILL

P, D = PREFILL, DECODE


def rows(request, position, layer, *, experts=None, phase=None, rule_key=None, file=None, files=("log.csv",),
         weight=False, annotate=False) -> LogRows:
    n = len(layer)
    experts = experts if experts is not None else [[i % 8] for i in range(n)]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(e) for e in experts], out=offsets[1:])
    flat = np.asarray([e for row in experts for e in row], dtype=np.int64)
    return LogRows(
        files=list(files), file=np.asarray(file if file is not None else [0] * n, dtype=np.int64),
        line=np.arange(2, n + 2, dtype=np.int64), request=np.asarray(request, dtype=np.int64),
        position=None if position is None else np.asarray(position, dtype=np.int64),
        layer=np.asarray(layer, dtype=np.int64), phase=None if phase is None else np.asarray(phase, dtype=np.int64),
        rule_key=None if rule_key is None else np.asarray(rule_key), expert_offsets=offsets, expert=flat,
        weight=(flat / 10.0) if weight else None, annotations={"score": flat * 100} if annotate else {},
    )


def pass_of_rows(routes) -> list[int]:
    return (np.cumsum(routes.new_pass) - 1).tolist()


def test_parse_pass_rule() -> None:
    assert parse_pass_rule(None) == PassRule("prompt") and parse_pass_rule("  ") == PassRule("prompt")
    assert parse_pass_rule(" Token ") == PassRule("token")
    assert parse_pass_rule("column: step ") == PassRule("column", "step")
    assert parse_pass_rule("RESET:slot") == PassRule("reset", "slot")
    assert PassRule("column", "step").text() == "column:step" and PassRule("prompt").text() == "prompt"
    for bad in ("column:", "reset: ", "prompt:x", "layer"):
        with pytest.raises(UserError) as info:
            parse_pass_rule(bad, "--option pass_by")
        assert str(info.value) == f"--option pass_by: unknown rule {bad!r}; rules: prompt, token, column:NAME, reset:NAME"


def test_running_count_and_dense_rank() -> None:
    # (request, layer) = (0,0) (1,0) (0,0) (0,1) (1,0) (0,0): 0, 0, 1, 0, 1, 2
    assert running_count(np.array([0, 1, 0, 0, 1, 0]), np.array([0, 0, 0, 1, 0, 0])).tolist() == [0, 0, 1, 0, 1, 2]
    assert running_count(np.array([5, 5, 5])).tolist() == [0, 1, 2]
    assert running_count(np.zeros(0, np.int64)).tolist() == []
    # tuples (2,5) (1,5) (2,4) (1,5) (3,0): sorted (1,5)=0, (2,4)=1, (2,5)=2, (3,0)=3
    assert dense_rank(np.array([2, 1, 2, 1, 3]), np.array([5, 5, 4, 5, 0])).tolist() == [2, 0, 1, 0, 3]
    assert dense_rank(np.array([7, 7, 3])).tolist() == [1, 1, 0]
    assert dense_rank(np.zeros(0, np.int64)).tolist() == []


# two layers, layer-major: request 0's prompt (positions 0-2), request 1's prompt (0-1), request 0's
# decode token (position 3). Rows 0-5 are layer 0, rows 6-11 layer 1, in that token order.
REQ = [0, 0, 0, 1, 1, 0] * 2
POS = [0, 1, 2, 0, 1, 3] * 2
LAYER = [0] * 6 + [1] * 6


def test_prompt_rule_with_a_prompt_length_two_requests_back_to_back() -> None:
    """prompt_len 3: request 0's positions 0-2 are one prefill pass, its position 3 a decode pass, and
    request 1's prompt (positions 0-1) its own prefill pass: two prompts back to back are two passes.
    Passes run request by request: r0 prefill (rows 0-2 and 6-8), r0 decode (5, 11), r1 prefill
    (3-4, 9-10); inside a pass layer 0's rows come first."""
    r = group_rows(rows(REQ, POS, LAYER, weight=True, annotate=True), PassRule("prompt"), PhaseRule(prompt_len=3))
    order = [0, 1, 2, 6, 7, 8, 5, 11, 3, 4, 9, 10]
    assert (r.line - 2).tolist() == order
    assert pass_of_rows(r) == [0] * 6 + [1] * 2 + [2] * 4
    assert r.phase.tolist() == [P] * 6 + [D] * 2 + [P] * 4
    assert r.request.tolist() == [REQ[i] for i in order] and r.position.tolist() == [POS[i] for i in order]
    assert r.layer.tolist() == [LAYER[i] for i in order]
    assert r.expert.tolist() == [i % 8 for i in order]
    assert r.weight.tolist() == pytest.approx([(i % 8) / 10 for i in order])
    assert r.annotations["score"].tolist() == [(i % 8) * 100 for i in order]
    assert r.expert_offsets.tolist() == list(range(13)) and r.source.tolist() == [0] * 12


def test_rows_keep_their_expert_lists_when_reordered() -> None:
    """Rows with 2, 1 and 3 experts: the entries move with their rows."""
    experts = [[1, 2], [3], [4, 5, 6], [7], [0, 1], [2]]
    r = group_rows(rows([0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 0, 1], [0, 0, 0, 0, 1, 1], experts=experts, weight=True),
                   PassRule("token"), PhaseRule())
    # token rule: passes (r0,p0): rows 0, 4; (r0,p1): 1, 5; (r1,p0): 2; (r1,p1): 3
    assert (r.line - 2).tolist() == [0, 4, 1, 5, 2, 3]
    assert r.expert.tolist() == [1, 2, 0, 1, 3, 2, 4, 5, 6, 7]
    assert r.expert_offsets.tolist() == [0, 2, 4, 5, 6, 9, 10]
    assert r.weight.tolist() == pytest.approx([0.1, 0.2, 0.0, 0.1, 0.3, 0.2, 0.4, 0.5, 0.6, 0.7])
    assert pass_of_rows(r) == [0, 0, 1, 1, 2, 3] and r.phase.tolist() == [D] * 6


def test_phase_from_a_column_and_from_a_fixed_phase() -> None:
    phase = [P, P, P, P, P, D] * 2
    r = group_rows(rows(REQ, POS, LAYER, phase=phase), PassRule("prompt"), PhaseRule())
    assert pass_of_rows(r) == [0] * 6 + [1] * 2 + [2] * 4
    assert r.phase.tolist() == [P] * 6 + [D] * 2 + [P] * 4
    # every row prefill: each request is one pass (r0 with its position 3)
    r = group_rows(rows(REQ, POS, LAYER), PassRule("prompt"), PhaseRule(fixed=PREFILL))
    assert pass_of_rows(r) == [0] * 8 + [1] * 4 and r.phase.tolist() == [P] * 12
    # every row decode: one pass per token, (request, position) order
    r = group_rows(rows(REQ, POS, LAYER), PassRule("prompt"), PhaseRule(fixed=DECODE))
    assert pass_of_rows(r) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and r.phase.tolist() == [D] * 12
    assert r.request.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_without_a_phase_a_pass_is_prefill_when_it_opens_a_request_with_several_tokens() -> None:
    """column:step. Step 0: r0 p0-1 (opens r0, 2 tokens) -> prefill. Step 1: r0 p2, r1 p0 (opens r1 with
    one token), r2 p0 (opens r2 with one token) -> decode. Step 2: r1 p1, r3 p0-1 (opens r3, 2 tokens)
    -> prefill. Rows on one layer, then the same on layer 1."""
    req = [0, 0, 0, 1, 2, 1, 3, 3] * 2
    pos = [0, 1, 2, 0, 0, 1, 0, 1] * 2
    step = [0, 0, 1, 1, 1, 2, 2, 2] * 2
    layer = [0] * 8 + [1] * 8
    r = group_rows(rows(req, pos, layer, rule_key=step), PassRule("column", "step"), PhaseRule())
    assert pass_of_rows(r) == [0] * 4 + [1] * 6 + [2] * 6
    assert r.phase.tolist() == [P] * 4 + [D] * 6 + [P] * 6
    assert (r.line - 2).tolist() == [0, 1, 8, 9, 2, 3, 4, 10, 11, 12, 5, 6, 7, 13, 14, 15]
    # string step ids run in sorted order; each step opens its request with two tokens: prefill
    r = group_rows(rows([0, 1, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0], rule_key=["b", "a", "b", "a"]),
                   PassRule("column", "s"), PhaseRule())
    assert (r.line - 2).tolist() == [1, 3, 0, 2] and r.phase.tolist() == [P] * 4


def test_phase_inference_counts_a_passs_tokens_whatever_the_file_order() -> None:
    """One file per layer, layer 1's file read first, column:step. Step 0 holds request 0's tokens 0 and
    1 (layer 0), step 1 the same tokens at layer 1. Step 0 opens request 0 with two tokens: prefill,
    although token 0's first row in the file belongs to step 1."""
    r = group_rows(rows([0, 0, 0, 0], [0, 1, 0, 1], [1, 1, 0, 0], rule_key=[1, 1, 0, 0]),
                   PassRule("column", "step"), PhaseRule())
    assert (r.line - 2).tolist() == [2, 3, 0, 1] and r.phase.tolist() == [P, P, D, D]


def test_without_positions_a_token_is_its_number_among_its_requests_rows_at_that_layer() -> None:
    r = group_rows(rows([0, 0, 1, 0, 0, 1], None, [0, 0, 0, 1, 1, 1]), PassRule("token"), PhaseRule())
    assert r.position.tolist() == [0, 0, 1, 1, 0, 0]
    assert (r.line - 2).tolist() == [0, 3, 1, 4, 2, 5]


def test_reset_rule_a_value_that_does_not_increase_starts_a_pass_per_stream() -> None:
    """Two files: log.csv holds layers 0 and 1 interleaved with batch index 0 1 2 0 1 on each layer;
    b.csv holds layer 0 with indices 5 7 7 (equal: a new pass). The k-th pass of every stream is pass k."""
    key = [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 5, 7, 7]
    layer = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0]
    file = [0] * 10 + [1] * 3
    req = list(range(13))
    r = group_rows(rows(req, [0] * 13, layer, rule_key=key, file=file, files=("log.csv", "b.csv")),
                   PassRule("reset", "batch"), PhaseRule())
    # pass 0: rows 0-5 and 10-11; pass 1: rows 6-9 and 12; layer 0 before layer 1, then row order
    assert (r.line - 2).tolist() == [0, 2, 4, 10, 11, 1, 3, 5, 6, 8, 12, 7, 9]
    assert pass_of_rows(r) == [0] * 8 + [1] * 5
    assert r.source.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0] and r.files == ["log.csv", "b.csv"]


def test_skipping_warm_up_passes() -> None:
    r = group_rows(rows(REQ, POS, LAYER, weight=True, annotate=True), PassRule("prompt"), PhaseRule(prompt_len=3),
                   skip_passes=1)
    # the r0 prefill is gone; r0's decode is pass 0, r1's prefill pass 1
    assert (r.line - 2).tolist() == [5, 11, 3, 4, 9, 10]
    assert pass_of_rows(r) == [0, 0, 1, 1, 1, 1] and r.phase.tolist() == [D, D, P, P, P, P]
    assert r.expert.tolist() == [5, 3, 3, 4, 1, 2] and r.weight.tolist() == pytest.approx([0.5, 0.3, 0.3, 0.4, 0.1, 0.2])
    assert r.annotations["score"].tolist() == [500, 300, 300, 400, 100, 200]
    with pytest.raises(UserError) as info:
        group_rows(rows(REQ, POS, LAYER), PassRule("prompt"), PhaseRule(prompt_len=3), skip_passes=3)
    assert str(info.value) == "--skip: --skip passes:3 leaves no pass (the log holds 3)"


def test_skipping_keeps_each_rows_own_phase() -> None:
    """column:step with a phase column; step 1 mixes a new prompt (prefill rows) with a decode token.
    After skipping step 0 every row keeps the phase its column gave, not one phase per pass."""
    r = group_rows(rows([0, 0, 1, 0], [0, 1, 0, 2], [0, 0, 0, 0], phase=[P, P, P, D], rule_key=[0, 0, 1, 1]),
                   PassRule("column", "step"), PhaseRule(), skip_passes=1)
    assert (r.line - 2).tolist() == [2, 3] and r.phase.tolist() == [P, D] and pass_of_rows(r) == [0, 0]


def test_no_rows_and_where_a_row_came_from() -> None:
    empty = rows([], [], [])
    with pytest.raises(UserError) as info:
        group_rows(empty, PassRule("prompt"), PhaseRule())
    assert str(info.value) == "log.csv: no routing rows left"
    with pytest.raises(UserError) as info:
        group_rows(rows([], [], [], files=()), PassRule("prompt"), PhaseRule())
    assert str(info.value) == "trace: no routing rows left"
    two = rows([0, 1], [0, 0], [0, 0], file=[0, 1], files=("a.jsonl", "b.jsonl"))
    assert two.at(1) == "b.jsonl: line 3" and two.n_rows == 2
    two.line_word = "row"
    assert two.at(0) == "a.jsonl: row 2"
    kept = two.take(np.array([False, True]))
    assert kept.at(0) == "b.jsonl: row 3" and kept.request.tolist() == [1] and kept.expert.tolist() == [1]


def test_one_token_prompts_and_the_token_rule_with_a_prompt_length() -> None:
    """prompt_len 1: each request's prompt is its position 0, a one-token prefill (phase from the prompt
    length, not inferred); positions 1 are decode passes of their own. Requests 0 and 1 back to back."""
    r = group_rows(rows([0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]), PassRule("prompt"), PhaseRule(prompt_len=1))
    assert pass_of_rows(r) == [0, 1, 2, 3] and r.phase.tolist() == [P, D, P, D]
    skipped = group_rows(rows([0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]), PassRule("prompt"), PhaseRule(prompt_len=1),
                         skip_passes=1)
    assert (skipped.line - 2).tolist() == [1, 2, 3] and skipped.phase.tolist() == [D, P, D]
    # the token rule keeps one pass per token even for prompt tokens; their phase is still prefill
    r = group_rows(rows([0, 0, 0], [0, 1, 2], [0, 0, 0]), parse_pass_rule("token"), PhaseRule(prompt_len=2))
    assert pass_of_rows(r) == [0, 1, 2] and r.phase.tolist() == [P, P, D]
    assert parse_pass_rule("prompt") == PassRule("prompt") and parse_pass_rule(" PROMPT") == PassRule("prompt")


def test_an_error_in_a_multi_file_log_names_the_file_and_line() -> None:
    """Rows from a.csv and b.csv (lines numbered from 2); b.csv's second row, line 4, names expert 9 of 4."""
    from moesim.traces.importers.assemble import assemble
    from moesim.traces.format.trace_meta import TraceMeta

    r = group_rows(rows([0, 1, 1], [0, 0, 1], [0, 0, 0], experts=[[0], [1], [9]], file=[0, 1, 1],
                        files=("a.csv", "b.csv")), PassRule("token"), PhaseRule())
    with pytest.raises(UserError) as info:
        assemble(r, TraceMeta(n_layers=1, n_experts=4, top_k=1, object_bytes=[8]), "logs/*.csv")
    assert str(info.value).startswith("b.csv: line 4")
