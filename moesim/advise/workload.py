"""What `moesim advise` replays: a model, a routing trace of it, and the memory its weights need.

    workload = resolve_workload("qwen3-30b-a3b", trace=None, prompt=None, decode=None, batch=None)
    workload.trace, workload.trace_label, workload.warnings, workload.dense_bytes, workload.kv_bytes

The trace, in order of preference:
1. `--trace T` (a path or bundled:NAME), as given;
2. a bundled real trace of the same model (BUNDLED_FOR_MODEL), when the asked prompt/decode/batch
   match it (or were not asked);
3. a synthetic trace with the model's shapes: routing knobs fitted to the bundled trace of the same
   model when there is one (asked lengths differ), else to every bundled real trace of a decoder
   MoE (moesim/traces/synth/fit.py; knobs combined layer-median), saying so in `warnings`.
Fits take seconds each, so they are cached by the fitted trace's content hash under
$MOESIM_CACHE (default ~/.cache/moesim)/advise-fits.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.models.model_spec import ModelSpec
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.trace import Trace

# catalog model name -> bundled trace recorded from it (moesim/traces/format/bundled.py)
BUNDLED_FOR_MODEL: dict[str, str] = {"qwen3-30b-a3b": "qwen", "gemma-4-26b-a4b": "gemma"}
# bundled real decoder-MoE traces whose routing statistics a synthetic trace borrows
FIT_SOURCES: tuple[str, ...] = ("qwen", "gemma")
KV_DTYPE_BYTES = 2  # f16 KV cache, llama.cpp's and vLLM's default


@dataclass
class Workload:
    model: str  # catalog name, or the file's name
    spec: ModelSpec | None
    trace: Trace
    trace_label: str  # where the trace came from, for the output
    synthetic: bool
    prompt: int
    decode: int
    batch: int
    dense_bytes: int  # non-expert weights the compute device holds (attention, norms, embeddings, LM head)
    kv_bytes: int  # KV cache for batch x (prompt + decode) tokens
    warnings: list[str] = field(default_factory=list)

    @property
    def expert_bytes(self) -> int:
        return int(self.trace.total_object_bytes())


def load_spec(model: str) -> ModelSpec:
    """A catalog name, a model YAML, a Hugging Face config.json or a GGUF file (moesim/traces/models/model_files.py)."""
    from moesim.traces.models.model_files import load_model_any

    return load_model_any(model, "--model").spec


def resolve_workload(model: str | None, trace: str | None = None, prompt: int | None = None, decode: int | None = None,
                     batch: int | None = None, seed: int = 0) -> Workload:
    if model is None:
        if not trace:
            raise UserError("give --model (a catalog name or model file), or --trace with its own sizes", "--model")
        return _trace_only(trace, prompt, decode, batch)
    spec = load_spec(model)
    name = spec.name
    warnings: list[str] = []
    if trace:
        from moesim.traces.format.io import load_trace

        loaded = load_trace(trace)
        label = trace
        synthetic = False
        if _shape_differs(loaded, prompt, decode, batch):
            warnings.append(f"--prompt/--decode/--batch are ignored with --trace: the trace's own requests replay")
    else:
        bundled = BUNDLED_FOR_MODEL.get(name)
        loaded, label, synthetic = _bundled_or_synthetic(spec, bundled, prompt, decode, batch, seed, warnings)
    p, d, b = _lengths(loaded)
    if loaded.meta.n_experts != spec.n_routed_experts or loaded.meta.n_layers != spec.n_moe_layers:
        warnings.append(f"the trace has {loaded.meta.n_layers} layers x {loaded.meta.n_experts} experts, "
                        f"the model {spec.n_moe_layers} x {spec.n_routed_experts}: sizes follow the trace")
    if loaded.meta.top_k and loaded.meta.top_k != spec.top_k:
        warnings.append(f"the trace routes top-{loaded.meta.top_k} (the recording engine's setting), "
                        f"the model top-{spec.top_k}")
    dense = dense_weight_bytes(spec, loaded)
    kv = kv_cache_bytes(model, spec, p + d, b)  # positions held at the end of the request
    if kv is None:
        kv = 0
        warnings.append("KV cache size unknown for this model (no attention shapes): not counted in VRAM")
    return Workload(name, spec, loaded, label, synthetic, p, d, b, dense, kv, warnings)


def _trace_only(path: str, prompt: int | None, decode: int | None, batch: int | None) -> Workload:
    """No model named: the trace's own expert and dense bytes, compute estimated from them (bf16 assumed)."""
    from moesim.traces.format.io import load_trace

    loaded = load_trace(path)
    warnings = ["no --model: compute is estimated from the trace's own bytes; embeddings, LM head and KV cache "
                "are not counted in VRAM"]
    if _shape_differs(loaded, prompt, decode, batch):
        warnings.append("--prompt/--decode/--batch are ignored with --trace: the trace's own requests replay")
    p, d, b = _lengths(loaded)
    dense = int(sum(loaded.meta.dense_bytes)) if loaded.meta.dense_bytes else 0
    return Workload(loaded.meta.model or path, None, loaded, path, False, p, d, b, dense, 0, warnings)


def _shape_differs(trace: Trace, prompt: int | None, decode: int | None, batch: int | None) -> bool:
    p, d, b = _lengths(trace)
    return any(x is not None and x != y for x, y in ((prompt, p), (decode, d), (batch, b)))


def _bundled_or_synthetic(spec: ModelSpec, bundled: str | None, prompt: int | None, decode: int | None,
                          batch: int | None, seed: int, warnings: list[str]) -> tuple[Trace, str, bool]:
    from moesim.traces.format.bundled import bundled_names, load_bundled

    if bundled and bundled in bundled_names():
        real = load_bundled(bundled)
        if not _shape_differs(real, prompt, decode, batch):
            return real, f"bundled:{bundled} (real routing recorded from {real.meta.model})", False
        sources = (bundled,)
    else:
        sources = tuple(s for s in FIT_SOURCES if s in bundled_names())
    p = prompt if prompt is not None else 512
    d = decode if decode is not None else 256
    b = batch if batch is not None else 1
    trace = synthetic_trace(spec, sources, p, d, b, seed)
    label = (f"synthetic: {spec.name} shapes, {b} x ({p} prompt + {d} decode) tokens, routing fitted to "
             + ", ".join(f"bundled:{s}" for s in sources))
    warnings.append("synthetic trace: routing statistics are fitted to other recordings, not this model's own; "
                    "record one with `moesim record` to confirm")
    return trace, label, True


def synthetic_trace(spec: ModelSpec, sources: tuple[str, ...], prompt: int, decode: int, batch: int,
                    seed: int) -> Trace:
    """A trace with `spec`'s shapes and the sources' fitted routing knobs (layer medians)."""
    from moesim.traces.synth.synth_config import LengthDist, SynthConfig
    from moesim.traces.synth.synthetic import generate

    if not sources:
        raise UserError("no bundled real trace to fit routing statistics to", "--model")
    fits = [cached_fit(name) for name in sources]
    zipf = float(np.median(np.concatenate([np.asarray(f.zipf, float) for f in fits])))
    active = float(np.median(np.concatenate([np.asarray(f.request_active, float) for f in fits])))
    config = SynthConfig(
        n_layers=spec.n_moe_layers, n_experts=spec.n_routed_experts, top_k=spec.top_k,
        object_bytes=(int(spec.expert_bytes()),), zipf=(zipf,), request_active=(active,),
        reuse=float(np.mean([f.reuse for f in fits])), cross_layer=float(np.mean([f.cross_layer for f in fits])),
        markov_block=int(fits[0].markov_block), n_requests=batch,
        prefill=LengthDist("fixed", float(prompt), 0.0, 1), decode=LengthDist("fixed", float(decode), 0.0, 0),
        batch_size=batch, seed=seed)
    return generate(config)


def cached_fit(name: str) -> Any:
    """`moesim traces fit bundled:NAME`'s settings, computed once per trace content hash."""
    from moesim.atomic_io import write_text_atomic
    from moesim.traces.format.bundled import load_bundled
    from moesim.traces.synth.fit import config_yaml, fit
    from moesim.traces.synth.synth_config import SynthConfig
    from moesim.yaml_io import read_yaml_mapping

    trace = load_bundled(name)
    root = Path(os.environ.get("MOESIM_CACHE") or Path.home() / ".cache" / "moesim") / "advise-fits"
    path = root / f"{name}-{trace.content_hash()[:16]}.yaml"
    if path.is_file():
        data = read_yaml_mapping(path)
        data.pop("fit", None)
        return SynthConfig.from_dict(data, str(path))
    config = fit(trace)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, config_yaml(config))
    return config


def _lengths(trace: Trace) -> tuple[int, int, int]:
    """(prompt tokens, decode tokens, requests) of the trace's first request, and its request count."""
    requests = np.unique(trace.token_request) if trace.n_tokens else np.zeros(1)
    tokens_per_pass = np.diff(trace.pass_token_offsets)
    phase = np.repeat(trace.pass_phase, tokens_per_pass)
    first = trace.token_request == (requests[0] if requests.size else 0)
    prompt = int(np.sum(first & (phase == PREFILL)))
    decode = int(np.sum(first & (phase == DECODE)))
    return prompt, decode, int(max(requests.size, 1))


def dense_weight_bytes(spec: ModelSpec, trace: Trace) -> int:
    """Non-expert weights: the trace's own per-layer dense bytes (its dtype) where it has them, plus
    embeddings and LM head at the same bytes per parameter; else the catalog's at its dense dtype."""
    layer_params = sum(spec.dense_params_of_layer(layer) for layer in spec.moe_layers)
    if trace.meta.dense_bytes:
        layers = int(sum(trace.meta.dense_bytes))
        per_param = layers / max(layer_params, 1)
        return int(layers + spec.embedding_params * per_param)
    per_layer = sum(spec.dense_bytes_of_layer(layer) for layer in range(spec.n_layers))
    return int(per_layer + spec.embedding_params * spec.dense_bytes_of_layer(spec.moe_layers[0])
               / max(spec.dense_params_of_layer(spec.moe_layers[0]), 1))


def kv_cache_bytes(model: str, spec: ModelSpec, tokens: int, batch: int) -> int | None:
    """f16 K and V of every layer for `tokens` positions x `batch` sequences: GQA kv heads x head width x 2
    per layer (a windowed layer keeps only its window), MLA its cached latent plus the rope key."""
    if spec.attention_kind == "mla" and spec.kv_lora_rank:
        per_token = spec.n_layers * (spec.kv_lora_rank + spec.qk_rope_head_dim)
        return int(per_token * tokens * batch * KV_DTYPE_BYTES)
    if not (spec.n_kv_heads and spec.head_dim):
        return None
    total = 0
    for layer in range(spec.n_layers):
        window = spec.window_of_layer(layer)
        kept = min(tokens, window) if window else tokens
        total += 2 * spec.kv_heads_of_layer(layer) * spec.head_dim_of_layer(layer) * kept
    return int(total * batch * KV_DTYPE_BYTES)


def replace_trace(workload: Workload, trace: Trace, label: str) -> Workload:
    return dataclasses.replace(workload, trace=trace, trace_label=label)
