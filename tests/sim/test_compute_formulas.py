"""The compute model's mechanisms, one at a time, against counts and times worked out by hand.

Attention's context counts (moesim/sim/compute/context.py) on batched, multi-pass traces with
suffix cells and sliding windows; the non-expert operators (moesim/sim/compute/operators.py) in the
dense dtype, for several sequences, for model layers a pass has no cell for and for empty passes.
The small model is tests/sim/test_compute_operators.py's (per layer at 2 B/param: attention 24576 B
+ norms 256 B, KV 128 B per position, router 512 B, shared expert 18432 B; LM head 12800 B; one
embedding row 128 B). These pin formulas (FLOPs, bytes, positions read), not fitted constants.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.sim.compute import compute_model, non_expert_cell_times
from moesim.sim.compute.context import cell_attention_counts, pass_sequences
from moesim.sim.compute.processors import Processor
from moesim.traces.models.catalog import model_from_mapping
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace
from tests.sim.test_compute_operators import EXPERT_BYTES, TINY, US, _Profile, proc, tiny_spec

# decode, one token at position 9, 1 GB/s, bytes-bound (test_compute_operators.py's first case), in us
ATT, ROUTER, SHARED, EMBED, HEAD = 26.24, 0.512, 18.432, 0.128, 12.8
LAYER = ATT + ROUTER + SHARED  # a whole MoE layer's non-expert time for that token


def batched_trace():
    """Three passes of two sequences (requests 0 and 1) over three layers; pass 0's layers 1 and 2 hold
    only the pass's last 4 and last 1 tokens (llama.cpp prunes the last layer to the final token)."""
    meta = TraceMeta(n_layers=3, n_experts=4, top_k=1, object_bytes=[EXPERT_BYTES] * 3)
    p0 = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    p1 = [(0, 3), (1, 2)]
    p2 = [(0, 4)]
    return build_trace(meta, [
        {"phase": PREFILL, "tokens": p0, "cells": [(0, [[0]] * 5), (1, [[0]] * 4), (2, [[0]])]},
        {"phase": DECODE, "tokens": p1, "cells": [(layer, [[1]] * 2) for layer in range(3)]},
        {"phase": DECODE, "tokens": p2, "cells": [(layer, [[2]]) for layer in range(3)]},
    ])


def test_attention_counts_for_full_and_suffix_cells_over_passes() -> None:
    """Window 0: a query at position p attends to p + 1 positions; each sequence's cache is read once
    per cell, up to its largest position in the cell.
    pass 0 spans (p + 1) = 1, 1, 2, 2, 3 (requests 0, 1, 0, 1, 0):
      layer 0, all 5 tokens:         pairs 9,            reads 3 (request 0) + 2 (request 1) = 5
      layer 1, last 4 (1,0)..(0,2):  pairs 1+2+2+3 = 8,  reads 3 + 2 = 5
      layer 2, last token (0,2):     pairs 3,            reads 3
    pass 1 (0,3), (1,2): spans 4, 3: pairs 7, reads 7;  pass 2 (0,4): pairs 5, reads 5."""
    tokens, pairs, reads = cell_attention_counts(batched_trace(), 0)
    assert tokens.tolist() == [5, 4, 1, 2, 2, 2, 1, 1, 1]
    assert pairs.tolist() == [9, 8, 3, 7, 7, 7, 5, 5, 5]
    assert reads.tolist() == [5, 5, 3, 7, 7, 7, 5, 5, 5]
    assert pass_sequences(batched_trace()).tolist() == [2, 2, 1]


def test_suffix_cells_of_every_length_read_each_sequence_once() -> None:
    """One prefill pass of tokens (0,0) (1,0) (0,1) (1,1) (0,2): spans 1, 1, 2, 2, 3. Cells hold the last
    1 token: (0,2) -> reads 3; 0 tokens -> 0; the last 2: (1,1), (0,2) -> 2 + 3 = 5; the last 3: (0,1),
    (1,1), (0,2) -> request 0's largest span 3 + request 1's 2 = 5 (pairs 2 + 2 + 3 = 7)."""
    meta = TraceMeta(n_layers=5, n_experts=4, top_k=1, object_bytes=[EXPERT_BYTES] * 5)
    tokens = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    trace = build_trace(meta, [{"phase": PREFILL, "tokens": tokens, "cells": [
        (0, [[0]] * 5), (1, [[0]]), (2, []), (3, [[0]] * 2), (4, [[0]] * 3)]}])
    n, pairs, reads = cell_attention_counts(trace, 0)
    assert n.tolist() == [5, 1, 0, 2, 3]
    assert pairs.tolist() == [9, 3, 0, 5, 7]
    assert reads.tolist() == [5, 3, 0, 5, 5]


def test_passes_without_tokens_read_nothing() -> None:
    """A pass whose cell holds no token (a layer the log recorded empty) attends to nothing; a trace of
    such passes only has no sequence at all."""
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=1, object_bytes=[EXPERT_BYTES])
    mixed = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 4)], "cells": [(0, [[0]])]},
                               {"phase": DECODE, "tokens": [], "cells": [(0, [])]}])
    assert [a.tolist() for a in cell_attention_counts(mixed, 0)] == [[1, 0], [5, 0], [5, 0]]
    assert pass_sequences(mixed).tolist() == [1, 0]
    empty = build_trace(meta, [{"phase": DECODE, "tokens": [], "cells": [(0, [])]}])
    assert [a.tolist() for a in cell_attention_counts(empty, 0)] == [[0], [0], [0]]
    assert pass_sequences(empty).tolist() == [0]


def test_attention_counts_under_a_sliding_window() -> None:
    """Window 2: spans min(p + 1, 2): pass 0 1, 1, 2, 2, 2; pass 1 2, 2; pass 2 2.
    Window 1: every span 1, so pairs = tokens and reads = sequences in the cell."""
    _, pairs, reads = cell_attention_counts(batched_trace(), 2)
    assert pairs.tolist() == [8, 7, 2, 4, 4, 4, 2, 2, 2]
    assert reads.tolist() == [4, 4, 2, 4, 4, 4, 2, 2, 2]
    _, pairs, reads = cell_attention_counts(batched_trace(), 1)
    assert pairs.tolist() == [5, 4, 1, 2, 2, 2, 1, 1, 1]
    assert reads.tolist() == [2, 2, 1, 2, 2, 2, 1, 1, 1]


def test_each_layer_reads_the_kv_positions_of_its_own_window() -> None:
    """Layer 0 slides over 4 positions, layer 1 attends to all: at position 9 layer 0 reads 4 cached
    positions and writes 1 (24576 + 256 + 5 x 128 = 25472 B), layer 1 reads 10 (26240 B); 1 GB/s."""
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES] * 2, model="tiny")
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 9)], "cells": [(0, [[0, 1]]), (1, [[0, 1]])]}])
    spec = tiny_spec(sliding_window=4, sliding_layers=[0])
    att = non_expert_cell_times(trace, compute_model(trace, _Profile(proc()), spec)).by_operator["attention"]
    assert att.tolist() == pytest.approx([25.472 * US, 26.24 * US], rel=1e-12)


def test_dense_operators_run_at_the_peak_of_the_dense_dtype() -> None:
    """Dense weights in fp32 (4 B/param) on a processor with bf16 1 GFLOP/s and fp32 0.25 GFLOP/s and
    a 1 PB/s memory: every operator is compute-bound at the fp32 peak. Prefill of 64 tokens:
      attention 2 x 12288 x 64 + 2080 pairs x 256 = 2105344 FLOPs -> 8421.376 us
      router 2 x 256 x 64 = 32768 -> 131.072 us;  shared 2 x 9216 x 64 = 1179648 -> 4718.592 us
      LM head 2 x 6400 x 1 sequence = 12800 -> 51.2 us
      embedding: no FLOPs, 64 rows x 64 x 4 B = 16384 B -> 16.384 ps"""
    spec = model_from_mapping({**TINY, "dense_dtype": "fp32"}, "tiny")
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES] * 2, model="tiny")
    trace = build_trace(meta, [{"phase": PREFILL, "tokens": [(0, p) for p in range(64)],
                                "cells": [(layer, [[0, 1]] * 64) for layer in range(2)]}])
    p = Processor("gpu", "gpu", "vram", {"bf16": 1e9, "fp32": 0.25e9}, 1e15, 0.0)
    ops = non_expert_cell_times(trace, compute_model(trace, _Profile(p), spec)).by_operator
    assert ops["attention"].tolist() == pytest.approx([8421.376 * US] * 2, rel=1e-12)
    assert ops["router"].tolist() == pytest.approx([131.072 * US] * 2, rel=1e-12)
    assert ops["shared"].tolist() == pytest.approx([4718.592 * US] * 2, rel=1e-12)
    assert ops["lm_head"].tolist() == pytest.approx([0.0, 51.2 * US], rel=1e-12)
    assert ops["embedding"].tolist() == pytest.approx([16384 / 1e15, 0.0], rel=1e-12)


def test_an_untraced_dense_layer_also_runs_at_the_dense_dtype_peak() -> None:
    """Model layer 0 dense (FFN 96), layers 1-2 MoE, weights fp32, traced MoE layers only; the same
    compute-bound processor. Layer 0, charged before the first cell's experts: attention 8421.376 us
    (as above) + FFN 2 x (3 x 64 x 96) x 64 tokens = 2,359,296 FLOPs -> 9437.184 us = 17858.56 us."""
    doc = {**TINY, "n_layers": 3, "moe_layers": [1, 2], "dense_ffn": {"intermediate_size": 96}, "dense_dtype": "fp32"}
    spec = model_from_mapping(doc, "tiny3")
    meta = TraceMeta(n_layers=2, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES] * 2, model="tiny")
    trace = build_trace(meta, [{"phase": PREFILL, "tokens": [(0, p) for p in range(64)],
                                "cells": [(layer, [[0, 1]] * 64) for layer in range(2)]}])
    p = Processor("gpu", "gpu", "vram", {"bf16": 1e9, "fp32": 0.25e9}, 1e15, 0.0)
    ops = non_expert_cell_times(trace, compute_model(trace, _Profile(p), spec)).by_operator
    assert ops["untraced_layers"].tolist() == pytest.approx([17858.56 * US, 0.0], rel=1e-12)


def test_the_lm_head_computes_one_logits_row_per_sequence() -> None:
    """Two sequences decoding in one pass, compute-bound (1 GFLOP/s, 1 PB/s): 2 x 6400 x 2 = 25600 FLOPs
    -> 25.6 us (one row per sequence, not per pass)."""
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES], model="tiny")
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 9), (1, 19)], "cells": [(0, [[0, 1], [0, 1]])]}])
    spec = model_from_mapping({**TINY, "n_layers": 1}, "tiny")
    ops = non_expert_cell_times(trace, compute_model(trace, _Profile(proc(bw=1e15, flops=1e9)), spec)).by_operator
    assert ops["lm_head"].tolist() == pytest.approx([25.6 * US], rel=1e-12)


def _three_layer_trace(passes: list[list[int]]):
    """One decode token per pass (request k at position 9 in pass k) with cells at the listed layers."""
    meta = TraceMeta(n_layers=3, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES] * 3, model="tiny")
    return build_trace(meta, [{"phase": DECODE, "tokens": [(k, 9)], "cells": [(layer, [[0, 1]]) for layer in layers]}
                              for k, layers in enumerate(passes)])


def test_layers_a_pass_skips_are_charged_to_its_next_traced_cell_or_after_its_last() -> None:
    """Three MoE layers; pass 0 has all three, pass 1 skips layer 1 (charged before the layer-2 cell's
    experts), pass 2 skips layer 0 (before its first cell), pass 3 skips layer 2 (after its last cell).
    A skipped layer costs its attention + router + shared expert: 45.184 us at position 9."""
    spec = model_from_mapping({**TINY, "n_layers": 3}, "tiny")
    trace = _three_layer_trace([[0, 1, 2], [0, 2], [1, 2], [0, 1]])
    ne = non_expert_cell_times(trace, compute_model(trace, _Profile(proc()), spec))
    #       p0: l0      l1     l2     p1: l0  l2      p2: l1  l2      p3: l0  l1
    skipped = [0, 0, 0, 0, LAYER, LAYER, 0, 0, LAYER]
    assert ne.by_operator["untraced_layers"].tolist() == pytest.approx([s * US for s in skipped], rel=1e-12)
    a = ATT + ROUTER
    pre = [EMBED + a, a, a, EMBED + a, a + LAYER, EMBED + a + LAYER, a, EMBED + a, a]
    post = [SHARED, SHARED, SHARED + HEAD, SHARED, SHARED + HEAD, SHARED, SHARED + HEAD, SHARED, SHARED + HEAD + LAYER]
    assert ne.pre.tolist() == pytest.approx([x * US for x in pre], rel=1e-12)
    assert ne.post.tolist() == pytest.approx([x * US for x in post], rel=1e-12)
    # without the full pass: every pass is partial although together they hold every layer
    partial = _three_layer_trace([[0, 2], [1, 2], [0, 1]])
    ne = non_expert_cell_times(partial, compute_model(partial, _Profile(proc()), spec))
    assert ne.by_operator["untraced_layers"].tolist() == pytest.approx([0, LAYER * US, LAYER * US, 0, 0, LAYER * US],
                                                                       rel=1e-12)


def test_a_traced_dense_layer_runs_its_dense_ffn_after_the_cell() -> None:
    """Model layer 0 dense (FFN 96: 3 x 64 x 96 x 2 B = 36864 B -> 36.864 us), traced one to one: its
    cell's post part is the dense FFN (no router, no shared expert); layers 1-2 are MoE."""
    spec = model_from_mapping({**TINY, "n_layers": 3, "moe_layers": [1, 2], "dense_ffn": {"intermediate_size": 96}},
                              "tiny3")
    trace = _three_layer_trace([[0, 1, 2]])
    ne = non_expert_cell_times(trace, compute_model(trace, _Profile(proc()), spec))
    assert ne.by_operator["dense_ffn"].tolist() == pytest.approx([36.864 * US, 0, 0], rel=1e-12)
    assert ne.post.tolist() == pytest.approx([36.864 * US, SHARED * US, (SHARED + HEAD) * US], rel=1e-12)
    assert ne.pre.tolist() == pytest.approx([(EMBED + ATT) * US, (ATT + ROUTER) * US, (ATT + ROUTER) * US],
                                            rel=1e-12)


def test_a_pass_without_cells_charges_no_embedding_or_lm_head() -> None:
    """An empty pass between two one-layer passes: the embedding goes to each non-empty pass's first
    cell, the LM head to its last, and nothing to the neighbours of the empty pass (no layer of the
    empty pass is charged as skipped either: it ran no layer)."""
    meta = TraceMeta(n_layers=1, n_experts=4, top_k=2, object_bytes=[EXPERT_BYTES], model="tiny")
    trace = build_trace(meta, [{"phase": DECODE, "tokens": [(0, 9)], "cells": [(0, [[0, 1]])]},
                               {"phase": DECODE, "tokens": [(1, 9)], "cells": []},
                               {"phase": DECODE, "tokens": [(2, 9)], "cells": [(0, [[0, 1]])]}])
    spec = model_from_mapping({**TINY, "n_layers": 1}, "tiny")
    ops = non_expert_cell_times(trace, compute_model(trace, _Profile(proc()), spec)).by_operator
    assert ops["embedding"].tolist() == pytest.approx([EMBED * US] * 2, rel=1e-12)
    assert ops["lm_head"].tolist() == pytest.approx([HEAD * US] * 2, rel=1e-12)
    assert ops["untraced_layers"].tolist() == [0.0, 0.0]
