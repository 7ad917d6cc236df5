"""The decision layer: which objects hit, which copies to issue, over which route, into whose slots.

No clock is read here. The planner drives the tier caches (moesim/sim/tier_caches.py: the VRAM
core, and a DRAM core when DRAM is a cache over SSD), the policies built once for the run
(moesim/sim/plan_policies.py) and the copy ledger (moesim/sim/copy_ledger.py) over the trace,
cell by cell, with the event-atomic protocol (misses and prefetches: moesim/sim/plan_decisions.py):

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
One driver: the count replay's reference path (moesim/sim/count_replay.py) is this planner with no
topology, prefetch "none" and miss handling "stall": no clock, no copies (no ledger), the same
step. With no topology the planner also takes the sequential replay mode (every request its own
protection unit) and records victims per request when asked. Every pass begins, those with no
cells included, with a topology or without (and in the compiled planner, sim/fast/plan.c), so a
pass-decaying policy decays alike in both replays; the count replay also begins the passes with no
cells after the last cell, which change no outcome. `serve_cell` (moesim/sim/plan_decisions.py) decides a cell,
one protection unit (the cell, or each request) at a time, for both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.sim.cache_core import CoreConfig
from moesim.sim.copy_ledger import SETUP_CELL, CopyLedger, PlannedCopy
from moesim.sim.plan_decisions import issue, serve_cell
from moesim.sim.plan_policies import PlanPolicies
from moesim.sim.plan_types import PLACED, CellPlan, Plan, PlanConfig
from moesim.sim.requests import build_request_stream
from moesim.sim.tier_caches import TierCaches
from moesim.sim.topology import Topology
from moesim.traces.format.trace import Trace

__all__ = ["PLACED", "SETUP_CELL", "CellPlan", "Plan", "PlanConfig", "PlannedCopy", "Planner", "plan_trace"]


def _forward(part: str, name: str) -> Any:
    """A Planner attribute that lives in one of its parts (the compiled planner and tests read them)."""
    return property(lambda self: getattr(getattr(self, part), name),
                    lambda self, value: setattr(getattr(self, part), name, value))


class Planner:
    """Decisions cell by cell. `step(c)` must be called for c = 0, 1, ... in order.

    `topology` None: no clock and no copies, the count replay (see the module docstring); it takes
    no prefetcher, placement or miss handler that does anything but fetch.
    """

    core = _forward("tiers", "vram")
    dram = _forward("tiers", "dram")
    copies = _forward("ledger", "copies")
    inbound = _forward("ledger", "inbound")
    unwaited = _forward("ledger", "unwaited")
    orphans = _forward("ledger", "orphans")
    dram_orphans = _forward("ledger", "dram_orphans")
    n_setup = _forward("ledger", "n_setup")
    eviction_spec = _forward("policies", "eviction_spec")
    prefetch_spec = _forward("policies", "prefetch_spec")
    miss_spec = _forward("policies", "miss_spec")
    prefetcher = _forward("policies", "prefetcher")
    handler = _forward("policies", "handler")
    prefetch_on = _forward("policies", "prefetch_on")
    lossy = _forward("policies", "lossy")
    placed = _forward("policies", "placed")

    def __init__(
        self,
        trace: Trace,
        topology: Topology | None,
        config: PlanConfig,
        compute_window: np.ndarray | None = None,
        record_victims: bool = False,
    ) -> None:
        self.trace = trace
        self.topology = topology
        self.config = config
        self.stream = build_request_stream(trace, config.mode)
        self.policies = PlanPolicies.build(trace, self.stream, config.specs(), config.placement, config.seed)
        self.counts_only = topology is None
        _check_mode(self.policies, config, self.counts_only)
        self.per_request = config.mode == "sequential"  # every request its own protection unit
        self.tiers = TierCaches(topology, CoreConfig(capacity_bytes=int(config.capacity_bytes), scope=config.scope,
                                                     layer_capacity=config.layer_capacity),
                                self.policies.eviction_spec, self.policies.eviction_ctx, config.dram_eviction)
        self.ledger: CopyLedger | None = None if self.counts_only else CopyLedger(trace.n_objects)
        self.victims: list[tuple[int, int]] | None = [] if record_victims else None
        """(request, victim) for every eviction, in order, when asked for"""
        if self.ledger is None and self.victims is None:
            self.tiers.vram.eviction_log = None  # no copy and no caller reads the evictions
        self.object_bytes = trace.object_bytes_array().tolist()
        self._window: list[float] | None = None
        self.compute_window = compute_window
        self.link_bytes_per_s = 0.0 if topology is None else topology.last_hop_bandwidth()

        # request-level inputs
        self.req_obj = self.stream.obj.tolist()
        self.req_offsets = self.stream.cell_offsets.tolist()
        self.req_tokens_arr = self.stream.accesses.astype(np.int32)  # routed accesses per request
        self.req_tokens = self.req_tokens_arr.tolist()
        self.cell_pass = trace.cell_pass().tolist()
        self.cell_layer = trace.cell_layer.tolist()

        # per-request outputs
        self.outs: list[int] = []
        self.bypassed: list[int] = []
        self.cpu_rows: list[tuple[int, int]] = []  # (request, tokens) run on the CPU
        self.gpu_token_changes: list[tuple[int, int]] = []  # (request, tokens on device) where not all
        self.altered: list[int] = []
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

    def window(self, c: int) -> float:
        return self._window[c] if self._window is not None else 0.0

    # ---- set-up -------------------------------------------------------------------------------
    def _setup(self) -> None:
        """Pinned objects are loaded by copies before the first cell (they are not free)."""
        if self.ledger is None:
            return
        pins = [obj for obj in range(self.trace.n_objects) if self.core.pinned[obj]]
        if pins:
            issue(self, pins, [[] for _ in pins], prefetch=False, cell=SETUP_CELL, scale=1.0,
                  resident=[True] * len(pins))
        self.ledger.close_setup()

    # ---- one cell -----------------------------------------------------------------------------
    def step(self, c: int) -> CellPlan:
        """Decide cell c and return its decisions (the executor's API)."""
        ledger = self.ledger
        if ledger is None:
            raise ValueError("a planner with no topology plans no copies: decide_rest() and finish_counts() run it")
        copy_lo = len(ledger.copies)
        wait_lo = len(ledger.waits)
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
        return CellPlan(
            cell=c,
            pass_index=self.cell_pass[c],
            layer=self.cell_layer[c],
            objects=tuple(self.req_obj[req_lo:req_hi]),
            outcomes=tuple(self.outs[req_lo:req_hi]),
            gpu_tokens=tuple(gpu),
            cpu_tokens=tuple(cpu),
            copies=tuple(ledger.view(k) for k in range(copy_lo, len(ledger.copies))),
            waits=tuple(ledger.waits[wait_lo:]),
            altered=self.altered[c],
        )

    def setup_copies(self) -> tuple[PlannedCopy, ...]:
        """Copies that load pinned objects before cell 0."""
        return tuple(self.ledger.view(k) for k in range(self.ledger.n_setup))

    def _step(self, c: int) -> None:
        if c != self.next_cell:
            raise ValueError(f"cells must be planned in order: expected {self.next_cell}, got {c}")
        self.next_cell = c + 1
        p = self.cell_pass[c]
        if p != self.current_pass:
            self._begin_passes(p)
        self.altered.append(serve_cell(self, c, p))
        if self.ledger is not None:
            self.ledger.close_cell()

    def _begin_passes(self, p: int) -> None:
        """Begin pass p and the passes with no cells before it (a pass-decaying policy decays once per pass)."""
        for q in range(self.current_pass + 1, p + 1):
            self.tiers.begin_pass(q)
        self.current_pass = p

    # ---- the end ------------------------------------------------------------------------------
    def plan_rest(self, engine: str | None = None) -> Plan:
        """Decide every remaining cell (the bulk path) and return the flat plan.

        `engine` as count_replay's (None: $MOESIM_ENGINE, else "auto"): "fast" runs the compiled
        planner (moesim.sim.fast.planner) where it covers the run, with the same decisions.
        """
        if self.plan_engine(engine) == "fast":
            from moesim.sim.fast.planner import plan_rest_fast

            return plan_rest_fast(self)
        self.decide_rest()
        return self.finish()

    def decide_rest(self) -> None:
        """Decide every remaining cell here, in Python (the reference for the compiled paths)."""
        step = self._step
        for c in range(self.next_cell, self.trace.n_cells):
            step(c)

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
        if self.ledger is None:
            raise ValueError("a planner with no topology issues no copies: finish_counts() closes it")
        outcomes, bypassed = self._close()
        n_req = self.stream.n_requests
        gpu = self.req_tokens_arr.copy()
        for r, t in self.gpu_token_changes:
            gpu[r] = t
        cpu = np.zeros(n_req, dtype=np.int32)
        for r, t in self.cpu_rows:
            cpu[r] = t
        policies = self.policies
        return Plan(
            trace=self.trace, config=self.config, topology=self.topology, stream=self.stream,  # type: ignore[arg-type]
            eviction=policies.eviction_spec, prefetch=policies.prefetch_spec, miss=policies.miss_spec,
            lossy=policies.lossy, outcomes=outcomes, bypassed=bypassed, gpu_tokens=gpu, cpu_tokens=cpu,
            req_tokens=self.req_tokens_arr, altered=np.asarray(self.altered, dtype=np.int64),
            **self.ledger.flat(),  # type: ignore[arg-type]
            counters=self.core.counters,
            dram_counters=self.tiers.dram_counters(),
        )

    def finish_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Close a run with no topology (the count replay): outcomes (int8) and bypassed (bool) per request."""
        if self.counts_only and self.next_cell == self.trace.n_cells and self.current_pass < self.trace.n_passes - 1:
            self._begin_passes(self.trace.n_passes - 1)  # the passes with no cells after the last cell
        return self._close()

    def _close(self) -> tuple[np.ndarray, np.ndarray]:
        if self.next_cell != self.trace.n_cells:
            raise ValueError(f"planned {self.next_cell} of {self.trace.n_cells} cells")
        self.core.finish()
        n_req = self.stream.n_requests
        outcomes = np.asarray(self.outs, dtype=np.int8) if n_req else np.zeros(0, np.int8)
        bypassed = np.zeros(n_req, dtype=bool)
        if self.bypassed:
            bypassed[np.asarray(self.bypassed, dtype=np.int64)] = True
        return outcomes, bypassed


def _check_mode(policies: PlanPolicies, config: PlanConfig, counts_only: bool) -> None:
    """What a planner with no topology (no copies) cannot do, and the mode only it takes."""
    if counts_only:
        if policies.prefetch_on or not policies.handler_fetch_all or policies.placed is not None:
            raise ValueError("a planner with no topology takes no prefetch, placement or miss handler "
                             "that does not fetch every miss (it issues no copies)")
    elif config.mode != "event":
        raise ValueError(f"replay mode {config.mode!r} counts only: a planner with a topology plans event-atomic cells")


def plan_trace(trace: Trace, topology: Topology, config: PlanConfig,
               compute_window: np.ndarray | None = None, engine: str | None = None) -> Plan:
    """Plan every cell of `trace` (the bulk path the timing engine uses)."""
    return Planner(trace, topology, config, compute_window).plan_rest(engine)
