"""The legacy per-cell roofline (kept for callers), and the model-spec resolver timing uses.

Timed replay now times cells operator by operator (moesim/sim/compute/, docs/metrics.md "Compute");
`resolve_model_spec` below picks the spec it uses. The functions after it are the former model:

Per cell (one pass at one layer), with T tokens (docs/metrics.md, "Compute"):
  dense  = max(dense_bytes / memory_bandwidth, T * dense_flops_per_token / peak_flops) + launch_overhead
  expert = max(sum over experts run on the device of weight bytes / memory_bandwidth,
               sum of tokens_e * 2 * expert_params / peak_flops) + launch_overhead * kernels
A cell's experts run as one grouped kernel (the executor's Triton kernel), or one kernel per expert
with `grouped=False`. Attention's KV-cache reads, non-MoE layers, embeddings and the LM head are
not modelled. Where the model spec is unknown, expert params = object bytes / 2 (bf16; the width of
meta.extra["weight_dtype"] where the trace states one) and dense FLOPs per token = 2 per dense parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moesim.errors import UserError
from moesim.hw_profiles.profile import Compute
from moesim.traces.model_spec import ModelSpec
from moesim.traces.trace import Trace


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
            from moesim.traces.catalog import load_model  # lands with the catalog branch
        except ModuleNotFoundError:
            if model:
                raise UserError("the model catalog (moesim.traces.catalog) is not installed", "--model") from None
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
    from moesim.traces.model_files import load_model_any, load_model_guess

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


def dense_times(trace: Trace, shape: ModelShape, compute: Compute) -> np.ndarray:
    """Attention and other non-expert work of every cell, seconds."""
    layer = trace.cell_layer.astype(np.int64)
    tokens = trace.cell_tokens.astype(np.float64)
    dbytes = np.asarray(shape.dense_bytes, dtype=np.float64)[layer]
    dflops = np.asarray(shape.dense_flops_per_token, dtype=np.float64)[layer] * tokens
    return np.maximum(dbytes / compute.memory_bandwidth, dflops / compute.peak_flops) + compute.launch_overhead


def expert_times(
    req_cell: np.ndarray,
    req_bytes: np.ndarray,
    req_tokens: np.ndarray,
    req_params: np.ndarray,
    n_cells: int,
    compute: Compute,
    grouped: bool = True,
) -> np.ndarray:
    """Device expert time of every cell from the experts it runs (one row per distinct object run).

    `req_tokens` are the tokens each expert processes on the device; rows with 0 tokens (run on the
    CPU, dropped) neither read weights nor launch.
    """
    run = req_tokens > 0
    cells = req_cell[run]
    nbytes = np.bincount(cells, weights=req_bytes[run].astype(np.float64), minlength=n_cells)
    flops = np.bincount(cells, weights=2.0 * req_tokens[run].astype(np.float64) * req_params[run], minlength=n_cells)
    kernels = np.bincount(cells, minlength=n_cells).astype(np.float64)
    if grouped:
        kernels = np.minimum(kernels, 1.0)
    roof = np.maximum(nbytes / compute.memory_bandwidth, flops / compute.peak_flops)
    return roof + compute.launch_overhead * kernels


def cpu_times(
    req_cell: np.ndarray,
    req_bytes: np.ndarray,
    req_tokens: np.ndarray,
    req_params: np.ndarray,
    n_cells: int,
    compute: Compute,
    where: str,
) -> np.ndarray:
    """Host-CPU expert time of every cell (rows: experts run on the CPU and their tokens)."""
    if req_cell.size == 0:
        return np.zeros(n_cells)
    if not compute.cpu_flops or not compute.cpu_memory_bandwidth:
        raise UserError("the cpu miss handler needs compute.cpu_flops and compute.cpu_memory_bandwidth", where)
    nbytes = np.bincount(req_cell, weights=req_bytes.astype(np.float64), minlength=n_cells)
    flops = np.bincount(req_cell, weights=2.0 * req_tokens.astype(np.float64) * req_params, minlength=n_cells)
    return np.maximum(nbytes / compute.cpu_memory_bandwidth, flops / compute.cpu_flops)
