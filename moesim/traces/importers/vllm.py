"""vLLM routed-experts arrays: `[tokens, layers, top_k]` integer expert ids (.npy).

vLLM's `--enable-return-routed-experts` returns, per request, the expert ids every token routed to
at every MoE layer. The array does not say where the prompt ends, how many experts a layer has or
how big they are, so options do:

- seq_lens: tokens per sequence when the array stacks several requests (default: one request);
- prefill_len: prompt tokens of each sequence (one value for all, or one per sequence; default 0:
  every token is a decode step). The prompt is one prefill pass (layer-major), every later token
  one decode pass. Sequences are replayed one after another: no batching is reconstructed.
- n_experts (default: largest id + 1, recorded as inferred), expert_bytes, model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.assemble import Routes, assemble
from moesim.traces.importers.common import object_bytes, provenance, sha256_of
from moesim.traces.importers.npy import load_npy, npy_header
from moesim.traces.importers.options import Options
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta

NAME = "vllm"
SUMMARY = "vLLM routed experts .npy: [tokens, layers, top_k] integer expert ids (integer .npy files)"
COUNTS_HINT = " (a MoE-Infinity count matrix needs --format moe-infinity)"
OPTIONS = {
    "seq_lens": "tokens per sequence, comma-separated (default: the whole array is one sequence)",
    "prefill_len": "prompt tokens per sequence: one value or one per sequence (default 0: all decode)",
    "n_experts": "experts per layer (default: largest id + 1)",
    "expert_bytes": "bytes per expert: one size or one per layer (e.g. '3 MiB'); default from the catalog entry of "
                    "--option model, else unknown",
    "model": "model name to record (a catalog name such as qwen3-30b-a3b also gives the expert size)",
}


def sniff(path: Path) -> bool:
    header = npy_header(path)
    return header is not None and len(header[0]) == 3 and np.issubdtype(header[1], np.integer)


def load(path: Path, options: Options) -> Any:
    where = str(path)
    array = load_npy(path, 3)
    if not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"expert ids must be integers, got dtype {array.dtype} "
                        "(a float array of counts is a MoE-Infinity matrix: --format moe-infinity)", where)
    n_tokens, n_layers, top_k = array.shape
    if n_tokens == 0 or n_layers == 0 or top_k == 0:
        raise UserError(f"empty array of shape {array.shape}", where)
    if n_layers > np.iinfo(np.int16).max:
        raise UserError(f"{n_layers} layers is more than a trace holds", where)
    ids = array.astype(np.int64)
    negative = np.argwhere(ids < 0)
    if negative.size:
        t, layer, _ = (int(v) for v in negative[0])
        raise UserError(f"layer {layer}: expert id {int(ids[t, layer].min())} is negative", f"{where}: token {t}")
    largest = int(ids.max())
    n_experts = options.int("n_experts", minimum=1)
    inferred = n_experts is None
    if n_experts is None:
        n_experts = largest + 1
    if n_experts > np.iinfo(np.int32).max or top_k > n_experts:
        raise UserError(f"{n_experts} experts at top-{top_k} is out of range{COUNTS_HINT}", where)
    ordered = np.sort(ids, axis=2)
    twice = np.argwhere(ordered[:, :, 1:] == ordered[:, :, :-1])
    if twice.size:
        t, layer, i = (int(v) for v in twice[0])
        raise UserError(f"layer {layer}: expert {int(ordered[t, layer, i])} appears twice for one token{COUNTS_HINT}",
                        f"{where}: token {t}")
    seq_lens = options.int_list("seq_lens", minimum=1) or [n_tokens]
    if sum(seq_lens) != n_tokens:
        raise UserError(f"sums to {sum(seq_lens)} tokens; the array has {n_tokens}", "--option seq_lens")
    prefill = options.int_list("prefill_len", minimum=0) or [0]
    if len(prefill) == 1:
        prefill = prefill * len(seq_lens)
    if len(prefill) != len(seq_lens):
        raise UserError(f"gives {len(prefill)} values for {len(seq_lens)} sequences", "--option prefill_len")
    bad = [i for i, (p, s) in enumerate(zip(prefill, seq_lens)) if p > s]
    if bad:
        raise UserError(f"sequence {bad[0]} has {seq_lens[bad[0]]} tokens, fewer than its prefill "
                        f"{prefill[bad[0]]}", "--option prefill_len")
    extra: dict[str, Any] = {}
    if inferred:
        extra["n_experts_inferred"] = True
    sizes, size_note = object_bytes(options, options.text("model"), n_layers, n_experts, extra)
    meta = TraceMeta(
        n_layers=n_layers,
        n_experts=n_experts,
        top_k=top_k,
        object_bytes=sizes,
        model=options.text("model"),
        provenance=provenance("vLLM routed experts", path, sha256_of([path]),
                              seq_lens=seq_lens, prefill_lens=prefill, object_bytes_from=size_note),
        extra=extra,
    )
    return assemble(_routes(ids, seq_lens, prefill), meta, where, line_word="token")


def _routes(ids: np.ndarray, seq_lens: list[int], prefill: list[int]) -> Routes:
    """Prefill rows layer-major (all prompt tokens of layer 0, then 1, ...), decode rows token-major."""
    n_layers = ids.shape[1]
    token_parts, layer_parts, seq_parts, phase_parts, new_parts = [], [], [], [], []
    start = 0
    for s, (length, p) in enumerate(zip(seq_lens, prefill)):
        if p:
            token_parts.append(np.tile(np.arange(start, start + p), n_layers))
            layer_parts.append(np.repeat(np.arange(n_layers), p))
            phase_parts.append(np.full(p * n_layers, PREFILL))
            first = np.zeros(p * n_layers, dtype=bool)
            first[0] = True
            new_parts.append(first)
        decode = length - p
        if decode:
            token_parts.append(np.repeat(np.arange(start + p, start + length), n_layers))
            layer_parts.append(np.tile(np.arange(n_layers), decode))
            phase_parts.append(np.full(decode * n_layers, DECODE))
            first = np.zeros(decode * n_layers, dtype=bool)
            first[::n_layers] = True
            new_parts.append(first)
        seq_parts.append(np.full(length * n_layers, s))
        start += length
    token = np.concatenate(token_parts)
    layer = np.concatenate(layer_parts)
    seq = np.concatenate(seq_parts)
    seq_start = np.concatenate([[0], np.cumsum(seq_lens)[:-1]])
    k = ids.shape[2]
    return Routes(
        line=token,
        new_pass=np.concatenate(new_parts),
        phase=np.concatenate(phase_parts),
        request=seq,
        position=token - seq_start[seq],
        layer=layer,
        expert_offsets=np.arange(token.size + 1, dtype=np.int64) * k,
        expert=ids[token, layer].reshape(-1),
    )


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    from moesim.traces.importers.npy import npy_bytes

    return [Example.file("npy", "t.npy", npy_bytes(np.array([[[0, 1], [2, 3]], [[3, 1], [0, 2]]], dtype=np.int16)),
                         prefill_len=1)]
