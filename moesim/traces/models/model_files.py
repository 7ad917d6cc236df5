"""Model shapes from wherever they are: the catalog, a model YAML, a Hugging Face config.json, a GGUF file.

`load_model_any(text)` is what `--model` accepts. A config.json (no weights) is mapped onto the
catalog's schema (moesim/traces/models/catalog.py) by its `model_type`, so a file and the catalog entry
for the same model give the same ModelSpec. A GGUF header (moesim/traces/models/gguf_shapes.py, via the
optional `gguf` package) also gives each tensor's quantisation, hence the experts' storage format
and bytes per layer. `load_model_guess(name)` is for a trace's meta.model: it tries the catalog
under the usual spellings (org prefix, "-it"/"-Instruct", GGUF quant suffixes) and returns None
when nothing matches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import UserError
from moesim.traces.models.catalog import load_model, model_from_mapping
from moesim.traces.models.model_spec import ModelSpec


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    origin: str  # "catalog", "yaml", "config.json", "gguf"
    expert_formats: tuple[str, ...] | None = None  # per model layer (GGUF), else None
    expert_bytes: tuple[int, ...] | None = None  # per model layer, one expert (GGUF)
    dense_bytes: tuple[int, ...] | None = None  # per model layer (GGUF)


def load_model_any(text: str, where: str = "--model") -> LoadedModel:
    path = Path(text)
    if path.suffix == ".gguf":
        from moesim.traces.models.gguf_shapes import model_from_gguf

        return model_from_gguf(path)
    if path.suffix == ".json":
        return LoadedModel(spec_from_hf_config(path), "config.json")
    try:
        spec = load_model(text)
    except UserError as exc:
        raise (exc if exc.where else exc.located(where)) from None
    return LoadedModel(spec, "yaml" if path.suffix in (".yaml", ".yml") else "catalog")


_QUANT_SUFFIX = re.compile(r"[-_.](?:q\d[\w]*|iq\d[\w]*|f16|bf16|f32|fp8|mxfp4|gguf)$", re.IGNORECASE)
_ORG = re.compile(r"^(?:[\w.-]+/|google_|qwen_|mistralai_|openai_|deepseek-ai_|meta-llama_)", re.IGNORECASE)


def name_candidates(name: str) -> list[str]:
    """"google_gemma-4-26B-A4B-it-Q4_K_M" -> [..., "gemma-4-26b-a4b-it", "gemma-4-26b-a4b"]."""
    out = [name]
    base = Path(name).name
    if base.endswith(".gguf"):
        base = base[:-5]
    while True:
        stripped = _QUANT_SUFFIX.sub("", base)
        if stripped == base:
            break
        base = stripped
    out.append(base)
    base = _ORG.sub("", base)
    out.append(base)
    for suffix in ("-it", "-instruct", "-chat", "-base"):
        if base.lower().endswith(suffix):
            out.append(base[: -len(suffix)])
    return list(dict.fromkeys(c for c in out if c))


def load_model_guess(name: str) -> LoadedModel | None:
    for candidate in name_candidates(name):
        try:
            return LoadedModel(load_model(candidate), "catalog")
        except (UserError, OSError, ValueError, KeyError):
            continue
    return None


# ---- Hugging Face config.json -------------------------------------------------------------------
def spec_from_hf_config(path: str | Path) -> ModelSpec:
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read config.json: {exc}", str(path)) from None
    if not isinstance(cfg, dict):
        raise UserError("expected a JSON object", str(path))
    cfg = cfg.get("text_config", cfg) if "num_hidden_layers" not in cfg else cfg  # multimodal wrappers
    try:
        return model_from_mapping(hf_config_to_mapping(cfg, str(path)), str(path))
    except KeyError as exc:
        raise UserError(f"missing field {exc.args[0]!r} (model_type {cfg.get('model_type')!r})", str(path)) from None


def hf_config_to_mapping(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """The catalog document for a config.json (field names as in transformers' configuration_*.py)."""
    mtype = str(cfg.get("model_type", ""))
    n_layers = int(cfg["num_hidden_layers"])
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    routed = int(cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts") or 0)
    if not routed:
        raise UserError("not a mixture-of-experts config (no num_experts / num_local_experts / n_routed_experts)", where)
    top_k = int(cfg.get("num_experts_per_tok") or cfg.get("num_experts_per_token") or cfg.get("moe_topk") or 0)
    moe_inter = int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"])
    if mtype in ("mixtral", "gpt_oss"):
        moe_inter = int(cfg["intermediate_size"])
    doc: dict[str, Any] = {
        "name": str(cfg.get("_name_or_path") or Path(where).parent.name or mtype).split("/")[-1].lower() or mtype,
        "family": mtype or "unknown",
        "source": where,
        "n_layers": n_layers,
        "hidden_size": hidden,
        "vocab_size": int(cfg["vocab_size"]),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
    }
    experts: dict[str, Any] = {"routed": routed, "top_k": top_k, "intermediate_size": moe_inter}
    moe_layers: Any = "all"
    dense_inter = int(cfg.get("intermediate_size") or 0)
    first_dense = int(cfg.get("first_k_dense_replace") or 0)
    if first_dense:
        moe_layers = {"first": first_dense}
    step = int(cfg.get("decoder_sparse_step") or cfg.get("interleave_moe_layer_step") or 1)
    only_mlp = [int(i) for i in cfg.get("mlp_only_layers") or []]
    if step > 1 or only_mlp:
        start = step - 1 if mtype.startswith("llama4") else 0
        layers = [i for i in range(n_layers) if (i + 1) % step == 0 or step == 1] if not mtype.startswith("llama4") \
            else list(range(start, n_layers, step))
        moe_layers = [i for i in layers if i not in only_mlp]
    if cfg.get("n_shared_experts"):
        experts["shared"] = int(cfg["n_shared_experts"])
        experts["shared_intermediate_size"] = int(cfg.get("moe_intermediate_size") or moe_inter)
    elif cfg.get("shared_expert_intermediate_size"):
        experts["shared"] = 1
        experts["shared_intermediate_size"] = int(cfg["shared_expert_intermediate_size"])
        experts["shared_expert_gate"] = True
    elif mtype.startswith("llama4"):
        experts["shared"] = 1
        experts["shared_intermediate_size"] = moe_inter
    if mtype.startswith("deepseek") and cfg.get("topk_method") == "noaux_tc":
        experts["router_bias"] = True
    if mtype == "gpt_oss":
        experts["bias"] = True
        experts["router_bias"] = True
    doc["moe_layers"] = moe_layers
    doc["experts"] = experts
    if moe_layers != "all":
        doc["dense_ffn"] = {"intermediate_size": int(cfg.get("intermediate_size_mlp") or dense_inter)}
    doc["attention"] = _hf_attention(cfg, mtype, hidden, heads)
    quant = cfg.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method == "mxfp4":
        doc["default_dtype"], doc["dense_dtype"] = "mxfp4", "bf16"
    elif method == "fp8":
        doc["default_dtype"] = "fp8"
    return doc


def _hf_attention(cfg: dict[str, Any], mtype: str, hidden: int, heads: int) -> dict[str, Any]:
    if cfg.get("kv_lora_rank"):
        att = {"kind": "mla", "heads": heads, "kv_lora_rank": int(cfg["kv_lora_rank"]),
               "qk_nope_head_dim": int(cfg["qk_nope_head_dim"]), "qk_rope_head_dim": int(cfg["qk_rope_head_dim"]),
               "v_head_dim": int(cfg["v_head_dim"])}
        if cfg.get("q_lora_rank"):
            att["q_lora_rank"] = int(cfg["q_lora_rank"])
        return att
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    att = {"kind": "gqa", "heads": heads, "kv_heads": int(cfg.get("num_key_value_heads") or heads), "head_dim": head_dim}
    if mtype in ("qwen2_moe",) or (cfg.get("attention_bias") and mtype != "gpt_oss"):
        att["qkv_bias"] = True
    if mtype == "gpt_oss":
        att.update(qkv_bias=True, o_bias=True, sinks=True)
    if mtype == "qwen3_moe":
        att["qk_norm"] = "per_head"
    if mtype == "olmoe":
        att["qk_norm"] = "full"
    types = cfg.get("layer_types")
    window = int(cfg.get("sliding_window") or 0)
    if window and isinstance(types, list) and any(t == "sliding_attention" for t in types):
        att["sliding_window"] = window
        att["sliding_layers"] = [i for i, t in enumerate(types) if t == "sliding_attention"]
    return att
