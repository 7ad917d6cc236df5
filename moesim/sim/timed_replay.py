"""Timed replay: TTFT, TPOT, stalls, bytes and energy for any policy on any hardware profile.

    from moesim.sim.timed_replay import TimedConfig, timed_replay
    result = timed_replay(trace, profile, TimedConfig(eviction="lru", prefetch="oracle:lookahead=1",
                                                      capacity_bytes=600 * 2**20))
    result.summary["tpot_s"]["mean"], result.cells, result.requests

Three steps, kept apart so the real-GPU executor can reuse the first one with a real clock:
plan (moesim.sim.plan: decisions, no clock) -> cost model (static durations from the profile) ->
engine (moesim.sim.engine: the simpy clock). Bounds (moesim.sim.bounds) are computed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import replace
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile
from moesim.policies.labels import run_label
from moesim.policies.placement import non_expert_on_cpu, numa_layout, parse_placement
from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim.bounds import compute_bounds
from moesim.sim.compute import (ComputeModel, compute_model, expert_cell_times, expert_request_times,
                                non_expert_cell_times)
from moesim.sim.cost_model import resolve_model_spec
from moesim.sim.engine import Pipelined, simulate
from moesim.sim.expert_compute import wait_compute
from moesim.sim.numa import with_layout
from moesim.sim.plan import PlanConfig, Planner
from moesim.sim.plan_types import parsed_specs
from moesim.sim.read_slices import slicing_for
from moesim.sim.timed_result import CellTimes, TimedResult, build_result
from moesim.sim.topology import Topology, build_topology
from moesim.traces.format.trace_meta import DECODE
from moesim.traces.format.trace import Trace

OVERLAP_MODES = ("layer", "expert")


@dataclass(frozen=True)
class TimedConfig:
    """One timed replay. Policy fields are spec strings ("lfu:decay=0.9", "oracle:lookahead=2").

    `profile` and `profile_overrides` only name where the HardwareProfile came from (they are
    recorded in results); `timed_replay` takes the resolved profile itself.
    """

    eviction: str = "lru"
    prefetch: str = "none"
    miss: str = "stall"
    capacity_bytes: int = 0
    scope: str = "global"
    profile: str = ""
    profile_overrides: tuple[str, ...] = ()
    model: str | None = None
    seed: int = 0
    layer_capacity: tuple[int, ...] | None = None
    dram_eviction: str = "lru"
    grouped_experts: bool = True
    bounds: bool = True
    cancel_unstarted: bool = False  # drop queued prefetch copies whose slot is reused (timing-dependent bytes)
    placement: str = "gpu"  # where routed experts run: a placement policy spec ("gpu", "cpu-layers:n=4", "cpu-all")
    framework: str | None = None  # kernel counts per operator ("eager", "cuda-graphs", "llama.cpp"); None: the profile's
    kernel_table: str | None = None  # a `moesim calibrate` JSON report whose measured expert-kernel times replace the roofline
    routing_sync: bool = False  # the host reads each cell's routing from the device before issuing its copies
    overlap: str | None = None  # "layer" (per-layer barrier) | "expert" (pipelined); None: the profile's default
    io_lanes: int | None = None  # reads in flight from storage (an engine's io threads); None: the profile's
    storage_reads: str | None = None  # "direct" | "buffered" (through the page cache); None: the profile's
    prefill_overlap: str | None = None  # "layer": prefill cells wait for all their reads whatever `overlap` says
    ffn_overlap: bool = False  # per-expert overlap: shared experts / dense FFN run while the layer's reads are in flight
    read_slices: tuple[float, ...] = ()  # shares of a storage read issued as one request per weight slice (read_slices.py)
    slice_order: str = "expert"  # "slice": a gate queues every miss's first slice, then every second, ...
    expert_order: str = "arrival"  # "id": per-expert overlap runs (slice, expert) units in expert-id order
    parsed: tuple[PolicySpec, PolicySpec, PolicySpec] | None = field(default=None, compare=False, repr=False)
    """The eviction, prefetch and miss specs already parsed (a RunSpec's, moesim/sim/run.py); see specs()."""

    def specs(self) -> tuple[PolicySpec, PolicySpec, PolicySpec]:
        """The parsed eviction, prefetch and miss specs: `parsed` while it still matches the strings (a
        dataclasses.replace() of a string leaves it stale), else parsed here."""
        return parsed_specs(self.parsed, (self.eviction, self.prefetch, self.miss))

    def plan_config(self) -> PlanConfig:
        return PlanConfig(eviction=self.eviction, prefetch=self.prefetch, miss=self.miss,
                          capacity_bytes=int(self.capacity_bytes), scope=self.scope,
                          layer_capacity=self.layer_capacity, seed=self.seed, dram_eviction=self.dram_eviction,
                          cancel_unstarted=self.cancel_unstarted, placement=self.placement, parsed=self.specs())

    def to_dict(self) -> dict[str, Any]:
        """Resolved: policy specs in canonical form with all their parameters."""
        specs = dict(zip(("eviction", "prefetch", "miss"), self.specs()))
        return {
            "eviction": specs["eviction"].to_dict(),
            "prefetch": specs["prefetch"].to_dict(),
            "miss": specs["miss"].to_dict(),
            "capacity_bytes": int(self.capacity_bytes),
            "scope": self.scope,
            "profile": self.profile,
            "profile_overrides": list(self.profile_overrides),
            "model": self.model,
            "seed": self.seed,
            "layer_capacity": None if self.layer_capacity is None else list(self.layer_capacity),
            "dram_eviction": self.dram_eviction,
            "grouped_experts": self.grouped_experts,
            "bounds": self.bounds,
            "cancel_unstarted": self.cancel_unstarted,
            "placement": parse_placement(self.placement).to_dict(),
            "framework": self.framework,
            "kernel_table": self.kernel_table,
            **({"routing_sync": True} if self.routing_sync else {}),  # only when set: older results stay as they were
            "overlap": self.overlap,
            "io_lanes": self.io_lanes,
            "storage_reads": self.storage_reads,
            **({"prefill_overlap": self.prefill_overlap} if self.prefill_overlap else {}),  # only when set
            **({"ffn_overlap": True} if self.ffn_overlap else {}),
            **({"read_slices": list(self.read_slices), "slice_order": self.slice_order} if self.read_slices else {}),
            **({"expert_order": self.expert_order} if self.expert_order != "arrival" else {}),
        }

    def label(self) -> str:
        """Short name for tables: eviction + prefetch + miss handling (defaults left out)."""
        return run_label(*self.specs(), parse_placement(self.placement))


@dataclass(frozen=True)
class PlanSetup:
    """A Planner with the static inputs its decisions read (shared by the simulator and the executor)."""

    planner: Planner
    compute: ComputeModel
    topology: Topology
    dense: np.ndarray  # seconds per cell (non-expert work: pre + post)
    expert_full: np.ndarray  # seconds per cell with every routed expert on the device
    pre: np.ndarray  # non-expert seconds before the layer's experts (attention, router, embedding)
    post: np.ndarray  # after them (shared experts, dense FFN, LM head)
    ffn: np.ndarray | None = None  # the part of `post` that does not read the routed experts' output (shared, dense FFN)
    dense_on_cpu: bool = False  # cpu-only placement: `dense` is CPU time and no activation crosses a link

    @property
    def shape(self) -> ComputeModel:
        """The model figures (`dense_bytes` per trace layer, ...) the real-GPU executor sizes its dense work by."""
        return self.compute


def setup_planner(trace: Trace, profile: HardwareProfile, config: TimedConfig) -> PlanSetup:
    """The planner both the simulator and the real-GPU executor drive, with the same budget window.

    The window (what the link can move from a gate to the next one, estimated from the profile)
    is the one input a prefetcher reads besides the cache state, so both layers must get it from here
    for their decisions to agree.
    """
    spec, formats = resolve_model_spec(trace, config.model)
    model = compute_model(trace, profile, spec, config.framework, config.kernel_table, formats)
    placement = parse_placement(config.placement)
    model = cpu_memory_layout(model, numa_layout(placement))
    topology = build_topology(profile, trace.total_object_bytes(), config.io_lanes, config.storage_reads)
    _check_capacity(profile, config)
    # cpu-only: the non-expert operators run on the CPU (read from host DRAM at its rate)
    on_cpu = non_expert_on_cpu(placement)
    non_expert = non_expert_cell_times(trace, replace(model, device=model.processor("cpu")) if on_cpu else model)
    pre, post = non_expert.pre, non_expert.post
    if config.routing_sync:  # the host reads the cell's routing before it can issue copies
        pre = pre + routing_sync_seconds(profile)
    dense = pre + post
    planner = Planner(trace, topology, config.plan_config())
    stream = planner.stream
    obj_bytes = trace.object_bytes_array()
    req_layer = trace.object_layer_array()[stream.obj]
    expert_full = expert_cell_times(model, stream.cell, req_layer, obj_bytes[stream.obj], planner.req_tokens_arr,
                                    trace.n_cells, "gpu", config.grouped_experts)
    # from this cell's gate to the next one's: its experts, its post part, the next cell's pre part
    planner.compute_window = expert_full + post + np.append(pre[1:], 0.0)
    ffn = non_expert.by_operator.get("shared", 0.0) + non_expert.by_operator.get("dense_ffn", 0.0)
    return PlanSetup(planner, model, topology, dense, expert_full, pre, post, np.zeros(trace.n_cells) + ffn, on_cpu)


def cpu_memory_layout(model: ComputeModel, layout: str) -> ComputeModel:
    """`model` with its CPU reading host memory at the rate the NUMA layout gives (moesim/sim/numa.py)."""
    cpus = [name for name, proc in model.processors.items() if proc.kind == "cpu"]
    if not cpus:
        return model
    procs = {name: with_layout(proc, layout) if name in cpus else proc for name, proc in model.processors.items()}
    device = procs[model.device.name] if model.device.name in cpus else model.device
    return replace(model, processors=procs, device=device)


def timed_replay(trace: Trace, profile: HardwareProfile, config: TimedConfig, engine: str | None = None) -> TimedResult:
    """Plan, time and bound one configuration. O(cells + copies) simpy work, O(requests) policy calls.

    `engine` picks the planner as count_replay's picks its replay (None: $MOESIM_ENGINE, else
    "auto"); both planners make the same decisions, so results do not depend on it.
    """
    overlap = config.overlap or profile.overlap
    if overlap not in OVERLAP_MODES:
        raise UserError(f"overlap must be one of {', '.join(OVERLAP_MODES)}, got {overlap!r}", "--overlap")
    if config.prefill_overlap not in (None, "layer"):
        raise UserError(f"prefill overlap must be layer (or unset), got {config.prefill_overlap!r}", "prefill_overlap")
    setup = setup_planner(trace, profile, config)
    planner, model, topology, dense, expert_full = (setup.planner, setup.compute, setup.topology, setup.dense,
                                                     setup.expert_full)
    stream = planner.stream
    obj_bytes = trace.object_bytes_array()
    req_bytes = obj_bytes[stream.obj]
    req_layer = trace.object_layer_array()[stream.obj]
    n_cells = trace.n_cells
    plan = planner.plan_rest(engine)

    expert = expert_cell_times(model, stream.cell, req_layer, req_bytes, plan.gpu_tokens, n_cells, "gpu",
                               config.grouped_experts)
    on_cpu = plan.cpu_tokens > 0
    cpu_compute = np.zeros(n_cells)
    if on_cpu.any():  # the CPU reads these experts from host DRAM itself: no copy to the GPU
        cpu_compute = expert_cell_times(model, stream.cell[on_cpu], req_layer[on_cpu], req_bytes[on_cpu],
                                        plan.cpu_tokens[on_cpu], n_cells, "cpu", config.grouped_experts)
    # a token whose experts run on the CPU sends its activation once and gets one combined result
    # back; without per-token detail that is min(expert-token pairs on the CPU, tokens in the cell)
    cpu_token_count = np.minimum(np.bincount(stream.cell[on_cpu], weights=plan.cpu_tokens[on_cpu],
                                             minlength=n_cells), trace.cell_tokens)
    activation = cpu_token_count * model.activation_bytes_per_token() * (0 if setup.dense_on_cpu else 1)
    cpu_path = np.zeros(n_cells)
    if on_cpu.any():
        has = cpu_token_count > 0
        moved = 0.0 if setup.dense_on_cpu else topology.activation_time(activation, profile.pageable)
        cpu_path = np.where(has, cpu_compute + moved, 0.0)
    pipelined = None
    per_req = None
    if overlap == "expert":  # one kernel per expert, each as soon as its bytes are in
        per_req = expert_request_times(model, req_layer, req_bytes, plan.gpu_tokens, "gpu")  # by operator
        expert = np.bincount(stream.cell, weights=per_req, minlength=n_cells) if n_cells else np.zeros(0)
        waited = wait_compute(plan.waits, plan.wait_offsets, plan.copy_obj, stream.cell, stream.obj, per_req,
                              trace.n_objects)
        barrier = prefill_barrier(trace, config)
        if barrier is not None:  # those cells run their experts as one grouped call once all are in
            expert = np.where(barrier, expert_cell_times(model, stream.cell, req_layer, req_bytes, plan.gpu_tokens,
                                                         n_cells, "gpu", config.grouped_experts), expert)
        overlappable = ffn_overlappable(setup.ffn, trace, config)
        pipelined = Pipelined(waited, expert, cpu_path, barrier, overlappable)
    times = CellTimes(dense=dense, expert=expert, cpu_path=cpu_path, cpu_compute=cpu_compute,
                      activation_bytes=np.where(cpu_token_count > 0, activation, 0.0))

    expert_eff = np.maximum(expert, cpu_path)  # the CPU and GPU parts of a cell run in parallel
    # from cell c-1's stall end to cell c's gate: c-1's experts and post part, then c's pre part
    pre_gate = setup.pre + np.concatenate(([0.0], (expert_eff + setup.post)[:-1])) if n_cells else np.zeros(0)
    server = np.asarray(topology.route_server, dtype=np.int64)[plan.copy_route]
    if (server < 0).any():  # the planner used a route role the topology did not resolve: a bug, not input
        raise RuntimeError(f"copies on unresolved route roles {sorted(set(plan.copy_route[server < 0].tolist()))}")
    slicing = slicing_for(config, profile, topology.servers, plan, stream.cell, stream.obj, per_req)
    engine = simulate(plan, server, pre_gate, topology.servers, pipelined, slicing)
    duration = engine.copy_end - engine.copy_start  # seconds each copy held its slot (NaN: cancelled)
    if engine.copy_busy is not None:  # reads split into slices: the lanes' summed time
        duration = engine.copy_busy

    bounds = None
    if config.bounds:
        handler = planner.handler
        bounds = compute_bounds(trace, stream, topology, dense, expert_full, config.capacity_bytes, config.scope,
                                config.layer_capacity, config.seed, byte_scale=handler.min_fetch_scale(),
                                valid=handler.bounds_hold and planner.placed is None, pipelined=overlap == "expert")
    return build_result(config, profile, plan, times, engine, duration, bounds, model.source)


def prefill_barrier(trace: Trace, config: TimedConfig) -> np.ndarray | None:
    """Cells that wait for all their reads under per-expert overlap: the prefill's, where the engine's
    batched expert matmul runs only once the layer's reads have returned (config.prefill_overlap)."""
    if config.prefill_overlap != "layer":
        return None
    return (trace.pass_phase != DECODE)[trace.cell_pass()]


def ffn_overlappable(ffn: np.ndarray | None, trace: Trace, config: TimedConfig) -> np.ndarray | None:
    """Seconds per cell the stream can run while the cell's reads are in flight (config.ffn_overlap): its
    shared experts and dense FFN, which read only the layer's input. Not in barrier (prefill) cells."""
    if not config.ffn_overlap or ffn is None:
        return None
    barrier = prefill_barrier(trace, config)
    return ffn if barrier is None else np.where(barrier, 0.0, ffn)


def routing_sync_seconds(profile: HardwareProfile) -> float:
    """What reading a cell's routing on the host adds before its gate: the router and top-k launches and
    one small device-to-host copy (the d2h link's latency; none on unified memory or the CPU device)."""
    link = profile.link("d2h") or profile.link("c2c")
    return 2.0 * profile.compute.launch_overhead + (link.latency if link is not None else 0.0)


def _check_capacity(profile: HardwareProfile, config: TimedConfig) -> None:
    vram = profile.tier(profile.device.memory)
    if config.capacity_bytes < 0:
        raise UserError(f"capacity must be non-negative, got {config.capacity_bytes}", "capacity")
    if vram is not None and config.capacity_bytes > vram.usable:
        raise UserError(f"{config.capacity_bytes} bytes exceed the profile's usable vram ({vram.usable:.0f} bytes); "
                        f"lower the capacity or raise memories.{profile.device.memory}.capacity with --set", f"profile {profile.name}")
