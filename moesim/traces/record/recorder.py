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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import moesim
from moesim.errors import UserError
from moesim.traces.record.prompts import file_sha256, read_prompts, tokenize
from moesim.traces.record.routing_rules import (
    ARCHITECTURES,
    ARCHITECTURES_DOC,
    Architecture,
    probabilities,
    router_logits,
    selection_scores,
)
from moesim.traces.format.trace_meta import DECODE, KIND_MOE, PREFILL, TraceMeta, expert_dtype
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


@dataclass
class MoeLayer:
    """One MoE decoder layer and the modules the hooks attach to."""

    trace_layer: int
    model_layer: int
    block: Any
    router: Any
    experts: Any
    norm: Any


def supported_architectures() -> dict[str, str]:
    """model_type -> description of the architectures this transformers install provides."""
    import importlib.util

    out = {}
    for model_type, doc in ARCHITECTURES_DOC.items():
        if importlib.util.find_spec(f"transformers.models.{model_type}") is not None:
            out[model_type] = doc
    return out


# ---- loading ---------------------------------------------------------------------------------
def _import_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise UserError("needs torch and transformers: pip install 'moesim[record]'", "moesim record") from None
    return transformers


def load_model(model_path: str | Path, dtype: str = "auto", device: str = "auto") -> tuple[Any, Architecture]:
    """Load a local checkpoint (never downloads) and check that its architecture is supported."""
    transformers = _import_transformers()
    import torch

    path = Path(model_path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError("not a model directory (needs config.json and the weights, as save_pretrained writes)",
                        str(path))
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"cannot read the model config: {_first_line(exc)}", str(path)) from None
    model_type = getattr(config, "model_type", None)
    arch = ARCHITECTURES.get(str(model_type))
    if arch is None:
        known = ", ".join(sorted(supported_architectures()))
        raise UserError(f"model type {model_type!r} is not supported; supported: {known}", str(path))
    if model_type not in supported_architectures():
        raise UserError(f"model type {model_type!r} is absent from the installed transformers "
                        f"{transformers.__version__}; upgrade transformers", str(path))
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot load the model: {_first_line(exc)}", str(path)) from None
    model.to(_resolve_device(device))
    model.eval()
    return model, arch


def load_tokenizer(path: str | Path) -> Any | None:
    """The tokenizer saved in `path`, or None when there is none."""
    transformers = _import_transformers()
    p = Path(path)
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not p.is_dir() or not any((p / n).is_file() for n in names):
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot load the tokenizer: {_first_line(exc)}", str(p)) from None


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but torch sees no CUDA GPU", "--device")
    return device


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def moe_layers(model: Any, arch: Architecture) -> list[MoeLayer]:
    """The model's MoE decoder layers, in order."""
    config = model.config
    n_experts = arch.n_experts(config)
    decoder = getattr(model, "model", model)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UserError(f"{type(model).__name__} has no decoder layers where transformers keeps them", "model")
    found: list[MoeLayer] = []
    for index, layer in enumerate(layers):
        block = getattr(layer, "mlp", None)
        experts = getattr(block, "experts", None)
        router = getattr(block, arch.router_attr, None)
        weight = getattr(router, "weight", None)
        if experts is None or weight is None or weight.shape[0] != n_experts:
            continue
        norm = getattr(layer, "post_attention_layernorm", None)
        found.append(MoeLayer(len(found), index, block, router, experts, norm))
    if not found:
        raise UserError(f"found no MoE layers with a fused experts module in {type(model).__name__}; "
                        "moesim record needs transformers >= 5", "model")
    return found


def expert_bytes(layer: MoeLayer, n_experts: int) -> int:
    """Bytes of one expert of this layer, from the loaded parameters (per-expert slices of fused tensors)."""
    total = 0
    tensors = list(layer.experts.parameters()) + list(layer.experts.buffers())
    for t in tensors:
        if t.dim() >= 1 and t.shape[0] == n_experts:
            total += (t.numel() // n_experts) * t.element_size()
    if total == 0 and hasattr(layer.experts, "__getitem__"):  # a ModuleList of experts
        total = sum(p.numel() * p.element_size() for p in layer.experts[0].parameters())
    return int(total)


def _param_bytes(module: Any) -> int:
    return int(sum(p.numel() * p.element_size() for p in module.parameters()))


# ---- the hooks -------------------------------------------------------------------------------
class _RoutingHooks:
    """Forward hooks that capture, per forward pass, each MoE layer's routing for the valid tokens.

    `valid` (a bool tensor over the flattened batch x sequence rows) is set before every forward so
    padding and finished sequences are dropped inside the hooks.
    """

    def __init__(self, layers: list[MoeLayer], arch: Architecture, config: Any, lookahead: int, top_n: int) -> None:
        self.layers = layers
        self.arch = arch
        self.config = config
        self.lookahead = lookahead
        self.top_n = top_n
        self.hidden = int(config.hidden_size)
        self.valid: Any = None
        self._x: dict[int, Any] = {}
        self.experts: dict[int, np.ndarray] = {}
        self.weights: dict[int, np.ndarray] = {}
        self.predictions: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._handles: list[Any] = []

    def install(self) -> None:
        for layer in self.layers:
            index = layer.trace_layer
            self._handles.append(layer.block.register_forward_pre_hook(self._block_hook(index), with_kwargs=True))
            self._handles.append(layer.experts.register_forward_pre_hook(self._experts_hook(index), with_kwargs=True))
            if self.lookahead and index + 1 < len(self.layers):
                if layer.norm is None:
                    raise UserError(f"layer {layer.model_layer} has no post_attention_layernorm; "
                                    "gate lookahead is not available for this model", "--lookahead")
                self._handles.append(layer.norm.register_forward_pre_hook(self._norm_hook(index), with_kwargs=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def begin(self, valid: Any) -> None:
        self.valid = valid
        self._x.clear()
        self.experts.clear()
        self.weights.clear()
        self.predictions.clear()

    def check_complete(self) -> None:
        missing = [ly.model_layer for ly in self.layers if ly.trace_layer not in self.experts]
        if missing:
            raise UserError(f"the routing hooks did not fire for layer(s) {missing}: this model's MoE forward "
                            "does not call its experts module (custom kernels?); load it without them", "model")

    # hook factories ---------------------------------------------------------------------------
    def _block_hook(self, trace_layer: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            self._x[trace_layer] = x.reshape(-1, self.hidden)[self.valid]

        return hook

    def _experts_hook(self, trace_layer: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            import torch

            tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            index = next(t for t in tensors if not t.is_floating_point())
            weight = next(t for t in tensors if t.is_floating_point() and t.shape == index.shape)
            index, weight = index[self.valid], weight[self.valid]
            layer = self.layers[trace_layer]
            logits = router_logits(self.arch, layer.router, self._x[trace_layer])
            scores = selection_scores(self.arch, layer.router, self.config, logits).gather(1, index.long())
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices
            self.experts[trace_layer] = index.gather(1, order).cpu().numpy()
            self.weights[trace_layer] = weight.gather(1, order).float().cpu().numpy()

        return hook

    def _norm_hook(self, trace_layer: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            import torch

            h = (args[0] if args else kwargs["hidden_states"]).reshape(-1, self.hidden)[self.valid]
            for d in range(1, self.lookahead + 1):
                if trace_layer + d >= len(self.layers):
                    break
                target = self.layers[trace_layer + d]
                x = target.norm.forward(h)  # .forward: no hooks fire on the target layer's norm
                logits = router_logits(self.arch, target.router, x)
                mean = probabilities(self.arch, target.router, self.config, logits).mean(dim=0)
                n = min(self.top_n, mean.shape[0])
                # top-n by mean probability, ties to the lower expert id (stable sort on descending score)
                order = torch.sort(mean, descending=True, stable=True).indices[:n]
                self.predictions[(trace_layer, d)] = (order.cpu().numpy(), mean[order].cpu().numpy().astype(np.float32))

        return hook


# ---- assembling the trace -------------------------------------------------------------------
@dataclass
class _TraceParts:
    """Arrays of the trace, appended pass by pass."""

    n_layers: int
    lookahead: int
    top_n: int
    phases: list[int] = field(default_factory=list)
    token_request: list[np.ndarray] = field(default_factory=list)
    token_position: list[np.ndarray] = field(default_factory=list)
    cell_tokens: list[int] = field(default_factory=list)
    experts: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray] = field(default_factory=list)
    pred: dict[int, list[np.ndarray]] = field(default_factory=dict)
    pred_score: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def add_pass(self, phase: int, requests: np.ndarray, positions: np.ndarray, hooks: _RoutingHooks) -> None:
        self.phases.append(phase)
        self.token_request.append(requests.astype(np.int32))
        self.token_position.append(positions.astype(np.int32))
        for layer in range(self.n_layers):
            experts = hooks.experts[layer]
            self.cell_tokens.append(int(experts.shape[0]))
            self.experts.append(experts.reshape(-1))
            self.weights.append(hooks.weights[layer].reshape(-1))
            for d in range(1, self.lookahead + 1):
                ids = np.full(self.top_n, -1, dtype=np.int64)
                score = np.zeros(self.top_n, dtype=np.float32)
                if (layer, d) in hooks.predictions:
                    got_ids, got_score = hooks.predictions[(layer, d)]
                    ids[: got_ids.size] = got_ids
                    score[: got_score.size] = got_score
                self.pred.setdefault(d, []).append(ids)
                self.pred_score.setdefault(d, []).append(score)

    def build(self, meta: TraceMeta) -> Trace:
        n_p = len(self.phases)
        tokens_per_pass = np.array([r.size for r in self.token_request], dtype=np.int64)
        pass_token_offsets = np.zeros(n_p + 1, dtype=np.int64)
        np.cumsum(tokens_per_pass, out=pass_token_offsets[1:])
        pass_cell_offsets = np.arange(n_p + 1, dtype=np.int64) * self.n_layers
        cell_sizes = np.array([e.size for e in self.experts], dtype=np.int64)
        cell_offsets = np.zeros(cell_sizes.size + 1, dtype=np.int64)
        np.cumsum(cell_sizes, out=cell_offsets[1:])
        edtype = expert_dtype(meta.n_experts)
        predictions: dict[str, np.ndarray] = {}
        for d in range(1, self.lookahead + 1):
            predictions[f"lookahead_{d}"] = np.stack(self.pred[d]).astype(edtype)
            predictions[f"lookahead_{d}_score"] = np.stack(self.pred_score[d]).astype(np.float32)
        return Trace(
            meta=meta,
            pass_phase=np.asarray(self.phases, dtype=np.int8),
            pass_cell_offsets=pass_cell_offsets,
            pass_token_offsets=pass_token_offsets,
            token_request=_cat(self.token_request, np.int32),
            token_position=_cat(self.token_position, np.int32),
            cell_layer=np.tile(np.arange(self.n_layers, dtype=np.int16), n_p),
            cell_offsets=cell_offsets,
            cell_tokens=np.asarray(self.cell_tokens, dtype=np.int32),
            expert=_cat(self.experts, edtype),
            weight=_cat(self.weights, np.float32).astype(np.float16),
            predictions=predictions,
        )


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


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


def _decode_group(model: Any, hooks: _RoutingHooks, parts: _TraceParts, group: list[tuple[int, list[int]]],
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
    hooks = _RoutingHooks(layers, arch, mconf, config.lookahead if len(layers) > 1 else 0, top_n)
    parts = _TraceParts(n_layers=len(layers), lookahead=config.lookahead, top_n=top_n)
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
    dense = [_param_bytes(layer_module) - eb
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
