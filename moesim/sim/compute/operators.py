"""Non-expert compute of every cell, operator by operator (docs/metrics.md, "Compute").

Each operator is a roofline on the processor that runs it plus its framework kernels:
    t(op) = max(bytes / processor.memory_bandwidth, flops / rate) + kernels(op) x kernel_overhead
rate = peak(processor, dtype) for one token per weight read (matrix-vector), the processor's
batched_flops for more where it states one (matrix-matrix; processors.matrix_rate); the token count
is the cell's T, the LM head's S.
and a cell's operators run one after another on that processor's stream. With T query tokens in a
cell, P (query, context position) pairs, R cached positions read over its sequences (see
moesim/sim/compute/context.py) and the layer's shapes (moesim/sim/compute/shapes.py):
    attention  bytes = W_qkvo + W_norms + (R + T) x kv_bytes_per_position     (weights, KV read, KV write)
               flops = 2 x params_qkvo x T + P x attn_flops_per_pair
    router     bytes = W_router,  flops = 2 x n_routed x hidden x T
    shared     bytes = W_shared,  flops = 2 x params_shared x T                 (shared experts, MoE layers)
    dense FFN  bytes = W_ffn,     flops = 2 x params_ffn x T                    (non-MoE layers)
    embedding  bytes = T_pass x hidden x bytes_per_param                        (first layer, once per pass)
    LM head    bytes = vocab x hidden x bytes_per_param, flops = 2 x vocab x hidden x S   (last layer;
               S = sequences in the pass: one logits row each)
Before the layer's experts: embedding (first traced cell of a pass), model layers no trace cell
stands for, attention, router. After them: shared experts, dense FFN, LM head (last cell of a pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moesim.sim.compute.context import cell_attention_counts, pass_sequences
from moesim.sim.compute.processors import LAUNCH_FACTOR, Processor, kernels, matrix_rate
from moesim.sim.compute.shapes import OperatorShapes
from moesim.traces.format.trace import Trace


@dataclass(frozen=True)
class NonExpertTimes:
    """Seconds per cell on the device processor, split around the layer's experts, and by operator."""

    pre: np.ndarray
    post: np.ndarray
    by_operator: dict[str, np.ndarray]

    @property
    def total(self) -> np.ndarray:
        return self.pre + self.post


def roofline(nbytes: np.ndarray | float, flops: np.ndarray | float, proc: Processor, dtype: str,
             tokens: np.ndarray | float = 1.0) -> np.ndarray:
    """max(bytes / bandwidth, FLOPs / rate), the rate by `tokens` per weight read (processors.matrix_rate)."""
    return np.maximum(np.asarray(nbytes, dtype=np.float64) / proc.memory_bandwidth,
                      np.asarray(flops, dtype=np.float64) / matrix_rate(proc, dtype, tokens))


def overhead(proc: Processor, framework: str, operator: str) -> float:
    return kernels(framework, operator) * proc.kernel_overhead * LAUNCH_FACTOR.get(framework, 1.0)


def non_expert_times(trace: Trace, shapes: OperatorShapes, proc: Processor, framework: str) -> NonExpertTimes:
    """Per-cell non-expert seconds (module docstring), every model layer charged once per pass."""
    n_cells = trace.n_cells
    dtype = shapes.dense_dtype
    counts = {w: cell_attention_counts(trace, int(w)) for w in np.unique(shapes.window).tolist()}
    model_layer = shapes.trace_to_model[trace.cell_layer.astype(np.int64)]
    cells = np.arange(n_cells)
    ops = _layer_ops(model_layer, cells, trace, shapes, counts, proc, framework, dtype)

    # model layers without a traced cell in this pass (dense first layers; layers a pass skipped):
    # their whole time goes before the next traced cell's experts (after the last one: its post part)
    skipped_pre, skipped_post = np.zeros(n_cells), np.zeros(n_cells)
    m_pairs, c_pairs, is_post = _untraced_pairs(trace, model_layer, shapes.n_model_layers)
    if m_pairs.size:
        extra = sum(_layer_ops(m_pairs, c_pairs, trace, shapes, counts, proc, framework, dtype).values())
        skipped_pre = np.bincount(c_pairs[~is_post], weights=extra[~is_post], minlength=n_cells)
        skipped_post = np.bincount(c_pairs[is_post], weights=extra[is_post], minlength=n_cells)

    first, last = _pass_ends(trace)
    tokens_pass = np.diff(trace.pass_token_offsets.astype(np.float64))
    cell_pass = trace.cell_pass().astype(np.int64)
    embed = np.zeros(n_cells)
    embed[first] = roofline(tokens_pass[cell_pass[first]] * shapes.embedding_bytes_per_token, 0.0, proc, dtype) \
        + overhead(proc, framework, "embedding")
    head = np.zeros(n_cells)
    if shapes.lm_head_params:
        seqs = pass_sequences(trace)[cell_pass[last]]
        head[last] = roofline(shapes.lm_head_bytes, 2.0 * shapes.lm_head_params * seqs, proc, dtype, seqs) \
            + overhead(proc, framework, "lm_head")
    ops["embedding"], ops["lm_head"] = embed, head
    ops["untraced_layers"] = skipped_pre + skipped_post
    pre = embed + skipped_pre + ops["attention"] + ops["router"]
    post = ops["shared"] + ops["dense_ffn"] + head + skipped_post
    return NonExpertTimes(pre=pre, post=post, by_operator=ops)


def _layer_ops(m: np.ndarray, c: np.ndarray, trace: Trace, s: OperatorShapes,
               counts: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]], proc: Processor, framework: str,
               dtype: str) -> dict[str, np.ndarray]:
    """Seconds per operator of model layer m[i] run over cell c[i]'s tokens."""
    t, pairs, reads = (np.zeros(m.size) for _ in range(3))
    win = s.window[m]
    for w, (tw, pw, rw) in counts.items():
        sel = win == w
        t[sel], pairs[sel], reads[sel] = tw[c[sel]], pw[c[sel]], rw[c[sel]]
    kv = (reads + t) * s.kv_bytes_per_position[m]
    attn_bytes = s.attn_bytes[m] + s.other_bytes[m] + kv
    attn_flops = 2.0 * s.attn_params[m] * t + pairs * s.attn_flops_per_pair[m]
    out = {"attention": roofline(attn_bytes, attn_flops, proc, dtype, t) + overhead(proc, framework, "attention")}
    for name, params, nbytes in (("router", s.router_params, s.router_bytes),
                                 ("shared", s.shared_params, s.shared_bytes),
                                 ("dense_ffn", s.ffn_params, s.ffn_bytes)):
        has = params[m] > 0
        out[name] = np.where(has, roofline(nbytes[m], 2.0 * params[m] * t, proc, dtype, t)
                             + overhead(proc, framework, name), 0.0)
    return out


def _pass_ends(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """First and last cell of every non-empty pass."""
    off = trace.pass_cell_offsets.astype(np.int64)
    nonempty = off[1:] > off[:-1]
    return off[:-1][nonempty], off[1:][nonempty] - 1


def _untraced_pairs(trace: Trace, model_layer: np.ndarray, n_model: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(model layer, cell charged, charged after the experts) for every model layer a pass has no cell for."""
    first, last = _pass_ends(trace)
    ms: list[int] = []
    cs: list[int] = []
    post: list[bool] = []
    if np.all(last - first + 1 == n_model) and np.unique(model_layer).size == n_model:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    for a, b in zip(first.tolist(), last.tolist()):
        have = model_layer[a : b + 1]
        present = np.zeros(n_model, dtype=bool)
        present[have] = True
        missing = np.flatnonzero(~present)
        if missing.size == 0:
            continue
        order = np.argsort(have, kind="stable")
        idx = np.searchsorted(have[order], missing)
        for m, i in zip(missing.tolist(), idx.tolist()):
            ms.append(m)
            cs.append(a + int(order[i]) if i < have.size else b)
            post.append(i >= have.size)
    return np.asarray(ms, np.int64), np.asarray(cs, np.int64), np.asarray(post, bool)
