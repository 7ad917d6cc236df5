"""The model-spec resolvers timing uses, and the per-layer ModelShape the real-GPU executor reads.

Timed replay times cells operator by operator (moesim/sim/compute/, docs/metrics.md "Compute");
`resolve_model_spec` picks the spec it uses (catalog name, model YAML, config.json or GGUF, else the
trace's meta.model). `resolve_model_shape` gives the executor expert params and dense bytes per
layer; where the model spec is unknown, expert params = object bytes / 2 (bf16; the width of
meta.extra["weight_dtype"] where the trace states one) and dense FLOPs per token = 2 per dense
parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from moesim.errors import UserError
from moesim.traces.models.model_spec import ModelSpec
from moesim.traces.format.trace import Trace


@dataclass(frozen=True)
class ModelShape:
    """What timing needs from the model, per trace layer."""

    expert_params: tuple[int, ...]
    dense_bytes: tuple[int, ...]
    dense_flops_per_token: tuple[float, ...]
    hidden_size: int
    source: str  # where the figures came from (result metadata)

    def activation_bytes_per_token(self) -> int:
        return 2 * self.hidden_size  # bf16 activations


def resolve_model_shape(trace: Trace, model: str | None = None) -> ModelShape:
    """Shape from the catalog (`model`, else the trace's meta.model when the catalog knows it).

    An explicit `model` that the catalog does not know is the user's mistake (UserError); an
    unknown meta.model falls back to the trace's own object bytes, assuming bf16.
    """
    spec: ModelSpec | None = None
    name = model or trace.meta.model
    if name:
        try:
            from moesim.traces.models.catalog import load_model  # lands with the catalog branch
        except ModuleNotFoundError:
            if model:
                raise UserError("the model catalog (moesim.traces.models.catalog) is not installed", "--model") from None
        else:
            try:
                spec = load_model(name)
            except (UserError, KeyError, ValueError, OSError) as exc:
                if model:  # the user named it: their mistake, one line
                    raise (exc if isinstance(exc, UserError) else UserError(f"cannot load model {model!r}: {exc}",
                                                                             "--model")) from None
                spec = None  # a trace naming a model the catalog does not know: use its own sizes
    n_layers = trace.meta.n_layers
    obj_bytes = [int(b) for b in trace.meta.object_bytes]
    meta_dense = trace.meta.dense_bytes
    if spec is not None:
        params = (spec.expert_params(),) * n_layers
        dense = tuple(int(b) for b in meta_dense) if meta_dense else (spec.dense_bytes_per_layer(),) * n_layers
        dense_flops = (float(spec.dense_flops_per_token()),) * n_layers
        return ModelShape(params, dense, dense_flops, int(spec.hidden_size), f"model spec {spec.name}")
    # a trace that states its weights' dtype (meta.extra["weight_dtype"], e.g. the fp32 reference harness) is read
    # at that width; otherwise bf16 is assumed
    dtype = str(trace.meta.extra.get("weight_dtype", "bf16"))
    width = {"fp32": 4, "fp16": 2, "bf16": 2}.get(dtype, 2)
    params = tuple(max(b // width, 1) for b in obj_bytes)
    dense = tuple(int(b) for b in meta_dense) if meta_dense else (0,) * n_layers
    # square-ish SwiGLU guess for the activation width: 3 * h * h = params
    hidden = int(math.sqrt(max(params) / 3)) if params else 0
    source = f"trace object bytes ({dtype if dtype in ('fp32', 'fp16', 'bf16') else 'bf16'} "
    source += "from the trace)" if "weight_dtype" in trace.meta.extra else "assumed)"
    return ModelShape(params, dense, tuple(2.0 * b / width for b in dense), hidden, source)


def resolve_model_spec(trace: Trace, model: str | None = None) -> tuple[ModelSpec | None, tuple[str, ...] | None]:
    """The spec timing uses: `model` (catalog name, model YAML, Hugging Face config.json or GGUF file),
    else the trace's meta.model when the catalog knows it under some spelling. Returns the spec and,
    from a GGUF file, the expert storage format of each trace layer (None otherwise).

    An explicit `model` that cannot be loaded is the user's mistake (UserError); an unknown
    meta.model falls back to the trace's own object bytes, assuming bf16.
    """
    from moesim.traces.models.model_files import load_model_any, load_model_guess

    if model:
        loaded = load_model_any(model, "--model")
        return loaded.spec, _formats_for_trace(loaded, trace)
    if trace.meta.model:
        loaded = load_model_guess(trace.meta.model)
        if loaded is not None:
            return loaded.spec, _formats_for_trace(loaded, trace)
    return None, None


def _formats_for_trace(loaded: object, trace: Trace) -> tuple[str, ...] | None:
    per_layer = getattr(loaded, "expert_formats", None)
    if not per_layer:
        return None
    spec = loaded.spec  # type: ignore[attr-defined]
    if trace.meta.n_layers == spec.n_moe_layers:
        return tuple(per_layer[m] for m in spec.moe_layers)
    if trace.meta.n_layers == spec.n_layers:
        return tuple(per_layer[m] if m in spec.moe_layers else spec.default_dtype for m in range(spec.n_layers))
    return None
