"""Compute by operator: what every cell costs on the processor that runs it (docs/metrics.md, "Compute").

    model = compute_model(trace, profile, model="qwen3-30b-a3b")      # shapes + processors + framework
    ne = non_expert_cell_times(trace, model)                          # ne.pre, ne.post: seconds per cell
    t = expert_request_times(model, req_layer, req_bytes, req_tokens, "gpu")   # seconds per request
    g = expert_cell_times(model, req_cell, req_layer, req_bytes, req_tokens, n_cells, "gpu")  # barrier mode

Modules: processors (the profile's processors, framework kernel counts), formats (bytes and
dequantisation per storage format), shapes (operator shapes per layer), context (attention's
query/position counts), operators (non-expert roofline per operator), experts (routed experts),
kernel_table (measured kernel times). Without a model spec, the non-expert part is the legacy
per-layer roofline over the trace's dense bytes (2 FLOPs per dense parameter) and experts are taken
at the trace's meta.extra["weight_dtype"] width, else bf16 (params = bytes / 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.sim.compute.experts import ExpertCosts, grouped_cell_times
from moesim.sim.compute.experts import expert_request_times as _request_times
from moesim.sim.compute.kernel_table import KernelTable, load_kernel_table
from moesim.sim.compute.operators import NonExpertTimes, non_expert_times, overhead, roofline
from moesim.sim.compute.processors import (Processor, cpu_processor, device_processor, framework_of,
                                           processors_of)
from moesim.sim.compute.shapes import OperatorShapes, operator_shapes
from moesim.traces.models.model_spec import ModelSpec
from moesim.traces.format.trace import Trace

__all__ = ["ComputeModel", "Processor", "compute_model", "expert_cell_times", "expert_request_times",
           "non_expert_cell_times", "processors_of"]


@dataclass(frozen=True)
class ComputeModel:
    """Everything the cost of a cell depends on besides the plan."""

    spec: ModelSpec | None
    shapes: OperatorShapes | None
    experts: ExpertCosts
    device: Processor
    processors: dict[str, Processor]
    framework: str
    table: KernelTable | None
    hidden_size: int
    dense_bytes: tuple[int, ...]  # per trace layer: the trace's meta.dense_bytes, else the spec's
    source: str
    profile_name: str = ""
    dense_flops_per_byte: float = 1.0  # legacy path: 2 FLOPs per dense parameter of this many bytes

    def processor(self, name: str) -> Processor:
        if name in ("gpu", "device"):
            return self.device
        if name == "cpu":
            return cpu_processor(_Procs(self.processors), f"profile {self.profile_name}")
        if name in self.processors:
            return self.processors[name]
        raise UserError(f"the profile has no processor {name!r}; it has {', '.join(self.processors)}", "processor")

    def activation_bytes_per_token(self) -> int:
        return 2 * self.hidden_size  # bf16 activations


@dataclass(frozen=True)
class _Procs:
    processors: dict[str, Processor]


def compute_model(trace: Trace, profile: Any, spec: ModelSpec | None, framework: str | None = None,
                  kernel_table: str | KernelTable | None = None, expert_formats: tuple[str, ...] | None = None,
                  source: str = "") -> ComputeModel:
    """Shapes from `spec` (None: the trace's own object and dense bytes, bf16 assumed) on `profile`'s processors."""
    procs = processors_of(profile)
    device = device_processor(profile)
    fw = framework_of(profile, framework)
    n_layers = trace.meta.n_layers
    obj_bytes = np.asarray(trace.meta.object_bytes, dtype=np.float64)
    flops_per_byte = 1.0
    meta_dense = trace.meta.dense_bytes
    dense = tuple(int(b) for b in meta_dense) if meta_dense else (0,) * n_layers
    if spec is not None:
        shapes = operator_shapes(trace, spec, expert_formats)
        experts = ExpertCosts(shapes.expert_params, shapes.expert_flops_per_token, shapes.expert_format,
                              spec.hidden_size, spec.moe_intermediate_size)
        hidden = spec.hidden_size
        source = source or f"model spec {spec.name}"
        if not meta_dense:
            dense = tuple(spec.dense_bytes_of_layer(int(m)) for m in shapes.trace_to_model)
    else:
        shapes = None
        # a trace that states its weights' dtype (meta.extra["weight_dtype"], e.g. the fp32 reference
        # harness) is read at that width; otherwise bf16 is assumed
        dtype = str(trace.meta.extra.get("weight_dtype", "bf16"))
        width = {"fp32": 4, "fp16": 2, "bf16": 2}.get(dtype, 2)
        fmt = dtype if dtype in ("fp32", "fp16", "bf16") else "bf16"
        params = np.maximum(obj_bytes // width, 1)
        experts = ExpertCosts(params, 2.0 * params, (fmt,) * n_layers)
        hidden = int(np.sqrt(params.max() / 3)) if n_layers else 0  # square-ish SwiGLU guess
        source = f"trace object bytes ({fmt} " + ("from the trace)" if "weight_dtype" in trace.meta.extra else "assumed)")
        flops_per_byte = 2.0 / width
    table = load_kernel_table(kernel_table) if isinstance(kernel_table, str) else kernel_table
    if table is None:
        table = _profile_table(profile)
    if table is not None and not table.matches(experts.hidden, experts.intermediate):
        table = None  # measured for another expert shape: the roofline stands
    return ComputeModel(spec, shapes, experts, device, procs, fw, table, hidden, dense, source,
                        getattr(profile, "name", ""), flops_per_byte)


def _profile_table(profile: Any) -> KernelTable | None:
    tables = getattr(profile, "kernel_tables", None)
    if not tables:
        return None
    if isinstance(tables, KernelTable):
        return tables
    return next((t for t in tables if isinstance(t, KernelTable)), None)


def non_expert_cell_times(trace: Trace, model: ComputeModel) -> NonExpertTimes:
    """Seconds per cell before (attention, router, embedding) and after (shared, dense FFN, LM head) the experts."""
    if model.shapes is not None:
        return non_expert_times(trace, model.shapes, model.device, model.framework)
    layer = trace.cell_layer.astype(np.int64)
    tokens = trace.cell_tokens.astype(np.float64)
    dbytes = np.asarray(model.dense_bytes, dtype=np.float64)[layer] if model.dense_bytes else np.zeros(trace.n_cells)
    flops = dbytes * model.dense_flops_per_byte * tokens  # 2 FLOPs per dense parameter
    pre = roofline(dbytes, flops, model.device, "bf16", tokens) + overhead(model.device, model.framework, "attention")
    return NonExpertTimes(pre=pre, post=np.zeros(trace.n_cells), by_operator={"dense": pre})


def expert_request_times(model: ComputeModel, req_layer: np.ndarray, req_bytes: np.ndarray, req_tokens: np.ndarray,
                         processor: str = "gpu") -> np.ndarray:
    """Seconds each request (one distinct expert run in a cell, with its tokens) takes alone on `processor`."""
    proc = model.processor(processor)
    table = model.table if proc is model.device else None
    return _request_times(req_layer, req_bytes, req_tokens, model.experts, proc, model.framework, table)


def expert_cell_times(model: ComputeModel, req_cell: np.ndarray, req_layer: np.ndarray, req_bytes: np.ndarray,
                      req_tokens: np.ndarray, n_cells: int, processor: str = "gpu", grouped: bool = True) -> np.ndarray:
    """Seconds per cell of the experts `processor` runs there (barrier mode: all of them in one grouped call)."""
    proc = model.processor(processor)
    table = model.table if proc is model.device else None
    return grouped_cell_times(req_cell, req_layer, req_bytes, req_tokens, n_cells, model.experts, proc,
                              model.framework, grouped, table)
