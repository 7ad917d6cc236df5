"""Model shapes and per-tensor quantisation from a GGUF file's header (needs the optional `gguf` package).

gguf's GGUFReader memory-maps the file and parses the key-value metadata and the tensor table
(name, shape, type, byte size); no weight is read. Keys follow llama.cpp's gguf-py constants
(`{arch}.block_count`, `{arch}.embedding_length`, `{arch}.expert_count`, `{arch}.expert_used_count`,
`{arch}.expert_feed_forward_length`, `{arch}.attention.head_count[_kv]`, `{arch}.attention.key_length`,
`{arch}.attention.kv_lora_rank`, `{arch}.leading_dense_block_count`, ...); tensor names follow
llama.cpp's `blk.N.ffn_gate_exps.weight` scheme. Optional parts of a layer (q/k norms, biases,
attention sinks, a router bias) are read off which tensors exist. The shapes go through the
catalog's schema (moesim/traces/models/catalog.py), so the parameter counts match the catalog's for the
same model; the expert tensors' types and bytes give each layer's storage format and expert bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moesim.errors import UserError
from moesim.sim.compute import formats
from moesim.traces.models.catalog import model_from_mapping
from moesim.traces.models.model_files import LoadedModel

GGML_TO_FORMAT = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_1": "q4_1",
                  "Q5_0": "q5_0", "Q5_1": "q5_1", "Q2_K": "q2_K", "Q3_K": "q3_K", "Q4_K": "q4_K", "Q5_K": "q5_K",
                  "Q6_K": "q6_K", "MXFP4": "mxfp4", "I8": "int8"}
EXPERT_TENSORS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")


def _reader(path: Path) -> Any:
    try:
        from gguf import GGUFReader
    except ModuleNotFoundError:
        raise UserError("reading GGUF files needs the gguf package (pip install 'moesim[gguf]')", str(path)) from None
    if not path.is_file():
        raise UserError("no such file", str(path))
    try:
        return GGUFReader(str(path), "r")
    except (ValueError, OSError, KeyError) as exc:
        raise UserError(f"not a readable GGUF file: {exc}", str(path)) from None


def read_gguf_header(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[str, tuple[int, ...], int]]]:
    """(metadata key -> value, tensor name -> (ggml type name, shape, bytes))."""
    path = Path(path)
    reader = _reader(path)
    meta: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name not in ("tokenizer.ggml.tokens",):
            continue
        try:
            value = field.contents()
        except (ValueError, TypeError, IndexError):
            continue
        meta[name] = len(value) if name == "tokenizer.ggml.tokens" else value
    tensors = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), int(t.n_bytes)) for t in reader.tensors}
    return meta, tensors


def model_from_gguf(path: str | Path) -> LoadedModel:
    path = Path(path)
    meta, tensors = read_gguf_header(path)
    where = str(path)
    arch = meta.get("general.architecture")
    if not arch:
        raise UserError("missing general.architecture", where)

    def key(name: str, default: Any = None, required: bool = False) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if required and value is None:
            raise UserError(f"missing {arch}.{name}", where)
        return value

    n_layers = int(key("block_count", required=True))
    hidden = int(key("embedding_length", required=True))
    heads = int(key("attention.head_count", required=True))
    routed = int(key("expert_count", 0) or 0)
    if not routed:
        raise UserError(f"not a mixture-of-experts model ({arch}.expert_count missing)", where)
    kv = key("attention.head_count_kv", heads)
    kv_list = list(kv) if isinstance(kv, list) else [int(kv)] * n_layers
    kv_heads = max(set(kv_list), key=kv_list.count)  # the common value (windowed layers on gemma-4)
    vocab = key("vocab_size") or meta.get("tokenizer.ggml.tokens") or _shape_dim(tensors, "token_embd.weight", 1)
    if not vocab:
        raise UserError(f"missing {arch}.vocab_size and tokenizer.ggml.tokens", where)
    ff = int(key("feed_forward_length", 0) or 0)
    moe_inter = int(key("expert_feed_forward_length", 0) or ff)
    lead = int(key("leading_dense_block_count", 0) or 0)
    doc: dict[str, Any] = {
        "name": str(meta.get("general.name") or path.stem).lower().replace(" ", "-"),
        "family": str(arch),
        "source": where,
        "n_layers": n_layers,
        "hidden_size": hidden,
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in tensors and "token_embd.weight" in tensors,
        "moe_layers": {"first": lead} if lead else "all",
    }
    experts: dict[str, Any] = {"routed": routed, "top_k": int(key("expert_used_count", 1)), "intermediate_size": moe_inter}
    shared = int(key("expert_shared_count", 0) or 0)
    shared_ff = int(key("expert_shared_feed_forward_length", 0) or 0)
    if shared or shared_ff:
        experts["shared"] = shared or 1
        experts["shared_intermediate_size"] = shared_ff or moe_inter
        if "blk.0.ffn_gate_inp_shexp.weight" in tensors:
            experts["shared_expert_gate"] = True
    first_moe = lead
    if f"blk.{first_moe}.exp_probs_b.bias" in tensors or f"blk.{first_moe}.ffn_gate_inp.bias" in tensors:
        experts["router_bias"] = True
    if f"blk.{first_moe}.ffn_up_exps.bias" in tensors:
        experts["bias"] = True
    doc["experts"] = experts
    if lead:
        doc["dense_ffn"] = {"intermediate_size": ff}
    doc["attention"] = _attention(key, tensors, hidden, heads, kv_heads)
    spec = model_from_mapping(doc, where)
    expert_formats, expert_bytes, dense_bytes = _per_layer(tensors, n_layers, routed, spec.default_dtype)
    return LoadedModel(spec, "gguf", expert_formats, expert_bytes, dense_bytes)


def _shape_dim(tensors: dict[str, tuple[str, tuple[int, ...], int]], name: str, dim: int) -> int:
    entry = tensors.get(name)
    return int(entry[1][dim]) if entry and len(entry[1]) > dim else 0


def _attention(key: Any, tensors: dict[str, Any], hidden: int, heads: int, kv_heads: int) -> dict[str, Any]:
    kv_lora = key("attention.kv_lora_rank")
    if kv_lora:
        rope = int(key("rope.dimension_count", required=True))
        k_len = int(key("attention.key_length", required=True))
        att = {"kind": "mla", "heads": heads, "kv_lora_rank": int(kv_lora), "qk_rope_head_dim": rope,
               "qk_nope_head_dim": k_len - rope, "v_head_dim": int(key("attention.value_length", required=True))}
        if key("attention.q_lora_rank"):
            att["q_lora_rank"] = int(key("attention.q_lora_rank"))
        return att
    head_dim = int(key("attention.key_length", 0) or hidden // heads)
    att: dict[str, Any] = {"kind": "gqa", "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim}
    if "blk.0.attn_q.bias" in tensors:
        att["qkv_bias"] = True
    if "blk.0.attn_output.bias" in tensors:
        att["o_bias"] = True
    if "blk.0.attn_sinks.weight" in tensors:
        att["sinks"] = True
    norm = tensors.get("blk.0.attn_q_norm.weight")
    if norm is not None:
        att["qk_norm"] = "per_head" if int(norm[1][0]) == head_dim else "full"
    return att


def _per_layer(tensors: dict[str, tuple[str, tuple[int, ...], int]], n_layers: int, routed: int,
               default: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """Per layer: the experts' main storage format, one expert's bytes, the non-expert bytes."""
    fmts, expert_bytes, dense_bytes = [], [], []
    for layer in range(n_layers):
        prefix = f"blk.{layer}."
        weights_by_type: dict[str, int] = {}
        ebytes = dbytes = 0
        for name, (gtype, shape, nbytes) in tensors.items():
            if not name.startswith(prefix):
                continue
            if any(name.startswith(prefix + t) for t in EXPERT_TENSORS):
                ebytes += nbytes
                n = 1
                for d in shape:
                    n *= d
                fmt = GGML_TO_FORMAT.get(gtype, gtype.lower())
                weights_by_type[fmt] = weights_by_type.get(fmt, 0) + n
            else:
                dbytes += nbytes
        main = max(weights_by_type, key=lambda f: (weights_by_type[f], f)) if weights_by_type else default
        if not formats.known(main) and weights_by_type:
            n_total = sum(weights_by_type.values())
            main = formats.nearest_format(8.0 * ebytes / max(n_total, 1))
        fmts.append(main)
        expert_bytes.append(ebytes // routed if ebytes else 0)
        dense_bytes.append(dbytes)
    return tuple(fmts), tuple(expert_bytes), tuple(dense_bytes)
