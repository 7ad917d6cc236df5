"""The decision layer: which objects hit, which copies to issue, over which route, into whose slots.

No clock is read here. The planner drives the cache core of the cache tier (VRAM), a second core for
host DRAM when DRAM is a cache over SSD, the eviction policy, the prefetch policy and the miss
handler over the trace, cell by cell, with the event-atomic protocol:

    begin_pass (on a new pass)
    begin_cell(objects)           classify every object at the cell's start; protect them
    misses -> miss handler        fetch (admit, evicting), run on the CPU, or drop
    prefetch proposals            issued after the cell's demand decisions, never evicting the
                                  cell's objects or another object proposed in the same batch
    fill every admitted object    copies are *logically* complete when the cell's decisions end
    end_cell(objects)

A demand hit on an object whose prefetch copy has not physically landed is a late prefetch: the
timing layer decides that, not this one. Whether a prefetch is issued depends only on the cache
state, the policies and the profile's static figures (the estimated compute window), so the
real-GPU executor can drive the very same planner with a real clock: `Planner.step(cell)` gives one
cell's decisions as a CellPlan; `plan_trace` runs all cells into flat arrays for the engine.

Copies carry three kinds of ordering constraints, enforced by whoever executes them:
- `deps`: copies that must finish first: the ssd -> dram copy a dram -> vram copy reads from; the
  last copy that read a DRAM slot being reused (write-after-read); the copy still writing a reused
  DRAM slot (write-after-write).
- `cancels`: copies into VRAM slots this copy reuses that no cell has waited for (prefetches never
  used, pinned loads), so they may still be in flight (a copy some cell waited for has landed:
  cells run in order). By default this copy waits for them (write-after-write): an issued copy
  always runs, as a copy enqueued on a CUDA stream does, so which copies move bytes is decided
  here and the real-GPU executor moves exactly the same bytes. With `cancel_unstarted` the timing
  layer instead drops one that has not started when this copy is issued (a host-side fetch queue
  that can forget entries); bytes then depend on timing and no executor can reproduce them.
- VRAM victims' readers: a victim is never an object of the current cell (those are protected),
  so its last reader is an earlier cell. With one in-order compute stream and copies issued at the
  cell's gate that reader has ended; an executor whose host runs ahead of the device must make the
  copy wait for it (the write-after-read hazard).
With prefetch "none" and miss handler "stall" the planner's outcomes equal count_replay's in event
mode, request for request.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext, PrefetchView
from moesim.policies.miss_handling import CPU, FETCH, SKIP, MissView
from moesim.policies.placement import parse_placement
from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim.count_replay import profile_counts
from moesim.sim.cache_core import ABSENT, HIT, MISS_COMPULSORY, CacheCore, CoreConfig, CoreCounters
from moesim.sim.future import StreamFuture
from moesim.sim.requests import RequestStream, build_request_stream
from moesim.sim.topology import ROUTE_DIRECT, ROUTE_LAST, ROUTE_STAGE, Topology
from moesim.traces.format.trace import Trace

SETUP_CELL = -1
"""Cell index of the copies that load pinned objects before the first cell."""
PLACED = -1
"""Outcome of a request whose object a placement policy keeps on the CPU (neither hit nor miss)."""


@dataclass(frozen=True)
class PlanConfig:
    """The decisions' inputs. Specs are strings such as "lru", "oracle:lookahead=2", "lowbit:bits=4"."""

    eviction: str = "lru"
    prefetch: str = "none"
    miss: str = "stall"
    capacity_bytes: int = 0
    scope: str = "global"
    layer_capacity: tuple[int, ...] | None = None
    seed: int = 0
    dram_eviction: str = "lru"
    cancel_unstarted: bool = False  # see the module docstring (`cancels`)
    placement: str = "gpu"  # moesim/policies/placement.py: objects kept on the CPU never enter the cache


@dataclass(frozen=True)
class PlannedCopy:
    """One copy of a CellPlan (the step API's view of the flat copy arrays)."""

    copy_id: int
    obj: int
    nbytes: int
    route: int
    prefetch: bool
    resident: bool  # False: a miss streamed through a temporary buffer (no room could be made)
    victims: tuple[int, ...]  # objects whose slots in the destination tier this copy reuses
    deps: tuple[int, ...]
    cancels: tuple[int, ...]


@dataclass(frozen=True)
class CellPlan:
    """The decisions of one cell, for executors that run cell by cell."""

    cell: int
    pass_index: int
    layer: int
    objects: tuple[int, ...]
    outcomes: tuple[int, ...]
    gpu_tokens: tuple[int, ...]  # tokens each object processes on the device (0: CPU or dropped)
    cpu_tokens: tuple[int, ...]  # tokens each object processes on the host CPU
    copies: tuple[PlannedCopy, ...]
    waits: tuple[int, ...]  # copy ids the cell's compute must wait for
    altered: int  # expert applications altered by lossy miss handling


@dataclass
class Plan:
    """Every decision of a run, as flat arrays (copies in issue order; setup copies first)."""

    trace: Trace
    config: PlanConfig
    topology: Topology
    stream: RequestStream
    eviction: PolicySpec
    prefetch: PolicySpec
    miss: PolicySpec
    lossy: bool
    outcomes: np.ndarray  # int8 per request
    bypassed: np.ndarray  # bool per request
    gpu_tokens: np.ndarray  # int32 per request
    cpu_tokens: np.ndarray  # int32 per request
    req_tokens: np.ndarray  # int32 per request: tokens routed to the object in its cell
    altered: np.ndarray  # int64 per cell
    copy_obj: np.ndarray
    copy_bytes: np.ndarray
    copy_route: np.ndarray
    copy_prefetch: np.ndarray
    copy_resident: np.ndarray
    copy_cell: np.ndarray  # issuing cell (SETUP_CELL for pinned loads)
    dep_offsets: np.ndarray
    deps: np.ndarray
    cancel_offsets: np.ndarray
    cancels: np.ndarray
    victim_offsets: np.ndarray
    victims: np.ndarray
    cell_copy_offsets: np.ndarray  # copies issued at cell c: [cell_copy_offsets[c], cell_copy_offsets[c + 1])
    n_setup_copies: int
    wait_offsets: np.ndarray
    waits: np.ndarray
    counters: CoreCounters
    dram_counters: dict[str, int] = field(default_factory=dict)
    engine: str = "reference"  # which planner decided it ("fast": the compiled one); never saved

    @property
    def n_copies(self) -> int:
        return int(self.copy_obj.shape[0])


class Planner:
    """Decisions cell by cell. `step(c)` must be called for c = 0, 1, ... in order."""

    def __init__(
        self,
        trace: Trace,
        topology: Topology,
        config: PlanConfig,
        compute_window: np.ndarray | None = None,
    ) -> None:
        self.trace = trace
        self.topology = topology
        self.config = config
        self.stream = build_request_stream(trace, "event")
        self.eviction_spec = parse_spec(config.eviction, "eviction")
        self.prefetch_spec = parse_spec(config.prefetch, "prefetch")
        self.miss_spec = parse_spec(config.miss, "miss")
        n_obj = trace.n_objects
        self.object_bytes = trace.object_bytes_array().tolist()
        offline = bool(getattr(self.eviction_spec.entry.cls, "offline", False))
        self.future = StreamFuture(self.stream.obj, n_obj) if offline else None
        self.ctx = PolicyContext(
            n_objects=n_obj,
            n_layers=trace.meta.n_layers,
            n_experts=trace.meta.n_experts,
            object_layer=trace.object_layer_array(),
            object_bytes=trace.object_bytes_array(),
            seed=config.seed,
            future=self.future,
            profile_counts=profile_counts(trace, self.eviction_spec),
            trace=trace,
        )
        # the trace goes only to offline eviction policies; prefetchers get it (oracles, recorded predictions)
        eviction_ctx = self.ctx if offline else dataclasses.replace(self.ctx, trace=None)
        self.core = CacheCore(
            CoreConfig(capacity_bytes=int(config.capacity_bytes), scope=config.scope,
                       layer_capacity=config.layer_capacity),
            self.eviction_spec.build,
            eviction_ctx,
        )
        self.prefetcher = self.prefetch_spec.build(self.ctx)
        self.prefetch_on = not getattr(self.prefetcher, "proposes_nothing", False)
        self.handler = self.miss_spec.build(self.ctx)
        self.placement_spec = parse_placement(config.placement)
        on_cpu = self.placement_spec.build(dataclasses.replace(self.ctx, trace=trace)).on_cpu()
        self.placed: bytearray | None = bytearray(on_cpu.astype(np.uint8).tobytes()) if on_cpu.any() else None
        self.handler_fetch_all = bool(getattr(self.handler, "fetch_all", False))
        self.keeps_lowbit = bool(getattr(self.handler, "keeps_lowbit", False))
        self.lossy = bool(getattr(self.handler, "lossy", False))
        self._window: list[float] | None = None
        self.compute_window = compute_window
        self.link_bytes_per_s = topology.last_hop_bandwidth()
        self.dram: CacheCore | None = None
        if topology.dram_cache_bytes is not None:
            dram_spec = parse_spec(config.dram_eviction, "eviction")
            if getattr(dram_spec.entry.cls, "offline", False):
                raise UserError("the DRAM tier's policy must be online (it has no future view)", "dram eviction")
            self.dram = CacheCore(CoreConfig(capacity_bytes=topology.dram_cache_bytes), dram_spec.build,
                                  _plain_context(self.ctx))
            self.dram_spec = dram_spec
        self._vram_log = self.core.eviction_log = []
        self._dram_log: list[int] = []
        if self.dram is not None:
            self.dram.eviction_log = self._dram_log

        # per-object state
        self.inbound = [-1] * n_obj  # last copy into VRAM
        self.unwaited = bytearray(n_obj)  # that copy has not been waited for by a cell yet
        self.lowbit = bytearray(n_obj)
        self.dram_inbound = [-1] * n_obj
        self.dram_reader = [-1] * n_obj  # last copy that read the object's DRAM slot
        self.orphans: list[int] = []  # VRAM evictions whose room no copy has taken yet
        self.dram_orphans: list[int] = []

        # request-level inputs
        self.req_obj = self.stream.obj.tolist()
        self.req_offsets = self.stream.cell_offsets.tolist()
        self.req_tokens_arr = np.bincount(self.stream.access_request, minlength=self.stream.n_requests).astype(np.int32)
        self.req_tokens = self.req_tokens_arr.tolist()
        self.cell_pass = trace.cell_pass().tolist()
        self.cell_layer = trace.cell_layer.tolist()

        # outputs
        self._outs: list[int] = []
        self.bypassed: list[int] = []
        self.cpu_rows: list[tuple[int, int]] = []  # (request, tokens) run on the CPU
        self.gpu_token_changes: list[tuple[int, int]] = []  # (request, tokens on device) where not all
        self.altered: list[int] = []
        # copies: one tuple each (obj, bytes, route, prefetch, resident, cell); the rarer lists by copy id
        self.copies: list[tuple[int, int, int, bool, bool, int]] = []
        self.copy_deps: dict[int, list[int]] = {}
        self.copy_cancels: dict[int, list[int]] = {}
        self.copy_victims: dict[int, list[int]] = {}
        self.cell_copy_off: list[int] = []
        self.wait_off = [0]
        self.wait_flat: list[int] = []
        self.dram_counts = {"requests": 0, "hits": 0, "misses": 0}
        self.next_cell = 0
        self.current_pass = -1
        self._setup()

    @property
    def compute_window(self) -> np.ndarray | None:
        """Estimated seconds from each cell's gate to the next one's (the prefetchers' budget window)."""
        return None if self._window is None else np.asarray(self._window)

    @compute_window.setter
    def compute_window(self, window: np.ndarray | None) -> None:
        self._window = None if window is None else np.asarray(window, dtype=np.float64).tolist()

    # ---- set-up -------------------------------------------------------------------------------
    def _setup(self) -> None:
        """Pinned objects are loaded by copies before the first cell (they are not free)."""
        pins = [obj for obj in range(self.trace.n_objects) if self.core.pinned[obj]]
        if pins:
            self._issue(pins, [[] for _ in pins], prefetch=False, cell=SETUP_CELL, scale=1.0, resident=[True] * len(pins))
        self.n_setup = len(self.copies)
        self.cell_copy_off.append(self.n_setup)

    # ---- one cell -----------------------------------------------------------------------------
    def step(self, c: int) -> CellPlan:
        """Decide cell c and return its decisions (the executor's API)."""
        copy_lo = len(self.copies)
        wait_lo = len(self.wait_flat)
        req_lo, req_hi = self.req_offsets[c], self.req_offsets[c + 1]
        cpu_lo = len(self.cpu_rows)
        gpu_lo = len(self.gpu_token_changes)
        self._step(c)
        gpu = self.req_tokens[req_lo:req_hi]
        cpu = [0] * (req_hi - req_lo)
        for r, t in self.gpu_token_changes[gpu_lo:]:
            gpu[r - req_lo] = t
        for r, t in self.cpu_rows[cpu_lo:]:
            cpu[r - req_lo] = t
        copies = tuple(self._copy_view(k) for k in range(copy_lo, len(self.copies)))
        return CellPlan(
            cell=c,
            pass_index=self.cell_pass[c],
            layer=self.cell_layer[c],
            objects=tuple(self.req_obj[req_lo:req_hi]),
            outcomes=tuple(self._outs[req_lo:req_hi]),
            gpu_tokens=tuple(gpu),
            cpu_tokens=tuple(cpu),
            copies=copies,
            waits=tuple(self.wait_flat[wait_lo:]),
            altered=self.altered[c],
        )

    def setup_copies(self) -> tuple[PlannedCopy, ...]:
        """Copies that load pinned objects before cell 0."""
        return tuple(self._copy_view(k) for k in range(self.n_setup))

    def _copy_view(self, k: int) -> PlannedCopy:
        obj, nbytes, route, prefetch, resident, _ = self.copies[k]
        return PlannedCopy(
            copy_id=k,
            obj=obj,
            nbytes=nbytes,
            route=route,
            prefetch=prefetch,
            resident=resident,
            victims=tuple(self.copy_victims.get(k, ())),
            deps=tuple(self.copy_deps.get(k, ())),
            cancels=tuple(self.copy_cancels.get(k, ())),
        )

    def _step(self, c: int) -> None:
        if c != self.next_cell:
            raise ValueError(f"cells must be planned in order: expected {self.next_cell}, got {c}")
        self.next_cell = c + 1
        core = self.core
        p = self.cell_pass[c]
        if p != self.current_pass:
            core.begin_pass(p)
            if self.dram is not None:
                self.dram.begin_pass(p)
            self.current_pass = p
        req_offsets = self.req_offsets
        lo, hi = req_offsets[c], req_offsets[c + 1]
        objs = self.req_obj[lo:hi]
        if self.future is not None:
            self.future.position = hi - 1
        req_ids: range | list[int] = range(lo, hi)
        if self.placed is not None:
            objs, req_ids = self._place(c, lo, hi)
        outs = core.begin_cell(objs)
        if self.placed is None:
            self._outs.extend(outs)
        else:
            cell_outs = [PLACED] * (hi - lo)
            for r, out in zip(req_ids, outs):
                cell_outs[r - lo] = out
            self._outs.extend(cell_outs)
        waits = self.wait_flat
        unwaited = self.unwaited
        altered = 0
        missing: list[int] = []
        missing_req: list[int] = []
        for i, obj, out in zip(req_ids, objs, outs):
            if out == HIT:
                if unwaited[obj]:
                    waits.append(self.inbound[obj])
                    unwaited[obj] = 0
            else:
                missing.append(obj)
                missing_req.append(i)
        if self.keeps_lowbit:
            lowbit, tokens = self.lowbit, self.req_tokens
            for i, obj, out in zip(req_ids, objs, outs):
                if out == HIT and lowbit[obj]:
                    altered += tokens[i]
        admitted: list[int] = []
        if missing:
            altered += self._handle_misses(c, missing, missing_req, admitted)
        if self.prefetch_on:
            self._prefetch(c, p, objs, admitted)
        if admitted:
            fill = core.fill
            for obj in admitted:  # the copies are logically complete when the cell's decisions end
                fill(obj)
        core.end_cell(objs)
        self.altered.append(altered)
        self.cell_copy_off.append(len(self.copies))
        self.wait_off.append(len(waits))

    def _place(self, c: int, lo: int, hi: int) -> tuple[list[int], list[int]]:
        """Send the cell's CPU-placed objects to the CPU; return the others and their request ids."""
        placed = self.placed
        assert placed is not None
        kept, kept_req, cpu_objs = [], [], []
        for r in range(lo, hi):
            obj = self.req_obj[r]
            if placed[obj]:
                self.cpu_rows.append((r, self.req_tokens[r]))
                self.gpu_token_changes.append((r, 0))
                cpu_objs.append(obj)
            else:
                kept.append(obj)
                kept_req.append(r)
        if cpu_objs:  # the CPU reads them from host memory (from SSD first where that is their home)
            self.wait_flat.extend(self._host_stage(cpu_objs, c))
        return kept, kept_req

    def _handle_misses(self, c: int, missing: list[int], missing_req: list[int], admitted: list[int]) -> int:
        """Decide the cell's misses; issue demand copies; return the altered applications."""
        fetch = missing
        scale = 1.0
        altered = 0
        if not self.handler_fetch_all:
            decision = self.handler.decide(self._miss_view(c, missing, missing_req))
            scale = decision.fetch_scale
            altered = decision.altered
            fetch = []
            fetch_req = []
            cpu_objs = []
            for i, action in enumerate(decision.actions):
                obj, r = missing[i], missing_req[i]
                if action == FETCH:
                    fetch.append(obj)
                    fetch_req.append(r)
                    if decision.kept_tokens is not None and decision.kept_tokens[i] != self.req_tokens[r]:
                        self.gpu_token_changes.append((r, decision.kept_tokens[i]))
                elif action == CPU:
                    self.cpu_rows.append((r, self.req_tokens[r]))
                    self.gpu_token_changes.append((r, 0))
                    cpu_objs.append(obj)
                elif action == SKIP:
                    self.gpu_token_changes.append((r, 0))
                else:
                    raise ValueError(f"miss handler {self.miss_spec.name} returned unknown action {action}")
            missing_req = fetch_req
            if cpu_objs:
                self.wait_flat.extend(self._host_stage(cpu_objs, c))
        core = self.core
        log = self._vram_log
        victim_lists: list[list[int]] = []
        resident: list[bool] = []
        admit = core.admit
        for obj, r in zip(fetch, missing_req):
            log.clear()
            got = admit(obj)
            victims = self._take_orphans(log) if self.orphans else log[:]
            if got is None:
                self.bypassed.append(r)
                self.orphans.extend(victims)
                victim_lists.append([])
                resident.append(False)
            else:
                admitted.append(obj)
                victim_lists.append(victims)
                resident.append(True)
        if fetch:
            self._issue(fetch, victim_lists, prefetch=False, cell=c, scale=scale, resident=resident)
            # the cell waits for its own demand copies (the last len(fetch) copies issued)
            n = len(self.copies)
            self.wait_flat.extend(range(n - len(fetch), n))
            if self.keeps_lowbit:
                for obj, res in zip(fetch, resident):
                    if res:
                        self.lowbit[obj] = 1 if scale < 1.0 else 0
        return altered

    def _host_stage(self, objs: list[int], c: int) -> list[int]:
        """Copies the CPU must wait for before it runs `objs` from host memory."""
        if self.dram is not None:
            chain, _ = self._dram_stage(objs, c, prefetch=False)
            return [k for k in chain if k >= 0]
        if self.topology.far:
            # no DRAM cache (GPUDirect or unified memory): read the weights into a host buffer
            return [self._append_copy(obj, self.object_bytes[obj], ROUTE_STAGE, False, False, c, [], [], [])
                    for obj in objs]
        return []

    def _miss_view(self, c: int, missing: list[int], missing_req: list[int]) -> MissView:
        trace = self.trace
        a_lo, a_hi = int(trace.cell_offsets[c]), int(trace.cell_offsets[c + 1])
        layer = self.cell_layer[c]
        base = layer * trace.meta.n_experts
        access_obj = [base + int(e) for e in trace.expert[a_lo:a_hi]]
        weights = None if trace.weight is None else trace.weight[a_lo:a_hi].astype(np.float64).tolist()
        return MissView(
            pass_index=self.cell_pass[c],
            cell=c,
            layer=layer,
            tokens=int(trace.cell_tokens[c]),
            missing=tuple(missing),
            missing_tokens=tuple(self.req_tokens[r] for r in missing_req),
            access_obj=access_obj,
            access_weight=weights,
        )

    def _take_orphans(self, log: list[int]) -> list[int]:
        """This admission's victims plus earlier evictions whose room nobody had taken."""
        victims = list(log)
        if self.orphans:
            victims = self.orphans + victims
            self.orphans = []
        return victims

    def _prefetch(self, c: int, p: int, objs: list[int], admitted: list[int]) -> None:
        routed = self.stream.obj[self.req_offsets[c] : self.req_offsets[c + 1]]
        layer = self.cell_layer[c]
        self.prefetcher.observe(p, c, layer, routed)
        window = self._window[c] if self._window is not None else 0.0
        view = PrefetchView(p, c, layer, routed, self.core.is_present, self.link_bytes_per_s, window)
        requests = self.prefetcher.propose(view)
        if not requests:
            return
        if len(requests) > 1:
            requests = sorted(requests, key=_PRIORITY, reverse=True)  # stable: equal priorities keep their order
        core = self.core
        state, in_use = core.state, core.in_use
        protected = []
        absent = []
        placed = self.placed
        for req in requests:
            obj = req.obj
            if placed is not None and placed[obj]:
                continue  # lives on the CPU: never copied to the device
            if state[obj] == ABSENT:
                absent.append(obj)
            elif in_use[obj] < 255:
                in_use[obj] += 1
                protected.append(obj)
        if not absent:
            core.end_cell(protected)
            return
        log = self._vram_log
        batch: list[int] = []
        victim_lists: list[list[int]] = []
        prefetch = core.prefetch
        for obj in absent:
            if state[obj] != ABSENT:
                continue  # proposed twice
            log.clear()
            if prefetch(obj) is None:
                self.orphans.extend(log)
                continue
            batch.append(obj)
            if self.orphans:
                victim_lists.append(self.orphans + log)
                self.orphans = []
            else:
                victim_lists.append(log[:])
            admitted.append(obj)
        core.end_cell(protected)
        if batch:
            self._issue(batch, victim_lists, prefetch=True, cell=c, scale=1.0, resident=[True] * len(batch))
            if self.keeps_lowbit:
                for obj in batch:
                    self.lowbit[obj] = 0

    # ---- copies -------------------------------------------------------------------------------
    def _issue(self, objs: list[int], victim_lists: list[list[int]], prefetch: bool, cell: int, scale: float,
               resident: list[bool]) -> None:
        """Create the copies that bring `objs` into VRAM (and into DRAM first where DRAM caches SSD)."""
        topo = self.topology
        chain: list[int] | None = None
        if self.dram is not None:
            chain, _ = self._dram_stage(objs, cell, prefetch)
            route = ROUTE_LAST
        else:
            route = ROUTE_DIRECT if topo.far else ROUTE_LAST
        inbound, unwaited, lowbit, keeps_lowbit = self.inbound, self.unwaited, self.lowbit, self.keeps_lowbit
        copies, object_bytes = self.copies, self.object_bytes
        for i, obj in enumerate(objs):
            k = len(copies)
            victims = victim_lists[i]
            if victims:
                cancels = []
                for v in victims:
                    # a copy some cell waited for has landed (cells run in order, and a victim is
                    # never an object of this cell): only never-used copies may still be in flight
                    if unwaited[v]:
                        cancels.append(inbound[v])
                        unwaited[v] = 0
                    inbound[v] = -1
                if keeps_lowbit:
                    for v in victims:
                        lowbit[v] = 0
                self.copy_victims[k] = victims
                if cancels:
                    self.copy_cancels[k] = cancels
            nbytes = object_bytes[obj]
            if scale < 1.0:
                nbytes = max(int(np.ceil(nbytes * scale)), 1)
            if chain is not None:
                if chain[i] >= 0:
                    self.copy_deps[k] = [chain[i]]
                self.dram_reader[obj] = k
            copies.append((obj, nbytes, route, prefetch, resident[i], cell))
            if resident[i]:
                inbound[obj] = k
                unwaited[obj] = 1 if prefetch or cell == SETUP_CELL else 0

    def _dram_stage(self, objs: list[int], cell: int, prefetch: bool) -> tuple[list[int], list[int]]:
        """Make `objs` present in DRAM (SSD -> DRAM copies for DRAM misses).

        Returns, per object, the copy a reader of its DRAM slot must wait for (-1: none), and the
        ids of the SSD -> DRAM copies issued.
        """
        dram = self.dram
        assert dram is not None
        counts = self.dram_counts
        outs = dram.begin_cell(objs)
        log = self._dram_log
        chain = []
        issued = []
        for obj, out in zip(objs, outs):
            counts["requests"] += 1
            if out < MISS_COMPULSORY:
                counts["hits"] += 1
                chain.append(self.dram_inbound[obj])
                continue
            counts["misses"] += 1
            log.clear()
            got = dram.admit(obj)
            victims = list(log)
            if self.dram_orphans:
                victims = self.dram_orphans + victims
                self.dram_orphans = []
            if got is None:
                self.dram_orphans.extend(victims)
                victims = []
            deps = []
            for v in victims:
                # write-after-read: the last copy reading v's slot; write-after-write: the copy filling it
                if self.dram_reader[v] >= 0:
                    deps.append(self.dram_reader[v])
                if self.dram_inbound[v] >= 0:
                    deps.append(self.dram_inbound[v])
                self.dram_reader[v] = -1
                self.dram_inbound[v] = -1
            k = self._append_copy(obj, self.object_bytes[obj], ROUTE_STAGE, prefetch, got is not None, cell,
                                  deps, [], victims)
            if got is not None:
                dram.fill(obj)
                self.dram_inbound[obj] = k
            chain.append(k)
            issued.append(k)
        dram.end_cell(objs)
        return chain, issued

    def _append_copy(self, obj: int, nbytes: int, route: int, prefetch: bool, resident: bool, cell: int,
                     deps: list[int], cancels: list[int], victims: list[int]) -> int:
        k = len(self.copies)
        self.copies.append((obj, nbytes, route, prefetch, resident, cell))
        if deps:
            self.copy_deps[k] = deps
        if cancels:
            self.copy_cancels[k] = cancels
        if victims:
            self.copy_victims[k] = victims
        return k

    # ---- the end ------------------------------------------------------------------------------
    def plan_rest(self, engine: str | None = None) -> Plan:
        """Decide every remaining cell (the bulk path) and return the flat plan.

        `engine` as count_replay's (None: $MOESIM_ENGINE, else "auto"): "fast" runs the compiled
        planner (moesim.sim.fast.planner) where it covers the run, with the same decisions.
        """
        if self.plan_engine(engine) == "fast":
            from moesim.sim.fast.planner import plan_rest_fast

            return plan_rest_fast(self)
        step = self._step
        for c in range(self.next_cell, self.trace.n_cells):
            step(c)
        return self.finish()

    def plan_engine(self, engine: str | None = None) -> str:
        """"fast" or "reference": which planner plan_rest would run (UserError if "fast" cannot)."""
        from moesim.sim.fast import requested_engine
        from moesim.sim.fast.planner import why_not_fast_plan

        wanted = requested_engine(engine)
        if wanted == "reference":
            return "reference"
        reason = why_not_fast_plan(self)
        if reason is None:
            return "fast"
        if wanted == "fast":
            raise UserError(f"the fast engine cannot plan this: {reason}", "engine")
        return "reference"

    def finish(self) -> Plan:
        """Close the run (unused prefetches count as wasted) and return the flat plan."""
        if self.next_cell != self.trace.n_cells:
            raise ValueError(f"planned {self.next_cell} of {self.trace.n_cells} cells")
        self.core.finish()
        n_req = self.stream.n_requests
        outcomes = np.asarray(self._outs, dtype=np.int8) if n_req else np.zeros(0, np.int8)
        bypassed = np.zeros(n_req, dtype=bool)
        if self.bypassed:
            bypassed[np.asarray(self.bypassed, dtype=np.int64)] = True
        gpu = self.req_tokens_arr.copy()
        for r, t in self.gpu_token_changes:
            gpu[r] = t
        cpu = np.zeros(n_req, dtype=np.int32)
        for r, t in self.cpu_rows:
            cpu[r] = t
        i64 = np.int64
        n = len(self.copies)
        table = np.asarray(self.copies, dtype=i64).reshape(n, 6)
        dep_off, deps = _flatten(self.copy_deps, n)
        cancel_off, cancels = _flatten(self.copy_cancels, n)
        victim_off, victims = _flatten(self.copy_victims, n)
        return Plan(
            trace=self.trace,
            config=self.config,
            topology=self.topology,
            stream=self.stream,
            eviction=self.eviction_spec,
            prefetch=self.prefetch_spec,
            miss=self.miss_spec,
            lossy=self.lossy,
            outcomes=outcomes,
            bypassed=bypassed,
            gpu_tokens=gpu,
            cpu_tokens=cpu,
            req_tokens=self.req_tokens_arr,
            altered=np.asarray(self.altered, dtype=i64),
            copy_obj=table[:, 0].copy(),
            copy_bytes=table[:, 1].copy(),
            copy_route=table[:, 2].astype(np.int8),
            copy_prefetch=table[:, 3].astype(bool),
            copy_resident=table[:, 4].astype(bool),
            copy_cell=table[:, 5].copy(),
            dep_offsets=dep_off,
            deps=deps,
            cancel_offsets=cancel_off,
            cancels=cancels,
            victim_offsets=victim_off,
            victims=victims,
            cell_copy_offsets=np.asarray(self.cell_copy_off, dtype=i64),
            n_setup_copies=self.n_setup,
            wait_offsets=np.asarray(self.wait_off, dtype=i64),
            waits=np.asarray(self.wait_flat, dtype=i64),
            counters=self.core.counters,
            dram_counters=dict(self.dram_counts, evictions=self.dram.counters.evictions) if self.dram else {},
        )


def plan_trace(trace: Trace, topology: Topology, config: PlanConfig,
               compute_window: np.ndarray | None = None, engine: str | None = None) -> Plan:
    """Plan every cell of `trace` (the bulk path the timing engine uses)."""
    return Planner(trace, topology, config, compute_window).plan_rest(engine)


_PRIORITY = operator.attrgetter("priority")


def _flatten(lists: dict[int, list[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse per-copy lists (keyed by copy id, inserted in id order) as offsets + flat values."""
    counts = np.zeros(n + 1, dtype=np.int64)
    flat: list[int] = []
    for k, values in lists.items():
        counts[k + 1] = len(values)
        flat.extend(values)
    return np.cumsum(counts), np.asarray(flat, dtype=np.int64)


def _plain_context(ctx: PolicyContext) -> PolicyContext:
    """The DRAM tier's policy context: same objects, no future, no trace."""
    return PolicyContext(n_objects=ctx.n_objects, n_layers=ctx.n_layers, n_experts=ctx.n_experts,
                         object_layer=ctx.object_layer, object_bytes=ctx.object_bytes, seed=ctx.seed)
