"""Small router logs of each layout moesim imports, written by hand for the tests (no real logs).

Each builder writes its files and returns the path to import; the expected passes, tokens,
requests, phases and layers are counted by hand in the tests that use them.
"""

from __future__ import annotations

import json
from pathlib import Path

# Layer-major log of one request: every token of layer 0, then every token of layer 1.
# Tokens 0..2 are the prompt, 3 and 4 decode steps. experts[t][layer] are the token's top-2.
LAYER_MAJOR_EXPERTS = {
    0: [[0, 1], [2, 3], [1, 2], [3, 0], [1, 3]],
    1: [[4, 5], [6, 7], [5, 6], [7, 4], [5, 7]],
}


def layer_major_jsonl(folder: Path, problem: str = "p-17") -> Path:
    path = folder / "layer_major.jsonl"
    lines = []
    for layer, per_token in LAYER_MAJOR_EXPERTS.items():
        for token, experts in enumerate(per_token):
            lines.append({"problem_id": problem, "layer": layer, "experts": experts,
                          "gating_probs": [0.75, 0.25], "token_idx": token})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# Batched log, one file per logged layer (0 and 8), a token index that restarts every forward
# pass, string request ids and a meta line. Batches (request of each slot, in slot order):
WARMUP = ["dummy"] * 12  # a serving engine's profiling pass: 12 tokens of a request never seen again
BATCHES = [
    ["r1", "r1", "r1", "r2", "r2"],  # prefill of both prompts (r1: 3 tokens, r2: 2 tokens)
    ["r1", "r2"],                    # decode step 1
    ["r1", "r2"],                    # decode step 2
    ["r1"],                          # decode step 3 (r2 finished)
]


def batched_experts(layer: int, batch: int, slot: int) -> list[int]:
    base = (3 * batch + slot + layer) % 8
    return [base, (base + 3) % 8]


def batched_layer_files(folder: Path, warmup: bool = True, drop_slot: tuple[int, int, int] | None = None) -> Path:
    """moe_layer0.jsonl and moe_layer8.jsonl; `drop_slot` (layer, batch, slot) leaves one row out."""
    logs = folder / "logs"
    logs.mkdir()
    batches = ([WARMUP] if warmup else []) + BATCHES
    for layer in (0, 8):
        lines = [json.dumps({"model_id": "toy-moe", "num_experts": 8, "top_k": 2, "layers_logged": [0, 8],
                             "expert_bytes": "1 MiB"})]
        for b, requests in enumerate(batches):
            for slot, request in enumerate(requests):
                if drop_slot == (layer, b, slot):
                    continue
                lines.append(json.dumps({"req_id": request, "token": slot, "experts": batched_experts(layer, b, slot)}))
        (logs / f"moe_layer{layer}.jsonl").write_text("\n".join(lines) + "\n")
    return logs


def megatron_jsonl(folder: Path) -> Path:
    """Two steps (a 3-token prompt, one decode token) at Megatron layers 1 and 2, plus records to leave out."""
    records = [
        {"step": 0, "layer": 1, "top_indices": [[0, 1], [2, 3], [1, 2]]},
        {"step": 0, "layer": 2, "top_indices": [[3, 1], [0, 3], [2, 0]]},
        {"step": 0, "layer": 1, "top_indices": [[3, 1], [0, 3], [2, 0]], "block": "mtp", "mtp_idx": 0},
        {"step": 0, "layer": 1, "top_indices": [[0, 1], [2, 3], [1, 2]], "stage": "post_dispatch"},
        {"step": 1, "layer": 1, "top_indices": [[1, 2]]},
        {"step": 1, "layer": 2, "top_indices": [[0, 2]]},
        {"step": 1, "layer": 2, "top_indices": [[0, 2]], "rank": 1},
    ]
    path = folder / "router_trace_rank0.jsonl"
    lines = []
    for r in records:
        full = {"step": r["step"], "stage": r.get("stage", "pre_dispatch"), "block": r.get("block", "decoder"),
                "layer": r["layer"], "rank": r.get("rank", 0), "num_tokens": len(r["top_indices"]), "topk": 2,
                "top_indices": r["top_indices"]}
        if "mtp_idx" in r:
            full["mtp_idx"] = r["mtp_idx"]
        lines.append(json.dumps(full))
    path.write_text("\n".join(lines) + "\n")
    return path


def moecap_per_token(folder: Path) -> Path:
    """Two forward passes over 3 layers; layer 0 is dense (all -1), pass 1 pads layer 2's second row."""
    records = [
        {"forward_pass_id": 5, "rank": 0, "forward_mode": "prefill", "num_tokens": 2, "topk": 2,
         "topk_ids": [[[-1, -1], [-1, -1]], [[0, 3], [1, 2]], [[2, 3], [0, 1]]]},
        {"forward_pass_id": 6, "rank": 0, "forward_mode": "decode", "num_tokens": 1, "topk": 2,
         "topk_ids": [[[-1, -1]], [[3, 1]], [[1, 0]]]},
        {"forward_pass_id": 6, "rank": 1, "forward_mode": "decode", "num_tokens": 1, "topk": 2,
         "topk_ids": [[[-1, -1]], [[2, 1]], [[1, 3]]]},
    ]
    path = folder / "expert_distribution_record.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def moecap_per_pass(folder: Path) -> Path:
    """Counts only: pass 1 routes 3 tokens x top-2 at layer 0, pass 2 one token; layer 1 holds nothing."""
    records = {"records": [
        {"forward_pass_id": 1, "rank": 0, "expert_counts": [[2, 1, 3, 0], [0, 0, 0, 0]], "expert_utilization": 0.4},
        {"forward_pass_id": 2, "rank": 0, "expert_counts": [[0, 1, 0, 1], [0, 0, 0, 0]], "expert_utilization": 0.2},
    ], "rank": 0, "num_layers": 2, "num_experts": 4}
    path = folder / "per_pass.json"
    path.write_text(json.dumps(records))
    return path


def activation_csv(folder: Path) -> Path:
    """DeepSeek-V2-Lite style dump: MoE layers 1 and 2, batch 0 a 3-token prompt, batches 1 and 2 one token."""
    rows = ["Layer ID,Batch Number,Token,Activated Expert IDs"]
    tokens = {0: ["The", "cat", "sat"], 1: ["on"], 2: ["the"]}
    for batch, words in tokens.items():
        for layer in (1, 2):
            for i, word in enumerate(words):
                base = (batch * 5 + i * 2 + layer) % 16
                rows.append(f'{layer},{batch},{word},"[{base}, {(base + 1) % 16}, {(base + 7) % 16}]"')
    path = folder / "activations.csv"
    path.write_text("\n".join(rows) + "\n")
    return path
