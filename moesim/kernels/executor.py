"""The real-GPU executor: the simulator's Planner, cell by cell, with a CUDA clock and real data movement.

    from moesim.kernels.executor import execute
    result = execute(trace, profile, TimedConfig(eviction="lru", prefetch="oracle", capacity_bytes=...),
                     device="cuda")
    result.decisions.first_difference(DecisionLog.from_plan(timed_replay(...).plan))  # None
    result.cells, result.passes, result.requests, result.summary

A policy never knows where it runs: the executor drives the very Planner the simulator drives
(`moesim.sim.timed_replay.setup_planner`, same cache core, same policy objects, same prefetch
budget window), so hits, misses, victims and copies are the simulator's, in the same order. It
adds only a clock and bytes:

- weights: model-shaped random experts (moesim.kernels.weights), one pinned host buffer per object
  (HostExpertStore); where the profile puts objects on SSD, a file written from it (SsdExpertStore)
  and, when DRAM caches SSD, a pinned DRAM slot pool;
- VRAM: a SlotPool with as many cache slots as the capacity holds objects, plus spare slots for
  misses the cache refused (streamed, no residue). An admitted object takes its first victim's
  slot, else the lowest free one;
- per cell, on the device's streams: the dense part (a GEMM over the layer's dense bytes, standing
  in for attention), the *gate* event, then the plan's copies on the side copy stream, which waits
  for the gate (copies are issued at the gate, as in the simulator), for the copies the plan says
  must finish first, and for the last kernel that read the slot (write-after-read, with events: the
  host runs ahead of the device); then the compute stream waits for the copies the plan says the
  cell waits for (the stall), runs the grouped SwiGLU kernel over the cell's tokens (random
  activations of hidden size, routed by the trace's expert ids and gate weights) and records the
  slots' reads;
- SSD reads (ssd -> dram, ssd -> bounce buffer) run on the host once the device reached the gate,
  after the readers of the DRAM slot they overwrite; experts the `cpu` miss handler sends to the
  host run there from host memory.

Copies are never cancelled: the plan decides which copies move bytes (see moesim.sim.plan,
`cancels`), so a config with `cancel_unstarted` is refused. Lossy miss handlers (lowbit, drop)
are refused too: they change which weights a token sees in ways the plan does not record.
On CPU (`device="cpu"`) everything runs synchronously with torch CPU tensors: decisions, data
movement and outputs are exact; times are host stamps and mean nothing.
GPU path only: imports torch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile
from moesim.json_values import json_ready
from moesim.kernels.compute import compute_cell, pick_backend
from moesim.kernels.cpu_expert import swiglu_experts
from moesim.kernels.decision_log import DecisionLog
from moesim.kernels.host_store import HostExpertStore, unpack
from moesim.kernels.reference import moe_reference
from moesim.kernels.shapes import ExpertShapes
from moesim.kernels.slot_pool import SlotPool
from moesim.kernels.ssd_store import SsdExpertStore
from moesim.kernels.streams import CopyStream, DeviceClock, Event
from moesim.kernels.validation_metrics import step_times
from moesim.kernels.weights import random_activations
from moesim.policies.registry import parse_spec
from moesim.sim.cache_core import CoreConfig, partition_capacities
from moesim.sim.plan import SETUP_CELL, CellPlan, PlannedCopy
from moesim.sim.timed_replay import TimedConfig, setup_planner
from moesim.sim.timed_result import request_table
from moesim.sim.topology import ROUTE_HOST, ROUTE_NAMES, ROUTE_SSD_DRAM, ROUTE_SSD_VRAM
from moesim.traces.format.trace_meta import PHASE_NAMES
from moesim.traces.format.trace import Trace

FORMAT = "moesim.execution/1"
SUPPORTED_MISS = ("stall", "cpu")
DENSE_RING = 4
"""Dense weight buffers cycled over layers: more than one so consecutive layers do not hit in L2."""
CPU_NOTE = ("device cpu with a GPU-shaped profile or prefetch: decisions, data movement and outputs are exact; "
            "timings are host stamps and mean nothing")
CPU_DEVICE_NOTE = ("device cpu with a CPU-device profile (experts in a file, DRAM cache) and no prefetch: the CPU "
                   "runs what the simulator models (reads at the gate, then the experts), so step times are measured")


@dataclass
class ExecutionResult:
    """One configuration run on a device: its decisions and what the clock measured.

    `cells` per cell (seconds from the run's start): start, gate (after the dense part), ready
    (after the stall), end; `passes` the step time of every pass; `requests` TTFT/TPOT as the
    simulator defines them; `copies` every copy with planned and moved bytes and its measured span.
    A cell's `gap_s` (and a pass's) is time the device sat idle before it because the host had not
    enqueued it yet: Python and policy overhead, which the simulator does not model.
    """

    config: TimedConfig
    profile: str
    device: str
    backend: str
    shapes: ExpertShapes
    trace_hash: str
    decisions: DecisionLog
    cells: pd.DataFrame
    passes: pd.DataFrame
    requests: pd.DataFrame
    copies: pd.DataFrame
    summary: dict[str, Any]
    outputs: list[np.ndarray] | None = field(default=None, repr=False)
    hazard_log: list[tuple] | None = field(default=None, repr=False)
    checked_cells: int = 0


def shapes_for_trace(trace: Trace, model: str | None = None, dtype: str = "bf16") -> ExpertShapes:
    """Expert shapes from the catalog model (`model`, else the trace's meta.model); UserError if unknown."""
    name = model or trace.meta.model
    if not name:
        raise UserError("the trace names no model: pass --model (a catalog model) for the expert shapes", "--model")
    from moesim.traces.models.catalog import load_model

    try:
        spec = load_model(name)
    except UserError as exc:
        if model:
            raise
        raise UserError(f"the trace's model {name!r} is not in the catalog ({exc}); pass --model", "--model") from None
    if spec.ffn_type != "swiglu":
        raise UserError(f"model {spec.name} has {spec.ffn_type} experts; the executor's kernel runs SwiGLU experts",
                        "--model")
    if spec.n_routed_experts != trace.meta.n_experts:
        raise UserError(f"model {spec.name} has {spec.n_routed_experts} experts per layer, the trace "
                        f"{trace.meta.n_experts}", "--model")
    try:
        return ExpertShapes.from_model_spec(spec, dtype=dtype, n_layers=trace.meta.n_layers)
    except ValueError as exc:
        raise UserError(str(exc), "--dtype") from None


def resolve_device(device: str, command: str = "the executor") -> torch.device:
    """"cpu", "cuda" or "cuda:N"; UserError (one line) when CUDA is asked for and absent."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use cuda, cuda:N or cpu", "--device") from None
    if dev.type == "cuda":
        from moesim.kernels.device import require_cuda

        require_cuda(command, dev.index or 0)
        return torch.device("cuda", dev.index or 0)
    if dev.type != "cpu":
        raise UserError(f"unknown device {device!r}; use cuda, cuda:N or cpu", "--device")
    return dev


def check_supported(config: TimedConfig, trace: Trace) -> None:
    """The executor runs what it can reproduce exactly; UserError otherwise."""
    miss = parse_spec(config.miss, "miss")
    if miss.name not in SUPPORTED_MISS:
        raise UserError(f"the executor runs miss handling {', '.join(SUPPORTED_MISS)}, not {miss.name!r} "
                        "(lossy handlers change which weights a token sees)", "--miss")
    if config.cancel_unstarted:
        raise UserError("the executor never cancels an issued copy (a CUDA stream cannot recall one); "
                        "validate with cancel_unstarted off", "config")
    if not trace.meta.top_k:
        raise UserError("the executor needs a fixed top-k (the trace's meta.top_k is not set)", "trace")


def cache_slots(trace: Trace, config: TimedConfig) -> int:
    """Cache slots the VRAM pool needs: the most objects the core's capacity can hold at once."""
    sizes = [int(b) for b in trace.meta.object_bytes]
    caps = partition_capacities(CoreConfig(capacity_bytes=int(config.capacity_bytes), scope=config.scope,
                                           layer_capacity=config.layer_capacity), trace.meta.n_layers)
    if config.scope == "global":
        n = caps[0] // min(sizes)
    else:
        n = sum(cap // size for cap, size in zip(caps, sizes))
    return int(min(n, trace.n_objects))


def execute(
    trace: Trace,
    profile: HardwareProfile,
    config: TimedConfig,
    device: str = "cuda",
    model: str | None = None,
    dtype: str = "bf16",
    seed: int = 0,
    telemetry: bool = True,
    shapes_override: ExpertShapes | None = None,
    backend: str = "auto",
    dense: bool = True,
    check: bool = False,
    keep_outputs: bool = False,
    ssd_dir: str | None = None,
    store: HostExpertStore | None = None,
    ssd_store: SsdExpertStore | None = None,
) -> ExecutionResult:
    """Run `config` on `device` with real copies and kernels; decisions come from the simulator's Planner.

    `shapes_override` replaces the catalog's expert shapes (tiny shapes for CPU tests: moved bytes
    then differ from the trace's planned bytes, which the summary reports). `check` verifies after
    every cell that each resident object's slot holds its host bytes (synchronising the device) and
    keeps the hazard log; `keep_outputs` returns every cell's output on the host. `store` reuses a
    host expert store across runs (building one is O(total expert bytes): minutes for a full model);
    it must hold `shapes` made with `seed`, and the caller keeps owning it. `ssd_store` likewise reuses
    the expert file written from that store (writing it is O(total expert bytes) to disk).
    """
    dev = resolve_device(device)
    check_supported(config, trace)
    if config.model and model and config.model != model:
        raise UserError(f"two models given: config {config.model!r}, argument {model!r}", "--model")
    if shapes_override is not None:
        shapes = shapes_override
        if (shapes.n_layers, shapes.n_experts) != (trace.meta.n_layers, trace.meta.n_experts):
            raise UserError(f"shapes have {shapes.n_layers} layers x {shapes.n_experts} experts, the trace "
                            f"{trace.meta.n_layers} x {trace.meta.n_experts}", "shapes")
    else:
        shapes = shapes_for_trace(trace, model or config.model, dtype)
    if store is not None and (store.shapes != shapes or store.seed != seed):
        raise ValueError(f"the store holds {store.shapes} with seed {store.seed}, the run needs {shapes} "
                         f"with seed {seed}")
    setup = setup_planner(trace, profile, config)
    run = _Run(trace, profile, config, dev, shapes, setup, seed, pick_backend(dev, backend), dense, check,
               keep_outputs, ssd_dir, store, ssd_store)
    try:
        return run.execute(telemetry)
    finally:
        run.close()


class _Run:
    """State of one execution: stores, pools, streams, per-copy events and per-cell events."""

    def __init__(self, trace: Trace, profile: HardwareProfile, config: TimedConfig, dev: torch.device,
                 shapes: ExpertShapes, setup: Any, seed: int, backend: str, dense: bool, check: bool,
                 keep_outputs: bool, ssd_dir: str | None, store: HostExpertStore | None,
                 ssd_store: SsdExpertStore | None = None) -> None:
        self.trace = trace
        self.profile = profile
        self.config = config
        self.dev = dev
        self.cuda = dev.type == "cuda"
        self.shapes = shapes
        self.planner = setup.planner
        self.topology = setup.topology
        self.cpu_device_timed = (not self.cuda and setup.topology.far and setup.topology.stage is None
                                 and parse_spec(config.prefetch, "prefetch").name == "none"
                                 and parse_spec(config.miss, "miss").name == "stall")
        self.backend = backend
        self.check = check
        self.keep_outputs = keep_outputs
        self.dtype = shapes.torch_dtype()
        self.clock = DeviceClock(dev)
        self.copies = CopyStream(dev, log=check, clock=self.clock)
        # one side stream per host-link copy engine of the profile, as the simulator's copy server has
        self.copy_streams = [self.copies] + [CopyStream(dev, shared=self.copies)
                                             for _ in range(max(self.topology.host_engines, 1) - 1)]
        self.device_copies = 0
        # a high-priority side stream for demand copies (CUDA): queued demand goes before queued prefetch
        self.demand_stream = CopyStream(dev, shared=self.copies, priority=-1) if self.cuda else None

        self.own_store = store is None
        self.store = HostExpertStore(shapes, seed=seed, pin=self.cuda) if store is None else store
        topo = self.topology
        self.own_ssd = ssd_store is None
        self.ssd = (ssd_store or SsdExpertStore(self.store, ssd_dir)) if topo.far else None
        sizes = [int(b) for b in trace.meta.object_bytes]
        self.dram: SlotPool | None = None
        if topo.dram_cache_bytes is not None:
            n_dram = int(min(topo.dram_cache_bytes // min(sizes), trace.n_objects))
            self.dram = SlotPool(shapes, n_dram, "cpu", n_spare=0 if n_dram else 1, pin=self.cuda)
        self.dram_staged: dict[int, torch.Tensor] = {}  # DRAM misses the DRAM cache refused, this cell
        self.dram_last_read: dict[int, Event] = {}  # DRAM slot -> end of the last copy that read it

        stream = self.planner.stream
        most = int(np.diff(stream.cell_offsets).max(initial=0))
        self.vram = SlotPool(shapes, cache_slots(trace, config), dev, n_spare=max(most, 1))

        max_tokens = int(trace.cell_tokens.max(initial=0))
        x = torch.from_numpy(random_activations(max(max_tokens, 1), shapes.hidden, seed))
        self.x_host = x
        self.x_dev = x.to(dev, self.dtype)
        self.top_k = int(trace.meta.top_k or 0)
        self.dense_w: list[torch.Tensor] = []
        dense_bytes = list(setup.shape.dense_bytes)
        if dense and any(dense_bytes):
            cols = max(1, max(dense_bytes) // (shapes.itemsize * shapes.hidden))
            rng = np.random.default_rng([int(seed), 1 << 29])
            for _ in range(min(DENSE_RING, trace.meta.n_layers)):
                w = rng.standard_normal((shapes.hidden, cols), dtype=np.float32) / np.sqrt(shapes.hidden)
                self.dense_w.append(torch.from_numpy(w).to(dev, self.dtype))
            self.dense_cols = [max(1, int(b) // (shapes.itemsize * shapes.hidden)) if b else 0 for b in dense_bytes]

        # per copy (by copy id) and per cell
        self.done: list[Event] = []
        self.copy_rows: list[dict[str, Any]] = []
        self.cell_events: list[tuple[Event, Event, Event, Event]] = []
        self.cell_cpu_s: list[float] = []
        self.plans: list[CellPlan] = []
        self.setup: tuple[PlannedCopy, ...] = ()
        self.outputs: list[np.ndarray] | None = [] if keep_outputs else None
        self.checked = 0
        self.routing, self.groups = self._align_routing()
        self.router_w = None
        if config.routing_sync:  # the routing itself still comes from the trace: decisions stay the plan's
            rng = np.random.default_rng([int(seed), 1 << 28])
            w = rng.standard_normal((shapes.hidden, shapes.n_experts), dtype=np.float32) / np.sqrt(shapes.hidden)
            self.router_w = torch.from_numpy(w).to(dev, self.dtype)

    def _align_routing(self) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[list[tuple]]]:
        """Per cell, before the timed loop: top-k ids and gate weights [T, K] and, for the CPU operator,
        (expert, token rows, gate weights) per distinct expert in the order of first appearance."""
        trace, k = self.trace, self.top_k
        routing, groups = [], []
        for c in range(trace.n_cells):
            tokens = int(trace.cell_tokens[c])
            lo, hi = int(trace.cell_offsets[c]), int(trace.cell_offsets[c + 1])
            ids = trace.expert[lo:hi].astype(np.int64).reshape(tokens, k)
            if trace.weight is not None:
                weights = trace.weight[lo:hi].astype(np.float32).reshape(tokens, k)
            else:
                weights = np.full((tokens, k), 1.0 / k, dtype=np.float32)
            routing.append((ids, weights))
            cell = []
            if self.backend == "cpu":
                for e in dict.fromkeys(ids.reshape(-1).tolist()):
                    rows, ks = np.nonzero(ids == e)
                    cell.append((int(e), torch.from_numpy(rows), torch.from_numpy(weights[rows, ks]).to(self.dtype)))
            groups.append(cell)
        return routing, groups

    # ---- the run ------------------------------------------------------------------------------
    def execute(self, want_telemetry: bool) -> ExecutionResult:
        if self.cuda:
            self._warm_up()
        tele = None
        if want_telemetry and self.cuda:
            from moesim.kernels.telemetry import open_telemetry

            tele = open_telemetry(self.dev.index or 0)
            tele.start()
        t0 = self.clock.record()
        self.setup = self.planner.setup_copies()
        for cp in self.setup:
            self._issue(cp, None, SETUP_CELL)
        for c in range(self.trace.n_cells):
            self._cell(c)
        self.clock.synchronize()
        for engine in self.copy_streams:
            engine.synchronize()
        nvml = None
        if tele is not None:
            tele.stop()
            window = tele.summary()
            nvml = {"device": tele.device_info(), "window": None if window is None else window.to_dict()}
            tele.close()
        return self._result(t0, nvml)

    def close(self) -> None:
        if self.ssd is not None and self.own_ssd:
            self.ssd.close()
        if self.own_store:
            self.store.close()

    def _warm_up(self) -> None:
        """JIT-compile the kernel's tile configs, create the cuBLAS handle and the copy stream's first use."""
        from moesim.kernels.expert_kernel import default_config, device_smem_limit, grouped_swiglu

        table = torch.full((self.shapes.n_experts,), -1, dtype=torch.int32, device=self.dev)
        for tokens in (1, 32, 128):
            n = min(tokens, self.x_dev.shape[0])
            ids = torch.zeros((n, self.top_k), dtype=torch.int64, device=self.dev)
            ids += torch.arange(self.top_k, device=self.dev) % self.shapes.n_experts
            w = torch.ones((n, self.top_k), dtype=torch.float32, device=self.dev)
            if self.backend == "triton":
                grouped_swiglu(self.x_dev[:n], ids, w, self.vram.pool, table, self.shapes.hidden, self.shapes.inter,
                               config=default_config(tokens, device_smem_limit(self.dev), self.shapes.itemsize))
            for dense_w in self.dense_w[:1]:
                _ = self.x_dev[:n] @ dense_w
        self.copies.copy(self.vram.pool[0, :16], self.store.buffer(self.store.objects[0])[:16])
        self.copies.records.clear()
        torch.cuda.synchronize(self.dev)

    # ---- one cell -----------------------------------------------------------------------------
    def _cell(self, c: int) -> None:
        plan = self.planner.step(c)
        self.plans.append(plan)
        clock = self.clock
        layer = plan.layer
        tokens = int(self.trace.cell_tokens[c])
        x = self.x_dev[:tokens]
        start = clock.record()
        if self.dense_w and tokens and self.dense_cols[layer]:
            _ = x @ self.dense_w[layer % len(self.dense_w)][:, : self.dense_cols[layer]]
        if self.router_w is not None and tokens:  # routing_sync: the host reads a router's top-k (a real sync)
            torch.topk(x @ self.router_w, self.top_k, dim=-1).indices.cpu()
        gate = clock.record()
        for cp in plan.copies:
            self._issue(cp, gate, c)
        compute_stream = clock.compute_stream()
        for k in plan.waits:  # the stall: copies this cell must see landed (the plan's, as in the simulator)
            ev = self.done[k].cuda_event
            if ev is not None:
                compute_stream.wait_event(ev)
        ready = clock.record()
        cpu_s = 0.0
        if tokens:
            ids, weights = self.routing[c]
            n_exp = self.shapes.n_experts
            on_host = [obj % n_exp for obj, t in zip(plan.objects, plan.cpu_tokens) if t > 0]
            if self.backend == "cpu" and not on_host:  # the calibrated CPU operator, groups aligned before the loop
                groups = [(rows, gate, self.vram.views(self.shapes.obj(layer, e)))
                          for e, rows, gate in self.groups[c]]
                y = swiglu_experts(x, torch.zeros_like(x), groups)
            else:
                y = compute_cell(self.vram, layer, x, ids, weights, self.copies,
                                 backend="torch" if self.backend == "cpu" else self.backend, skip=on_host)
            if on_host:
                t_host = time.perf_counter()
                y = y + self._host_experts(layer, tokens, ids, weights, on_host)
                cpu_s = time.perf_counter() - t_host
            if self.outputs is not None:
                self.outputs.append(y.float().cpu().numpy())
        elif self.outputs is not None:
            self.outputs.append(np.zeros((0, self.shapes.hidden), dtype=np.float32))
        end = clock.record()
        self.cell_events.append((start, gate, ready, end))
        self.cell_cpu_s.append(cpu_s)
        self.vram.release_staged()
        self.dram_staged.clear()
        if self.check:
            self._check_slots(c)

    def _host_experts(self, layer: int, tokens: int, ids: np.ndarray, weights: np.ndarray,
                      experts: list[int]) -> torch.Tensor:
        """The `cpu` miss handler's experts, run on the host from host memory; the result goes to the device."""
        wanted = set(experts)
        shapes = self.shapes
        zeros = (torch.zeros(shapes.hidden, shapes.inter), torch.zeros(shapes.hidden, shapes.inter),
                 torch.zeros(shapes.inter, shapes.hidden))

        def weights_of(e: int) -> tuple[torch.Tensor, ...]:
            return self._host_views(shapes.obj(layer, e)) if e in wanted else zeros

        y = moe_reference(self.x_host[:tokens], torch.from_numpy(ids), torch.from_numpy(weights), weights_of,
                          compute_dtype=torch.float32)
        return y.to(self.dev, self.dtype)

    def _host_views(self, obj: int) -> tuple[torch.Tensor, ...]:
        """Host weights of obj where the plan put them: read from SSD this cell, the DRAM tier, or the host store."""
        if obj in self.dram_staged or self.topology.far:
            return unpack(self._dram_buffer(obj), self.shapes)
        return self.store.views(obj)

    # ---- copies -------------------------------------------------------------------------------
    def _issue(self, cp: PlannedCopy, gate: Event | None, cell: int) -> None:
        if cp.copy_id != len(self.done):
            raise RuntimeError(f"copy {cp.copy_id} issued out of order (expected {len(self.done)})")
        row: dict[str, Any] = {"copy": cp.copy_id, "cell": cell, "obj": cp.obj, "route": ROUTE_NAMES[cp.route],
                               "prefetch": cp.prefetch, "resident": cp.resident, "planned_bytes": cp.nbytes,
                               "moved_bytes": self.shapes.expert_bytes, "host_read_s": 0.0}
        if cp.route == ROUTE_SSD_DRAM:
            self._host_at(gate)
            self._host_wait(cp.deps)
            dst = self._dram_place(cp)
            t_read = time.perf_counter_ns()
            self.ssd.read_into(cp.obj, dst)  # type: ignore[union-attr]
            now = time.perf_counter_ns()
            row["host_read_s"] = (now - t_read) * 1e-9
            self.done.append(Event(-1, now))
            row["start"] = row["end"] = None
            self.copy_rows.append(row)
            return
        if cp.route == ROUTE_SSD_VRAM and not self.cuda:  # CPU device: the file read fills the cache slot itself
            slot = self._vram_place(cp)
            t_read = time.perf_counter_ns()
            start = self.clock.record()
            self.ssd.read_into(cp.obj, self.vram.pool[slot])  # type: ignore[union-attr]
            end = self.clock.record()
            row["host_read_s"] = (time.perf_counter_ns() - t_read) * 1e-9
            self.done.append(end)
            row["start"], row["end"] = start, end
            self.copy_rows.append(row)
            return
        if cp.route == ROUTE_SSD_VRAM:
            self._host_at(gate)
            src = torch.empty(self.shapes.elems, dtype=self.dtype, pin_memory=self.cuda)
            t_read = time.perf_counter_ns()
            self.ssd.read_into(cp.obj, src)  # type: ignore[union-attr]
            row["host_read_s"] = (time.perf_counter_ns() - t_read) * 1e-9
            dram_slot = None
        elif self.dram is not None:
            src = self._dram_buffer(cp.obj)
            slot = int(self.dram.slot_of[cp.obj])
            dram_slot = slot if 0 <= slot < self.dram.n_slots else None
        else:
            src = self.store.buffer(cp.obj)
            dram_slot = None
        slot = self._vram_place(cp)
        if cp.prefetch or self.demand_stream is None:
            engine = self.copy_streams[self.device_copies % len(self.copy_streams)]  # round robin over engines
            self.device_copies += 1
        else:  # demand copies do not queue behind issued prefetches (the simulator's rule, README "copy order")
            engine = self.demand_stream
        if self.cuda:
            side = engine.stream
            if gate is not None:
                side.wait_event(gate.cuda_event)
            for j in cp.deps + cp.cancels:  # copies that must finish first (a reused slot's previous writer)
                ev = self.done[j].cuda_event
                if ev is not None:
                    side.wait_event(ev)
        rec = engine.copy(self.vram.pool[slot], src, slot=slot, tag=cp.obj)
        self.done.append(rec.end)
        if dram_slot is not None:
            self.dram_last_read[dram_slot] = rec.end
        row["start"], row["end"] = rec.start, rec.end
        self.copy_rows.append(row)

    def _host_at(self, gate: Event | None) -> None:
        """The host waits until the device reached the cell's gate (host-side reads are issued there)."""
        if gate is not None and gate.cuda_event is not None:
            gate.cuda_event.synchronize()

    def _host_wait(self, copy_ids: tuple[int, ...]) -> None:
        for j in copy_ids:
            ev = self.done[j].cuda_event
            if ev is not None:
                ev.synchronize()

    def _vram_place(self, cp: PlannedCopy) -> int:
        """The VRAM slot copy `cp` writes: evict its victims, then a cache slot (resident) or a spare one."""
        pool = self.vram
        obj = cp.obj
        current = int(pool.slot_of[obj])
        if 0 <= current < pool.n_slots:  # evicted earlier with nobody taking its room yet: copy it again
            pool.evict(obj)
        victims = [v for v in cp.victims if v != obj]
        for v in victims:
            if not 0 <= int(pool.slot_of[v]) < pool.n_slots:
                raise RuntimeError(f"victim {v} of copy {cp.copy_id} has no cache slot")
        if cp.resident:
            slot, needs_copy = pool.place(obj, victims)
            assert needs_copy
            return slot
        for v in victims:
            pool.evict(v)
        return pool.stage(obj)

    def _dram_place(self, cp: PlannedCopy) -> torch.Tensor:
        """The host buffer an ssd -> dram copy fills, after the readers of the slot it overwrites."""
        dram = self.dram
        obj = cp.obj
        if dram is None:  # objects live on SSD and DRAM caches nothing: a buffer for this cell (cpu handler)
            buf = torch.empty(self.shapes.elems, dtype=self.dtype, pin_memory=self.cuda)
            self.dram_staged[obj] = buf
            return buf
        current = int(dram.slot_of[obj])
        if 0 <= current < dram.n_slots:
            dram.evict(obj)
        victims = [v for v in cp.victims if v != obj]
        if not cp.resident:
            for v in victims:
                dram.evict(v)
            buf = torch.empty(self.shapes.elems, dtype=self.dtype, pin_memory=self.cuda)
            self.dram_staged[obj] = buf
            return buf
        slot, _ = dram.place(obj, victims)
        last = self.dram_last_read.pop(slot, None)  # write-after-read on the DRAM slot
        if last is not None and last.cuda_event is not None:
            last.cuda_event.synchronize()
        return dram.pool[slot]

    def _dram_buffer(self, obj: int) -> torch.Tensor:
        dram = self.dram
        if dram is not None and 0 <= int(dram.slot_of[obj]) < dram.n_slots:
            return dram.pool[int(dram.slot_of[obj])]
        try:
            return self.dram_staged[obj]
        except KeyError:
            raise RuntimeError(f"object {obj} is in neither the DRAM tier nor a staging buffer") from None

    # ---- checks -------------------------------------------------------------------------------
    def _check_slots(self, c: int) -> None:
        """Every object the cache core holds sits in a slot holding its host bytes (both tiers)."""
        self.clock.synchronize()
        for engine in self.copy_streams:
            engine.synchronize()
        core = self.planner.core
        resident = set(core.resident_objects())
        pending = set(self.planner.orphans)  # evicted, their room not yet taken: still mapped
        mapped = set(self.vram.resident())
        if mapped - pending != resident:
            raise RuntimeError(f"cell {c}: VRAM slots hold {sorted(mapped - pending)}, the cache core "
                               f"{sorted(resident)}")
        for obj in resident:
            slot = int(self.vram.slot_of[obj])
            if not torch.equal(self.vram.pool[slot].cpu(), self.store.buffer(obj)):
                raise RuntimeError(f"cell {c}: VRAM slot {slot} does not hold object {obj}'s bytes")
        if self.dram is not None and self.planner.dram is not None:
            d_resident = set(self.planner.dram.resident_objects())
            d_mapped = set(self.dram.resident()) - set(self.planner.dram_orphans)
            if d_mapped != d_resident:
                raise RuntimeError(f"cell {c}: DRAM slots hold {sorted(d_mapped)}, the DRAM core {sorted(d_resident)}")
            for obj in d_resident:
                if not torch.equal(self.dram.pool[int(self.dram.slot_of[obj])], self.store.buffer(obj)):
                    raise RuntimeError(f"cell {c}: the DRAM slot of object {obj} does not hold its bytes")
        self.checked += 1

    # ---- results ------------------------------------------------------------------------------
    def _result(self, t0: Event, nvml: dict[str, Any] | None) -> ExecutionResult:
        trace = self.trace
        n = trace.n_cells
        times = np.asarray([[t0.seconds_until(e) for e in ev] for ev in self.cell_events], dtype=np.float64)
        times = times.reshape(n, 4)
        start, gate, ready, end = times.T
        decisions = DecisionLog.from_steps(self.setup, self.plans)
        copies = self._copy_table(t0)
        cells = self._cell_table(decisions, start, gate, ready, end)
        cells["late_prefetch"] = self._late_prefetches(copies, gate)
        steps = step_times(trace, end)
        phase = np.asarray([PHASE_NAMES[int(p)] for p in trace.pass_phase], dtype=object)
        gaps = np.bincount(trace.cell_pass(), weights=np.clip(cells["gap_s"].to_numpy(), 0.0, None),
                           minlength=trace.n_passes) if n else np.zeros(trace.n_passes)
        passes = pd.DataFrame({
            "pass": np.arange(trace.n_passes, dtype=np.int64),
            "phase": phase,
            "tokens": np.diff(trace.pass_token_offsets).astype(np.int64),
            "step_s": steps,
            "gap_s": gaps,  # device idle within the step, waiting for the host to enqueue work
        })
        requests = request_table(trace, start, end) if n else pd.DataFrame()
        summary = self._summary(decisions, cells, copies, passes, requests, nvml)
        return ExecutionResult(
            config=self.config, profile=self.profile.name, device=str(self.dev), backend=self.backend,
            shapes=self.shapes, trace_hash=trace.content_hash(), decisions=decisions, cells=cells, passes=passes,
            requests=requests, copies=copies, summary=summary, outputs=self.outputs,
            hazard_log=self.copies.log, checked_cells=self.checked,
        )

    def _cell_table(self, decisions: DecisionLog, start: np.ndarray, gate: np.ndarray, ready: np.ndarray,
                    end: np.ndarray) -> pd.DataFrame:
        trace = self.trace
        n = trace.n_cells
        req_cell = self.planner.stream.cell
        out = decisions.outcomes

        def per_cell(mask: np.ndarray) -> np.ndarray:
            return np.bincount(req_cell[mask], minlength=n).astype(np.int64)

        in_cell = decisions.copy_cell >= 0
        cell_of = np.where(in_cell, decisions.copy_cell, 0)
        previous_end = np.concatenate(([0.0], end[:-1])) if n else end
        columns: dict[str, Any] = {
            "pass": trace.cell_pass().astype(np.int64),
            "layer": trace.cell_layer.astype(np.int64),
            "tokens": trace.cell_tokens.astype(np.int64),
            "start_s": start, "gate_s": gate, "ready_s": ready, "end_s": end,
            "dense_s": gate - start, "stall_s": ready - gate, "expert_s": end - ready,
            "cpu_s": np.asarray(self.cell_cpu_s, dtype=np.float64),
            "gap_s": start - previous_end,
            "hits": per_cell(out <= 1),
            "misses": per_cell(out >= 2),
            "compulsory": per_cell(out == 2),
            "capacity": per_cell(out == 3),
            "collision": per_cell(out == 4),
            "demand_copies": np.bincount(cell_of[in_cell & ~decisions.copy_prefetch], minlength=n).astype(np.int64),
            "prefetch_copies": np.bincount(cell_of[in_cell & decisions.copy_prefetch], minlength=n).astype(np.int64),
        }
        for r, name in enumerate(ROUTE_NAMES):
            sel = in_cell & (decisions.copy_route == r)
            if sel.any():
                columns[f"bytes_{name}"] = np.bincount(cell_of[sel], weights=decisions.copy_bytes[sel],
                                                       minlength=n).astype(np.int64)
        return pd.DataFrame(columns)

    def _late_prefetches(self, copies: pd.DataFrame, gate: np.ndarray) -> np.ndarray:
        """Per cell: prefetch copies it waited for that had not landed at its gate (the simulator's `late`)."""
        end = copies["end_s"].to_numpy()
        prefetch = copies["prefetch"].to_numpy(dtype=bool)
        late = np.zeros(len(self.plans), dtype=np.int64)
        for c, plan in enumerate(self.plans):
            late[c] = sum(1 for k in plan.waits if prefetch[k] and end[k] > gate[c])
        return late

    def _copy_table(self, t0: Event) -> pd.DataFrame:
        rows = []
        for row in self.copy_rows:
            start, end = row.pop("start"), row.pop("end")
            row["start_s"] = t0.seconds_until(start) if start is not None else float("nan")
            row["end_s"] = t0.seconds_until(end) if end is not None else float("nan")
            row["copy_s"] = start.seconds_until(end) if start is not None else float("nan")
            rows.append(row)
        columns = ["copy", "cell", "obj", "route", "prefetch", "resident", "planned_bytes", "moved_bytes",
                   "host_read_s", "start_s", "end_s", "copy_s"]
        return pd.DataFrame(rows, columns=columns)

    def _summary(self, decisions: DecisionLog, cells: pd.DataFrame, copies: pd.DataFrame, passes: pd.DataFrame,
                 requests: pd.DataFrame, nvml: dict[str, Any] | None) -> dict[str, Any]:
        moved: dict[str, dict[str, int]] = {}
        for name, group in copies.groupby("route", sort=True):
            moved[str(name)] = {"copies": int(len(group)), "bytes": int(group["moved_bytes"].sum())}
        h2d = copies[(copies["route"] == ROUTE_NAMES[ROUTE_HOST]) & copies["copy_s"].notna()]
        busy = float(h2d["copy_s"].sum()) if len(h2d) else 0.0
        per_copy = (h2d["moved_bytes"] / h2d["copy_s"]).replace([np.inf, -np.inf], np.nan).dropna()
        calibrated = self.topology.host_bandwidth or None
        throughput = float(h2d["moved_bytes"].sum()) / busy if busy > 0 else None
        window = (nvml or {}).get("window") or {}
        rx = window.get("pcie_rx_bytes")
        total_s = float(cells["end_s"].iloc[-1]) if len(cells) else 0.0
        steps = passes["step_s"].dropna().to_numpy()
        summary: dict[str, Any] = {
            "format": FORMAT,
            "label": self.config.label(),
            "config": self.config.to_dict(),
            "profile": self.profile.name,
            "device": str(self.dev),
            "device_name": torch.cuda.get_device_name(self.dev) if self.cuda else "cpu",
            "backend": self.backend,
            "shapes": {**asdict(self.shapes), "expert_bytes": self.shapes.expert_bytes},
            "timings_meaningful": self.cuda or self.cpu_device_timed,
            "note": "" if self.cuda else (CPU_DEVICE_NOTE if self.cpu_device_timed else CPU_NOTE),
            "decisions": decisions.counts(),
            "late_prefetch": int(cells["late_prefetch"].sum()) if len(cells) else 0,
            "moved": moved,
            "moved_equals_planned": bool((copies["moved_bytes"] == copies["planned_bytes"]).all()),
            "time": {
                "total_s": total_s,
                "dense_s": float(cells["dense_s"].sum()),
                "stall_s": float(cells["stall_s"].sum()),
                "expert_s": float(cells["expert_s"].sum()),
                "cpu_s": float(cells["cpu_s"].sum()),
                "gap_s": float(cells["gap_s"].clip(lower=0).sum()),
            },
            "step_s": _stats(steps),
            "ttft_s": _stats(requests["ttft_s"].to_numpy() if len(requests) else np.zeros(0)),
            "tpot_s": _stats(requests["tpot_s"].to_numpy() if len(requests) else np.zeros(0)),
            "h2d": {
                "copies": int(len(h2d)),
                "bytes": int(h2d["moved_bytes"].sum()),
                "busy_s": busy,
                "throughput_Bps": throughput,
                "median_copy_Bps": float(per_copy.median()) if len(per_copy) else None,
                "calibrated_Bps": calibrated,
                "throughput_over_calibrated": throughput / calibrated if throughput and calibrated else None,
            },
            "nvml": nvml,
            "nvml_rx_bytes": rx,
            "nvml_rx_over_h2d_bytes": (rx / float(h2d["moved_bytes"].sum())) if rx and len(h2d) else None,
            "energy_J": window.get("energy_J"),
            "checked_cells": self.checked,
        }
        return json_ready(summary)


def _stats(values: np.ndarray) -> dict[str, float | None]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "p50": None, "p99": None, "max": None}
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "max": float(v.max())}
