"""The model catalog: MoE model specs from YAML shapes (moesim/traces/models/*.yaml or a user's file).

A catalog file gives an architecture's shapes (hidden size, heads, LoRA ranks, expert sizes, which
layers are MoE) and where they came from; every byte and FLOP count is computed here from those
shapes, so a figure can be checked against the model's published parameter count instead of
trusted. See README "Models" for the schema.

Layer sets (`moe_layers`, `cross_attention_layers`, `relative_position_layers`) are written as
`all`, a list of 0-based layer indices, or `{first: F, every: S}` (F, F+S, ... up to the last layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moesim.config_fields import Section
from moesim.errors import UserError
from moesim.traces.models.model_spec import DTYPES, FFN_MATRICES, ModelSpec
from moesim.yaml_io import read_yaml_mapping

MODELS_DIR = Path(__file__).resolve().parent  # the YAML files sit beside this module
ATTENTION_KINDS = ("gqa", "mla")
QK_NORMS = ("none", "per_head", "full")


def list_models() -> list[str]:
    """Names of the models shipped in the catalog, sorted."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


def model_path(name: str) -> Path:
    """The catalog file of `name` (a catalog name or one of its aliases, any case)."""
    wanted = name.strip().lower()
    for path in sorted(MODELS_DIR.glob("*.yaml")):
        if path.stem == wanted:
            return path
    for path in sorted(MODELS_DIR.glob("*.yaml")):
        aliases = read_yaml_mapping(path).get("aliases") or []
        if wanted in (str(a).lower() for a in aliases):
            return path
    raise UserError(f"unknown model {name!r}; known: {', '.join(list_models())} (or give a path to a YAML file)")


def load_model(name_or_path: str) -> ModelSpec:
    """A ModelSpec from a catalog name (e.g. "olmoe-1b-7b") or a path to a model YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return model_from_yaml(candidate)
    return model_from_yaml(model_path(name_or_path))


def model_from_yaml(path: str | Path) -> ModelSpec:
    return model_from_mapping(read_yaml_mapping(path), str(path))


def model_from_mapping(data: dict[str, Any], where: str) -> ModelSpec:
    """Validate a parsed model document and compute its spec; errors name `where` and the field."""
    doc = Section(data, where)
    name = doc.string("name")
    family = doc.string("family")
    description = doc.string("description", required=False)
    source = doc.string("source")
    if not source.strip():
        raise doc.error("source", "must name where the figures come from (the config's URL)")
    aliases = doc.raw("aliases", required=False, default=[])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise doc.error("aliases", "expected a list of strings")
    n_layers = doc.integer("n_layers")
    hidden = doc.integer("hidden_size")
    vocab = doc.integer("vocab_size")
    tied = doc.boolean("tie_word_embeddings", default=False)
    ffn = doc.string("ffn", required=False, default="swiglu", choices=tuple(FFN_MATRICES))
    norms_per_layer = doc.integer("norms_per_layer", required=False, default=2, minimum=0)
    final_norms = doc.integer("final_norms", required=False, default=1, minimum=0)
    default_dtype = doc.string("default_dtype", required=False, default="bf16", choices=DTYPES)
    dense_dtype = doc.string("dense_dtype", required=False, default="", choices=("",) + DTYPES)
    moe_layers = _layer_set(doc, "moe_layers", n_layers, required=True)
    if not moe_layers:
        raise doc.error("moe_layers", "a MoE model needs at least one MoE layer")
    cross_layers = _layer_set(doc, "cross_attention_layers", n_layers, required=False)

    experts = doc.section("experts")
    assert experts is not None
    routed = experts.integer("routed")
    top_k = experts.integer("top_k")
    if top_k > routed:
        raise experts.error("top_k", f"top_k {top_k} is larger than the {routed} routed experts")
    moe_inter = experts.integer("intermediate_size")
    n_shared = experts.integer("shared", required=False, default=0, minimum=0)
    shared_inter = 0
    if n_shared:
        shared_inter = experts.integer("shared_intermediate_size")
    elif experts.has("shared_intermediate_size"):
        raise experts.error("shared_intermediate_size", "given without shared experts (set experts.shared)")
    shared_gate = experts.boolean("shared_expert_gate")
    router_bias = experts.boolean("router_bias")
    expert_bias = experts.boolean("bias")
    experts.finish()

    dense_inter = 0
    dense_ffn = doc.section("dense_ffn", required=False)
    if dense_ffn is not None:
        dense_inter = dense_ffn.integer("intermediate_size")
        dense_ffn.finish()
    if len(moe_layers) < n_layers and not dense_inter:
        raise doc.error("dense_ffn", "missing field: layers outside moe_layers need dense_ffn.intermediate_size")

    attention = doc.section("attention")
    assert attention is not None
    attention_params, heads, shape = _attention_params(attention, hidden)
    window = attention.integer("sliding_window", required=False, default=0, minimum=0)
    sliding = _layer_set(attention, "sliding_layers", n_layers, required=False) if window else ()
    global_params = attention_params
    if shape.get("kind") == "gqa":
        g_kv = attention.integer("global_kv_heads", required=False, default=0, minimum=0)
        g_dim = attention.integer("global_head_dim", required=False, default=0, minimum=0)
        shape.update(global_kv_heads=g_kv, global_head_dim=g_dim)
        if g_kv or g_dim:  # full-attention layers with their own widths (gemma-4)
            q = heads * (g_dim or shape["head_dim"])
            kv = (g_kv or shape["kv_heads"]) * (g_dim or shape["head_dim"])
            global_params = attention_params - shape["proj_params"] + 2 * hidden * q + 2 * hidden * kv
    buckets = attention.integer("relative_position_buckets", required=False, default=0, minimum=0)
    rel_layers = _layer_set(attention, "relative_position_layers", n_layers, required=False) if buckets else ()
    attention.finish()
    doc.finish()

    matrices = FFN_MATRICES[ffn]
    by_layer = []
    moe_set = set(moe_layers)
    for layer in range(n_layers):
        params = norms_per_layer * hidden + (attention_params if layer in sliding else global_params)
        if layer in cross_layers:
            params += attention_params + hidden  # cross-attention block and its norm
        if layer in rel_layers:
            params += buckets * heads
        if layer in moe_set:
            params += routed * hidden + (routed if router_bias else 0)
            params += n_shared * matrices * hidden * shared_inter + (hidden if shared_gate else 0)
        else:
            params += matrices * hidden * dense_inter
        by_layer.append(params)
    embedding = vocab * hidden * (1 if tied else 2) + final_norms * hidden

    return ModelSpec(
        name=name,
        family=family,
        n_layers=n_layers,
        moe_layers=moe_layers,
        n_routed_experts=routed,
        top_k=top_k,
        hidden_size=hidden,
        moe_intermediate_size=moe_inter,
        n_shared_experts=n_shared,
        shared_intermediate_size=shared_inter,
        dense_params_per_layer=by_layer[moe_layers[0]],
        vocab_size=vocab,
        default_dtype=default_dtype,
        source=source,
        ffn_type=ffn,
        expert_bias=expert_bias,
        dense_dtype=dense_dtype,
        dense_params_by_layer=tuple(by_layer),
        embedding_params=embedding,
        description=description,
        attention_kind=shape["kind"],
        n_heads=heads,
        n_kv_heads=shape.get("kv_heads", 0),
        head_dim=shape.get("head_dim", 0),
        q_lora_rank=shape.get("q_lora_rank", 0),
        kv_lora_rank=shape.get("kv_lora_rank", 0),
        qk_rope_head_dim=shape.get("qk_rope_head_dim", 0),
        qk_nope_head_dim=shape.get("qk_nope_head_dim", 0),
        v_head_dim=shape.get("v_head_dim", 0),
        sliding_window=window,
        sliding_layers=sliding,
        global_kv_heads=shape.get("global_kv_heads", 0),
        global_head_dim=shape.get("global_head_dim", 0),
        dense_intermediate_size=dense_inter,
        tie_word_embeddings=tied,
    )


def _attention_params(attention: Section, hidden: int) -> tuple[int, int, dict[str, Any]]:
    """Parameters of one self-attention block, its head count and its shapes (for the compute model).

    gqa (covers MHA and MQA): q, k, v, o projections with optional biases, optional q/k norms
    ("per_head": one head_dim vector each, as Qwen3; "full": over all heads, as OLMoE) and optional
    per-head attention sinks (gpt-oss). mla (DeepSeek multi-head latent attention): q either direct
    or through a q_lora_rank bottleneck with its norm, the joint kv down-projection (kv_lora_rank
    plus the shared rope key) with its norm, the kv up-projection and o.
    """
    kind = attention.string("kind", choices=ATTENTION_KINDS)
    heads = attention.integer("heads")
    if kind == "gqa":
        kv_heads = attention.integer("kv_heads")
        if heads % kv_heads:
            raise attention.error("kv_heads", f"{heads} heads do not split into {kv_heads} kv groups")
        head_dim = attention.integer("head_dim")
        q, kv = heads * head_dim, kv_heads * head_dim
        params = hidden * q + 2 * hidden * kv + q * hidden
        if attention.boolean("qkv_bias"):
            params += q + 2 * kv
        if attention.boolean("o_bias"):
            params += hidden
        qk_norm = attention.string("qk_norm", required=False, default="none", choices=QK_NORMS)
        params += {"none": 0, "per_head": 2 * head_dim, "full": q + kv}[qk_norm]
        if attention.boolean("sinks"):
            params += heads
        shape = {"kind": kind, "kv_heads": kv_heads, "head_dim": head_dim, "proj_params": 2 * hidden * q + 2 * hidden * kv}
        return params, heads, shape
    q_lora = attention.optional_integer("q_lora_rank")
    kv_lora = attention.integer("kv_lora_rank")
    nope = attention.integer("qk_nope_head_dim")
    rope = attention.integer("qk_rope_head_dim")
    v_dim = attention.integer("v_head_dim")
    q_out = heads * (nope + rope)
    q_params = hidden * q_out if q_lora is None else hidden * q_lora + q_lora + q_lora * q_out
    kv_params = hidden * (kv_lora + rope) + kv_lora + kv_lora * heads * (nope + v_dim)
    shape = {"kind": kind, "q_lora_rank": q_lora or 0, "kv_lora_rank": kv_lora, "qk_rope_head_dim": rope,
             "qk_nope_head_dim": nope, "v_head_dim": v_dim}
    return q_params + kv_params + heads * v_dim * hidden, heads, shape


def _layer_set(section: Section, key: str, n_layers: int, required: bool) -> tuple[int, ...]:
    value = section.raw(key, required=required)
    if value is None and not required:
        return ()
    if value == "all":
        return tuple(range(n_layers))
    if isinstance(value, list):
        layers = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                raise section.error(key, f"layer {item!r} is not an integer")
            if not 0 <= item < n_layers:
                raise section.error(key, f"layer {item} is out of range 0..{n_layers - 1} (layers are 0-based)")
            layers.append(item)
        if len(set(layers)) != len(layers):
            raise section.error(key, "lists a layer twice")
        return tuple(sorted(layers))
    if isinstance(value, dict):
        spec = Section(value, section.where, section.field_path(key))
        first = spec.integer("first", minimum=0)
        every = spec.integer("every", required=False, default=1)
        spec.finish()
        if first >= n_layers:
            raise spec.error("first", f"layer {first} is out of range 0..{n_layers - 1} (layers are 0-based)")
        return tuple(range(first, n_layers, every))
    raise section.error(key, "expected `all`, a list of layer indices, or {first: F, every: S}")
