"""Record a routing trace from a Hugging Face transformers MoE model: greedy decoding with forward hooks.

What is recorded, and from where (transformers >= 5, where every MoE block calls its fused experts
module as `experts(hidden, top_k_index, top_k_weights)`):
- experts and gate weights: the arguments of that call, i.e. exactly what the model applies, after
  each architecture's own normalisation (norm_topk_prob, DeepSeek's routed_scaling_factor and group
  limits, gpt-oss's softmax over the top-k). The recorder never re-implements the routing decision;
  it only re-orders a token's experts into router rank order (moesim.traces.record.routing_rules).
- passes: with batch B the prompts are served in groups of B: one prefill pass per group (all prompt
  tokens of the group, padding left out), then one decode pass per step holding every sequence of the
  group still generating. N new tokens take 1 prefill + (N - 1) decode passes, as in `generate`.
  A sequence that emits an end-of-sequence token leaves the batch (its padding steps are not
  recorded, as under continuous batching); --ignore-eos makes every sequence produce N tokens.
- tokens: request = the prompt's index in the file, position = the token's position in its sequence.
  Inside a cell, tokens follow the pass's token order (by request, then position).
- object bytes: the loaded expert parameters' shapes and dtype (biases and quantisation blocks
  included); dense bytes: the rest of each MoE decoder layer (attention, norms, router, shared experts).
- trace layers are the model's MoE layers in order; meta.layer_ids gives their real layer numbers
  (DeepSeek's first dense layers and Qwen's mlp_only_layers are not trace layers).

Gate lookahead (`lookahead` D >= 1), stored as per-cell predictions (the prefetch contract):
  predictions["lookahead_<d>"][c]        the top-n experts of trace layer l+d, for cell c at layer l
  predictions["lookahead_<d>_score"][c]  their probabilities (float32), best first
Rows whose l+d is past the last layer hold -1 (score 0).
Which hidden state: the residual stream entering layer l's MoE block, i.e. after layer l's attention
and residual add, *before* layer l's pre-MoE RMSNorm; it is normalised with layer l+d's own
pre-MoE norm and fed to layer l+d's router. Why: it is the freshest state that exists when layer l's
gate runs (so a prefetch can overlap layer l's expert compute), and the residual stream is the one
vector space all layers share, while each router was trained on inputs scaled by its own layer's
norm weights; feeding layer l's normalised input to another layer's router would mis-scale them.
Per cell: each token's probabilities over layer l+d's experts (routing_rules.probabilities) are
averaged over the cell's tokens, and the top-n of that mean are kept (ties: lower expert id). This
works unchanged for single-token decode cells, batched decode cells and prefill cells; for a
multi-token cell it ranks experts by the expected share of the cell's routing mass they receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import moesim
from moesim.errors import UserError
from moesim.traces.record.hf_model import expert_bytes, load_model, load_tokenizer, moe_layers, param_bytes
from moesim.traces.record.hooks import RoutingHooks, TraceParts
from moesim.traces.record.prompts import file_sha256, read_prompts, tokenize
from moesim.traces.record.routing_rules import Architecture
from moesim.traces.format.trace_meta import DECODE, KIND_MOE, PREFILL, TraceMeta
from moesim.traces.format.trace import Trace

DTYPES = ("auto", "float32", "bfloat16", "float16")
LOOKAHEAD_STATE = ("residual stream entering layer l's MoE block (after attention), normalised by "
                   "layer l+d's own pre-MoE norm, fed to layer l+d's router")
PREDICTION_REDUCTION = "top-n of the mean over the cell's tokens of each expert's gate probability"


@dataclass(frozen=True)
class RecordConfig:
    """How to decode and what to store. `top_n` None = the model's top-k."""

    max_new_tokens: int = 32
    batch_size: int = 1
    lookahead: int = 0
    top_n: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    stop_at_eos: bool = True
    eos_token_ids: tuple[int, ...] | None = None
    """End-of-sequence ids; None = the model's generation config."""

    def check(self) -> None:
        for name, flag in (("max_new_tokens", "--max-new-tokens"), ("batch_size", "--batch")):
            if getattr(self, name) < 1:
                raise UserError(f"must be at least 1 (got {getattr(self, name)})", flag)
        if self.lookahead < 0:
            raise UserError(f"must be 0 or more (got {self.lookahead})", "--lookahead")
        if self.top_n is not None and self.top_n < 1:
            raise UserError(f"must be at least 1 (got {self.top_n})", "--top-n")
        if self.dtype not in DTYPES:
            raise UserError(f"must be one of {', '.join(DTYPES)} (got {self.dtype!r})", "--dtype")


@dataclass
class Recording:
    """A recorded trace plus the token sequences that produced it (prompt + generated, per request)."""

    trace: Trace
    sequences: list[list[int]]
    prompt_lengths: list[int]


# ---- decoding ----------------------------------------------------------------------------------
def _eos_ids(model: Any, config: RecordConfig) -> set[int]:
    if not config.stop_at_eos:
        return set()
    if config.eos_token_ids is not None:
        return set(config.eos_token_ids)
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _pad_id(model: Any) -> int:
    for source in (getattr(model, "generation_config", None), model.config):
        pad = getattr(source, "pad_token_id", None)
        if isinstance(pad, int) and 0 <= pad < model.config.vocab_size:
            return pad
    return 0


def _decode_group(model: Any, hooks: RoutingHooks, parts: TraceParts, group: list[tuple[int, list[int]]],
                  config: RecordConfig, eos: set[int], pad: int, sequences: dict[int, list[int]]) -> None:
    """Greedy decoding of one batch group; appends its passes to `parts`."""
    import torch

    device = next(model.parameters()).device
    lengths = [len(ids) for _, ids in group]
    width = max(lengths)
    b = len(group)
    input_ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for row, (_, ids) in enumerate(group):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    requests = np.concatenate([np.full(n, r) for (r, _), n in zip(group, lengths)])
    token_pos = np.concatenate([np.arange(n) for n in lengths])
    hooks.begin(mask.bool().reshape(-1).to(device))
    out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=1)
    hooks.check_complete()
    parts.add_pass(PREFILL, requests, token_pos, hooks)
    cache = out.past_key_values
    next_tokens = out.logits[:, -1, :].argmax(dim=-1).cpu()
    active = []
    for row, (r, _) in enumerate(group):
        tok = int(next_tokens[row])
        sequences[r].append(tok)
        active.append(tok not in eos)
    for step in range(1, config.max_new_tokens):
        if not any(active):
            break
        rows = [row for row in range(b) if active[row]]
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long)], dim=1)
        pos = torch.tensor([[lengths[row] + step - 1] for row in range(b)], dtype=torch.long)
        hooks.begin(torch.tensor(active, dtype=torch.bool, device=device))
        out = model(input_ids=next_tokens[:, None].to(device), attention_mask=mask.to(device),
                    position_ids=pos.to(device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        hooks.check_complete()
        parts.add_pass(DECODE, np.array([group[row][0] for row in rows]),
                       np.array([lengths[row] + step - 1 for row in rows]), hooks)
        cache = out.past_key_values
        next_tokens = out.logits[:, -1, :].argmax(dim=-1).cpu()
        for row in rows:
            tok = int(next_tokens[row])
            sequences[group[row][0]].append(tok)
            if tok in eos:
                active[row] = False


def record_model(model: Any, arch: Architecture, prompts: list[list[int]], config: RecordConfig,
                 provenance: dict[str, Any] | None = None) -> Recording:
    """Run greedy decoding over `prompts` (token ids) and return the routing trace it produced."""
    import torch

    config.check()
    if not prompts:
        raise UserError("no prompts to record", "prompts")
    mconf = model.config
    layers = moe_layers(model, arch)
    n_experts = arch.n_experts(mconf)
    top_k = int(mconf.num_experts_per_tok)
    top_n = config.top_n or top_k
    if top_n > n_experts:
        raise UserError(f"{top_n} is more than the model's {n_experts} experts", "--top-n")
    hooks = RoutingHooks(layers, arch, mconf, config.lookahead if len(layers) > 1 else 0, top_n)
    parts = TraceParts(n_layers=len(layers), lookahead=config.lookahead, top_n=top_n)
    sequences = {r: list(ids) for r, ids in enumerate(prompts)}
    eos, pad = _eos_ids(model, config), _pad_id(model)
    hooks.install()
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), config.batch_size):
                group = [(r, prompts[r]) for r in range(start, min(start + config.batch_size, len(prompts)))]
                _decode_group(model, hooks, parts, group, config, eos, pad, sequences)
    finally:
        hooks.remove()
    per_layer_bytes = [expert_bytes(layer, n_experts) for layer in layers]
    expert_param_bytes = [b * n_experts for b in per_layer_bytes]
    dense = [param_bytes(layer_module) - eb
             for layer_module, eb in zip((model.model.layers[ly.model_layer] for ly in layers), expert_param_bytes)]
    param_dtype = str(next(layers[0].experts.parameters()).dtype).replace("torch.", "")
    meta = TraceMeta(
        n_layers=len(layers),
        n_experts=n_experts,
        top_k=top_k,
        object_bytes=per_layer_bytes,
        kind=KIND_MOE,
        model=(mconf.architectures or [type(model).__name__])[0],
        dense_bytes=dense,
        layer_ids=[ly.model_layer for ly in layers],
        shared_experts=arch.shared_experts(mconf),
        provenance={
            "format": "moesim record (greedy decoding, forward hooks)",
            "recorder": f"moesim {moesim.__version__}",
            "licence": "recorded by the user; the model's own licence governs its weights",
            "model_type": arch.model_type,
            "max_new_tokens": config.max_new_tokens,
            "batch_size": config.batch_size,
            "stop_at_eos": config.stop_at_eos,
            "lookahead": config.lookahead,
            "top_n": top_n if config.lookahead else None,
            **_versions(),
            **(provenance or {}),
        },
        extra={
            "expert_param_dtype": param_dtype,
            "hidden_size": int(mconf.hidden_size),
            "n_model_layers": len(model.model.layers),
            "lookahead_state": LOOKAHEAD_STATE if config.lookahead else None,
            "prediction_reduction": PREDICTION_REDUCTION if config.lookahead else None,
        },
    )
    trace = parts.build(meta)
    trace.validate("recorded trace")
    return Recording(trace=trace, sequences=[sequences[r] for r in range(len(prompts))],
                     prompt_lengths=[len(p) for p in prompts])


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


def record(model_path: str | Path, prompts_path: str | Path, config: RecordConfig,
           tokenizer_path: str | Path | None = None) -> Recording:
    """Load a local model and a prompts file, decode greedily, return the recording (nothing is written)."""
    config.check()
    prompts = read_prompts(prompts_path)
    model, arch = load_model(model_path, dtype=config.dtype, device=config.device)
    tokenizer = None
    if any(p.text is not None for p in prompts):
        tokenizer = load_tokenizer(tokenizer_path or model_path)
    ids = tokenize(prompts, tokenizer, int(model.config.vocab_size), str(prompts_path))
    provenance = {  # paths as given, so the same command gives the same bytes on any machine
        "model_path": str(model_path),
        "source_file": Path(prompts_path).name,
        "prompts_file": str(prompts_path),
        "prompts_sha256": file_sha256(prompts_path),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(next(model.parameters()).device),
    }
    return record_model(model, arch, ids, config, provenance)
