"""`moesim models list|show`: the model catalog and the bytes and FLOPs computed from each model's shapes."""

from __future__ import annotations

import argparse
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.traces.models.catalog import list_models, load_model
from moesim.traces.models.model_spec import DTYPES, ModelSpec
from moesim.units import format_bytes


def model_summary(spec: ModelSpec) -> dict[str, Any]:
    """One row of `models list`."""
    return {
        "name": spec.name,
        "family": spec.family,
        "description": spec.description,
        "n_layers": spec.n_layers,
        "n_moe_layers": spec.n_moe_layers,
        "n_routed_experts": spec.n_routed_experts,
        "n_shared_experts": spec.n_shared_experts,
        "top_k": spec.top_k,
        "default_dtype": spec.default_dtype,
        "total_params": spec.total_params(),
    }


def model_details(spec: ModelSpec) -> dict[str, Any]:
    """Everything `models show` reports: shapes, bytes per dtype, per-layer dense bytes and FLOPs."""
    dense_dtype = spec.dense_dtype or spec.default_dtype
    layers = []
    for layer in range(spec.n_layers):
        layers.append(
            {
                "layer": layer,
                "moe": spec.is_moe_layer(layer),
                "dense_params": spec.dense_params_of_layer(layer),
                "dense_bytes": spec.dense_bytes_of_layer(layer),
                "dense_flops_per_token": spec.dense_flops_per_token_of_layer(layer),
                "routed_flops_per_token": spec.routed_flops_per_token_of_layer(layer),
                "flops_per_token": spec.flops_per_token_of_layer(layer),
            }
        )
    return {
        **model_summary(spec),
        "source": spec.source,
        "moe_layers": list(spec.moe_layers),
        "hidden_size": spec.hidden_size,
        "moe_intermediate_size": spec.moe_intermediate_size,
        "shared_intermediate_size": spec.shared_intermediate_size,
        "vocab_size": spec.vocab_size,
        "ffn_type": spec.ffn_type,
        "expert_bias": spec.expert_bias,
        "dense_dtype": dense_dtype,
        "routed_experts_total": spec.routed_experts_total,
        "expert_params": spec.expert_params(),
        "expert_bytes": {d: spec.expert_bytes(d) for d in DTYPES},
        "routed_bytes": {d: spec.routed_bytes(d) for d in DTYPES},
        "expert_flops_per_token": spec.expert_flops_per_token(),
        "dense_bytes_per_moe_layer": spec.dense_bytes_per_layer(),
        "dense_bytes_total": sum(row["dense_bytes"] for row in layers),
        "embedding_params": spec.embedding_params,
        "active_params_per_token": spec.active_params_per_token(),
        "layers": layers,
    }


def _render_list(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'name':20s} {'layers':>6s} {'moe':>4s} {'experts':>8s} {'top-k':>5s} {'params':>9s}  description"]
    for r in rows:
        experts = f"{r['n_routed_experts']}+{r['n_shared_experts']}" if r["n_shared_experts"] else str(r["n_routed_experts"])
        lines.append(
            f"{r['name']:20s} {r['n_layers']:6d} {r['n_moe_layers']:4d} {experts:>8s} {r['top_k']:5d} "
            f"{r['total_params'] / 1e9:8.2f}B  {r['description']}"
        )
    return "\n".join(lines)


def _render_show(d: dict[str, Any]) -> str:
    lines = [
        f"{d['name']} ({d['family']}): {d['description']}",
        f"  source: {d['source']}",
        f"  layers: {d['n_layers']}, MoE layers: {_ranges(d['moe_layers'])}",
        f"  experts per MoE layer: {d['n_routed_experts']} routed (top-{d['top_k']}), {d['n_shared_experts']} shared",
        f"  hidden {d['hidden_size']}, expert intermediate {d['moe_intermediate_size']}, {d['ffn_type']} experts",
        f"  params: {d['total_params']:,} total, {d['active_params_per_token']:,} active per token",
        f"  routed experts in all: {d['routed_experts_total']:,} ({d['expert_params']:,} params each)",
        "  dtype   one expert         all routed experts",
    ]
    for dtype, nbytes in d["expert_bytes"].items():
        mark = "  (shipped)" if dtype == d["default_dtype"] else ""
        lines.append(f"  {dtype:6s}  {nbytes:>12,d} B  {format_bytes(d['routed_bytes'][dtype]):>12s}{mark}")
    lines.append(f"  dense (non-expert) bytes per MoE layer ({d['dense_dtype']}): {d['dense_bytes_per_moe_layer']:,}")
    lines.append(f"  FLOPs per token, first MoE layer: {_first_moe(d)['flops_per_token']:,}")
    return "\n".join(lines)


def _first_moe(d: dict[str, Any]) -> dict[str, Any]:
    return d["layers"][d["moe_layers"][0]]


def _ranges(layers: list[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    parts: list[str] = []
    start = prev = layers[0]
    for layer in layers[1:] + [None]:  # type: ignore[list-item]
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if layer is not None:
            start = prev = layer
    return ", ".join(parts)


def _cmd_list(args: argparse.Namespace) -> int:
    emit(args, [model_summary(load_model(name)) for name in list_models()], _render_list)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from moesim.traces.models.model_files import load_model_any

    emit(args, model_details(load_model_any(args.model, "model").spec), _render_show)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model catalog; show a model's expert bytes and FLOPs")
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND", parser_class=type(parser))
    p_list = sub.add_parser("list", help="the models in the catalog")
    add_json_flag(p_list)
    p_list.set_defaults(func=_cmd_list)
    p_show = sub.add_parser("show", help="shapes, expert bytes per dtype, dense bytes and FLOPs per layer")
    p_show.add_argument("model", help="catalog name (see `moesim models list`), a model YAML, a Hugging Face config.json or a GGUF file")
    add_json_flag(p_show)
    p_show.set_defaults(func=_cmd_show)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
