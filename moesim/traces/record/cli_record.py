"""`moesim record`: record a routing trace from a local Hugging Face MoE checkpoint.

torch and transformers are imported inside the command (the `record` extra), so `moesim --help`
works on a core install.
"""

from __future__ import annotations

import argparse
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.traces.record.routing_rules import ARCHITECTURES_DOC

_EPILOG = (
    "Weights are read from a local directory only (HF_HUB_OFFLINE=1; nothing is downloaded): point --model at a "
    "folder written by save_pretrained or `huggingface-cli download --local-dir`. Architectures: "
    + "; ".join(ARCHITECTURES_DOC.values())
    + ". Prompts: a .jsonl file of token-id lists, strings or objects, or a text file with one prompt per line."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record",
        help="record a routing trace from a local Hugging Face MoE model (greedy decoding, forward hooks)",
        description="Run greedy decoding on a local transformers MoE model and write the experts every token "
        "routed to, with gate weights, as a moesim trace.",
        epilog=_EPILOG,
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="local model directory (config.json + weights)")
    parser.add_argument("--prompts", required=True, metavar="FILE", help="prompts: .jsonl (token ids or text) or text")
    parser.add_argument("--out", required=True, metavar="T.parquet", help="trace file to write (atomically)")
    parser.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                        help="tokens to generate per prompt: 1 prefill + N-1 decode passes (default 32)")
    parser.add_argument("--batch", type=int, default=1, metavar="B",
                        help="sequences decoded together; each decode pass holds the group's sequences (default 1)")
    parser.add_argument("--lookahead", type=int, default=0, metavar="D",
                        help="also store, for d = 1..D, the experts layer l+d's gate picks from layer l's state")
    parser.add_argument("--top-n", type=int, default=None, metavar="N",
                        help="experts per lookahead prediction (default: the model's top-k)")
    parser.add_argument("--tokenizer", default=None, metavar="PATH",
                        help="tokenizer directory for text prompts (default: the model directory)")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="load the weights in this dtype (default: the checkpoint's)")
    parser.add_argument("--ignore-eos", action="store_true",
                        help="generate exactly N tokens per prompt even past an end-of-sequence token")
    add_json_flag(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from moesim.traces.record.recorder import RecordConfig, record

    config = RecordConfig(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch,
        lookahead=args.lookahead,
        top_n=args.top_n,
        device=args.device,
        dtype=args.dtype,
        stop_at_eos=not args.ignore_eos,
    )
    recording = record(args.model, args.prompts, config, tokenizer_path=args.tokenizer)
    from moesim.traces.format.io import save_trace

    save_trace(recording.trace, args.out)
    emit(args, _summary(recording, args.out), _render)
    return 0


def _summary(recording: Any, out: str) -> dict[str, Any]:
    trace = recording.trace
    m = trace.meta
    return {
        "out": out,
        "model": m.model,
        "moe_layers": m.n_layers,
        "experts": m.n_experts,
        "top_k": m.top_k,
        "expert_bytes": m.object_bytes[0] if m.object_bytes else 0,
        "requests": len(recording.sequences),
        "passes": trace.n_passes,
        "cells": trace.n_cells,
        "tokens": trace.n_tokens,
        "accesses": trace.n_accesses,
        "generated_tokens": sum(len(s) - n for s, n in zip(recording.sequences, recording.prompt_lengths)),
        "predictions": sorted(trace.predictions),
        "content_hash": trace.content_hash(),
    }


def _render(d: dict[str, Any]) -> str:
    return (
        f"wrote {d['out']}: {d['model']}, {d['moe_layers']} MoE layers x {d['experts']} experts (top-{d['top_k']}, "
        f"{d['expert_bytes']} B each)\n"
        f"  {d['requests']} requests, {d['generated_tokens']} generated tokens, {d['passes']} passes, "
        f"{d['cells']} cells, {d['accesses']} routed accesses"
        + (f"\n  predictions: {', '.join(d['predictions'])}" if d["predictions"] else "")
    )
