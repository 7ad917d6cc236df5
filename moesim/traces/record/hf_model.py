"""Loading a local Hugging Face MoE checkpoint for `moesim record`, and finding its MoE layers and sizes.

torch and transformers are imported inside the functions (the `record` extra); nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moesim.errors import UserError
from moesim.traces.record.routing_rules import ARCHITECTURES, ARCHITECTURES_DOC, Architecture


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


def import_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise UserError("needs torch and transformers: pip install 'moesim[record]'", "moesim record") from None
    return transformers


def load_model(model_path: str | Path, dtype: str = "auto", device: str = "auto") -> tuple[Any, Architecture]:
    """Load a local checkpoint (never downloads) and check that its architecture is supported."""
    transformers = import_transformers()
    import torch

    path = Path(model_path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError("not a model directory (needs config.json and the weights, as save_pretrained writes)",
                        str(path))
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise UserError(f"cannot read the model config: {first_line(exc)}", str(path)) from None
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
        raise UserError(f"cannot load the model: {first_line(exc)}", str(path)) from None
    model.to(resolve_device(device))
    model.eval()
    return model, arch


def load_tokenizer(path: str | Path) -> Any | None:
    """The tokenizer saved in `path`, or None when there is none."""
    transformers = import_transformers()
    p = Path(path)
    names = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if not p.is_dir() or not any((p / n).is_file() for n in names):
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot load the tokenizer: {first_line(exc)}", str(p)) from None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but torch sees no CUDA GPU", "--device")
    return device


def first_line(exc: BaseException) -> str:
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


def param_bytes(module: Any) -> int:
    return int(sum(p.numel() * p.element_size() for p in module.parameters()))
