"""The simulator's clock in closed form per cell, for runs whose copies never cross a cell (fitting).

    replayed = ReplayedRun(trace, profile, config)     # plan once: hits, misses, copies, bytes
    times = replayed.times(figures)                    # seconds per pass for any profile figures

Which experts hit and which bytes move does not depend on the profile's figures when nothing is
prefetched (an LRU cache without prefetch decides from the trace alone), so the plan is made once per
run configuration. When, in addition, every copy is issued and waited for by the same cell (demand
misses only: a cell's reads all land before its experts finish, so the next cell's reads start on
idle lanes), the engine's clock (moesim/sim/engine.py) decomposes by cell:
  - copies: the cell's reads enter the read lanes at its gate in issue order; each holds a lane for
    the link's latency, then flows at aggregate(n)/n with n reads flowing (the same fluid server as
    moesim/sim/link_server.py, here as a loop over one cell's few reads, no event queue);
  - stall: the engine's own rule (engine._pipelined_stall under per-expert overlap; the last arrival
    under a per-layer barrier, and in the prefill where config.prefill_overlap says "layer");
  - a cell lasts dense + stall + experts; a pass is the sum of its cells.
Compute arrays come from the same functions timed_replay calls (moesim/sim/compute). The two halves
are memoised apart: compute figures (memory_bandwidth, peak_flops, batched_flops, launch_overhead) and storage
figures (ssd_bandwidth, ssd_bandwidth_qd1, ssd_latency). tests/runs/test_cell_clock.py checks the
result against timed_replay on fitted figures. Anything else (prefetch, CPU placement, pinned
loads, multi-hop routes) raises NotClosedForm and the caller runs the simulator.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from moesim.hw_profiles.profile import HardwareProfile
from moesim.sim.compute import compute_model, expert_cell_times, expert_request_times, non_expert_cell_times
from moesim.sim.cost_model import resolve_model_spec
from moesim.sim.engine import _pipelined_stall
from moesim.sim.expert_compute import wait_compute
from moesim.sim.link_server import TIE_S
from moesim.sim.read_slices import CellOrder, cell_order, check_fractions, ordered_stall, piece_order
from moesim.sim.timed_replay import (TimedConfig, ffn_overlappable, prefill_barrier, routing_sync_seconds,
                                     setup_planner)
from moesim.sim.topology import LinkServer, build_topology
from moesim.traces.format.trace_meta import DECODE
from moesim.traces.format.trace import Trace

COMPUTE_KEYS = ("memory_bandwidth", "peak_flops", "batched_flops", "launch_overhead")
STORAGE_KEYS = ("ssd_bandwidth", "ssd_bandwidth_qd1", "ssd_latency")


class NotClosedForm(Exception):
    """The run's copies interact across cells: only the event simulator times it."""


@dataclass
class CellCompute:
    pre: np.ndarray
    post: np.ndarray
    expert: np.ndarray
    wait_compute: np.ndarray  # per entry of plan.waits (pipelined), else empty
    barrier: np.ndarray  # bool per cell: waits for all its reads (per-layer barrier)
    overlappable: np.ndarray  # seconds per cell of post-expert work run while its reads are in flight
    order: CellOrder | None = None  # expert-id order (config.expert_order "id"): requests per cell in compute order


def fluid_cell(nbytes: list[float], server: LinkServer) -> tuple[list[float], list[float]]:
    """Start and end (seconds after the gate) of reads submitted together to an idle `server`.

    The rule of moesim.sim.link_server.FluidServer: at most `slots` reads hold a lane, FIFO; each
    waits `latency`, then its bytes flow at shares[n] with n reads flowing.
    """
    m = len(nbytes)
    start, end = [0.0] * m, [0.0] * m
    slots, latency, shares = max(int(server.slots), 1), float(server.latency), server.shares
    queue = deque(range(m))
    if slots == 1 or len(set(shares[1:])) == 1:  # a read's rate never changes: lanes as FIFO servers
        free_at = [0.0] * slots
        for k in queue:
            lane = min(range(slots), key=free_at.__getitem__)
            start[k] = free_at[lane]
            end[k] = start[k] + latency + nbytes[k] / shares[1]
            free_at[lane] = end[k]
        return start, end
    t = 0.0
    waiting: list[tuple[float, int]] = []  # (time its bytes start flowing, read)
    flowing: dict[int, float] = {}  # read -> bytes left
    free = slots

    def take_lanes() -> None:
        nonlocal free
        while free and queue:
            k = queue.popleft()
            free -= 1
            start[k] = t
            if latency > 0:
                waiting.append((t + latency, k))
            else:
                flowing[k] = float(nbytes[k])

    take_lanes()
    while waiting or flowing:
        share = shares[len(flowing)] if flowing else 0.0
        t_finish = t + min(flowing.values()) / share if flowing else float("inf")
        t_flow = min(w[0] for w in waiting) if waiting else float("inf")
        t_next = min(t_finish, t_flow)
        for k in flowing:
            flowing[k] -= share * (t_next - t)
        t = t_next
        if t_flow <= t_finish:
            for item in [w for w in waiting if w[0] <= t]:
                waiting.remove(item)
                flowing[item[1]] = float(nbytes[item[1]])
            continue
        ended = [k for k, left in flowing.items() if left <= share * TIE_S]
        for k in ended:
            del flowing[k]
            end[k] = t
        free += len(ended)
        take_lanes()
    return start, end


class ReplayedRun:
    """One run configuration's plan, replayed once; `times(figures)` per pass in closed form per cell."""

    def __init__(self, trace: Trace, profile: HardwareProfile, config: TimedConfig) -> None:
        from moesim.runs.step_model import apply_figures  # noqa: F401 - imported where used

        self.trace, self.profile, self.config = trace, profile, config
        self.overlap = config.overlap or profile.overlap
        setup = setup_planner(trace, profile, config)
        self.plan = plan = setup.planner.plan_rest()
        self.spec, self.formats = resolve_model_spec(trace, config.model)
        stream = plan.stream
        self.req_cell = stream.cell
        self.req_obj = stream.obj
        self.req_bytes = trace.object_bytes_array()[stream.obj]
        self.req_layer = trace.object_layer_array()[stream.obj]
        self._check(plan)
        self.n_cells = trace.n_cells
        self.cell_pass = trace.cell_pass().astype(np.int64)
        self.decode = trace.pass_phase == DECODE
        self.copy_off = plan.cell_copy_offsets.astype(np.int64)
        self.wait_off = plan.wait_offsets.astype(np.int64)
        self.waits = plan.waits.astype(np.int64)
        self.copy_bytes = plan.copy_bytes.astype(np.float64)
        self.copy_cell = plan.copy_cell.astype(np.int64)
        self.event_cells = np.flatnonzero(np.diff(self.copy_off) > 0)
        self._compute_memo: dict[tuple[float, ...], CellCompute] = {}
        self._copy_memo: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _check(self, plan: Any) -> None:
        if str(self.config.prefetch) not in ("none", ""):
            raise NotClosedForm("prefetch copies cross cells")
        if plan.n_setup_copies or (plan.cpu_tokens > 0).any() or plan.copy_prefetch.any():
            raise NotClosedForm("pinned loads, CPU experts or prefetch copies")
        if plan.cancels.size:
            raise NotClosedForm("cancelled copies")
        n = plan.n_copies
        issued = np.full(n, -1, dtype=np.int64)
        issued[:] = plan.copy_cell
        wait_cell = np.repeat(np.arange(plan.wait_offsets.size - 1), np.diff(plan.wait_offsets))
        if plan.waits.size != n or not np.array_equal(np.sort(plan.waits), np.arange(n)) \
                or not np.array_equal(issued[plan.waits], wait_cell):
            raise NotClosedForm("a copy is not waited for by exactly the cell that issues it")
        dep_of = np.repeat(np.arange(n), np.diff(plan.dep_offsets))
        if plan.deps.size and (issued[plan.deps] >= issued[dep_of]).any():
            raise NotClosedForm("a copy depends on a copy of its own cell (multi-hop route)")

    def compute(self, figures: dict[str, float]) -> CellCompute:
        key = tuple(float(figures.get(k, -1.0)) for k in COMPUTE_KEYS)  # -1: not given (the profile's own)
        hit = self._compute_memo.get(key)
        if hit is not None:
            return hit
        prof = self._profile(figures)
        cfg, plan, trace = self.config, self.plan, self.trace
        model = compute_model(trace, prof, self.spec, cfg.framework, cfg.kernel_table, self.formats)
        ne = non_expert_cell_times(trace, model)
        pre = ne.pre + (routing_sync_seconds(prof) if cfg.routing_sync else 0.0)
        order = None
        if self.overlap == "expert":
            per_req = expert_request_times(model, self.req_layer, self.req_bytes, plan.gpu_tokens, "gpu")
            if cfg.expert_order == "id":
                order = cell_order(self.req_cell, self.req_obj, per_req, plan.waits, plan.wait_offsets, plan.copy_obj,
                                   self.n_cells)
            expert = np.bincount(self.req_cell, weights=per_req, minlength=self.n_cells)
            waited = wait_compute(plan.waits, plan.wait_offsets, plan.copy_obj, self.req_cell, self.req_obj, per_req,
                                  trace.n_objects)
            barrier = prefill_barrier(trace, cfg)
            if barrier is None:
                barrier = np.zeros(self.n_cells, dtype=bool)
            else:
                expert = np.where(barrier, expert_cell_times(model, self.req_cell, self.req_layer, self.req_bytes,
                                                             plan.gpu_tokens, self.n_cells, "gpu",
                                                             cfg.grouped_experts), expert)
        else:
            expert = expert_cell_times(model, self.req_cell, self.req_layer, self.req_bytes, plan.gpu_tokens,
                                       self.n_cells, "gpu", cfg.grouped_experts)
            waited = np.zeros(0)
            barrier = np.ones(self.n_cells, dtype=bool)
        ffn = ne.by_operator.get("shared", 0.0) + ne.by_operator.get("dense_ffn", 0.0)
        over = ffn_overlappable(np.zeros(self.n_cells) + ffn, trace, cfg) if self.overlap == "expert" else None
        out = CellCompute(pre, ne.post, expert, waited, barrier, np.zeros(self.n_cells) if over is None else over, order)
        self._compute_memo[key] = out
        return out

    def copies(self, figures: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Start and end of every copy, in seconds after its cell's gate (a copy read in slices: end minus
        its slices' summed lane time, so end - start is what its lanes were busy)."""
        start, end, _ = self._copies(figures)
        return start, end

    def piece_ends(self, figures: dict[str, float]) -> np.ndarray:
        """[copy, slice] -> when that slice landed (every slice at the copy's end where it is read whole)."""
        return self._copies(figures)[2]

    def _copies(self, figures: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = tuple(float(figures.get(k, np.nan)) for k in STORAGE_KEYS)
        hit = self._copy_memo.get(key)
        if hit is not None:
            return hit
        prof = self._profile(figures)
        topo = build_topology(prof, self.trace.total_object_bytes(), self.config.io_lanes, self.config.storage_reads)
        server = np.asarray(topo.route_server, dtype=np.int64)[self.plan.copy_route]
        n = self.copy_bytes.size
        shares = check_fractions(self.config.read_slices) if self.config.read_slices else (1.0,)
        slice_major = self.config.slice_order == "slice"
        start, end, pieces = np.zeros(n), np.zeros(n), np.zeros((n, len(shares)))
        nbytes = self.copy_bytes.tolist()
        off = self.copy_off.tolist()
        for c in self.event_cells.tolist():
            ks = range(off[c], off[c + 1])
            for s in sorted({int(server[k]) for k in ks}):
                mine = [k for k in ks if server[k] == s]
                spec = topo.servers[s]
                if len(shares) == 1 or not prof.tiers[spec.src].is_storage:
                    st, en = fluid_cell([nbytes[k] for k in mine], spec)
                    start[mine], end[mine] = st, en
                    pieces[mine, :] = np.asarray(en)[:, None]
                    continue
                order = piece_order(mine, len(shares), slice_major)
                st, en = fluid_cell([nbytes[k] * shares[p] for k, p in order], spec)
                busy = dict.fromkeys(mine, 0.0)
                for (k, p), a, b in zip(order, st, en):
                    pieces[k, p] = b
                    busy[k] += b - a
                for k in mine:
                    end[k] = pieces[k].max()
                    start[k] = end[k] - busy[k]
        self._copy_memo[key] = (start, end, pieces)
        return start, end, pieces

    def _profile(self, figures: dict[str, float]) -> HardwareProfile:
        from moesim.runs.step_model import apply_figures

        return apply_figures(self.profile, figures)

    def cell_times(self, figures: dict[str, float]) -> dict[str, np.ndarray]:
        """Per cell: dense, expert, stall, duration, and per copy its lane time."""
        comp = self.compute(figures)
        start, end = self.copies(figures)
        stall = np.zeros(self.n_cells)
        wait_off, waits = self.wait_off.tolist(), self.waits.tolist()
        end_list = end.tolist()
        wc = comp.wait_compute.tolist()
        expert = (comp.expert + comp.overlappable).tolist()
        barrier = comp.barrier.tolist()
        order = comp.order
        if order is not None:
            pieces = self.piece_ends(figures)
            shares = check_fractions(self.config.read_slices) if self.config.read_slices else (1.0,)
        for c in np.flatnonzero(np.diff(self.wait_off) > 0).tolist():
            pending = list(range(wait_off[c], wait_off[c + 1]))
            if order is not None and not barrier[c]:
                lo, hi = int(order.offsets[c]), int(order.offsets[c + 1])
                mine = set(order.copy[lo:hi].tolist())
                others = [end_list[waits[w]] for w in pending if waits[w] not in mine]
                stall[c] = ordered_stall(0.0, lo, hi, order, shares, pieces, others, float(comp.overlappable[c]))
            elif not barrier[c]:
                stall[c] = _pipelined_stall(0.0, pending, waits, end_list, wc, expert[c], 0.0)
            else:
                stall[c] = max(end_list[waits[w]] for w in pending)
        dense = comp.pre + comp.post
        return {"dense": dense, "expert": comp.expert, "stall": stall, "duration": dense + stall + comp.expert,
                "copy_s": end - start}

    def pass_totals(self, figures: dict[str, float]) -> dict[str, np.ndarray]:
        """Per pass: wall, compute (dense + experts), stall, lane-busy seconds, bytes copied, copies."""
        cells = self.cell_times(figures)
        n = self.trace.n_passes

        def by_pass(x: np.ndarray) -> np.ndarray:
            return np.bincount(self.cell_pass, weights=x, minlength=n)

        copy_pass = self.cell_pass[self.copy_cell]
        return {"wall": by_pass(cells["duration"]), "compute": by_pass(cells["dense"] + cells["expert"]),
                "stall": by_pass(cells["stall"]),
                "io_busy": np.bincount(copy_pass, weights=cells["copy_s"], minlength=n),
                "bytes": np.bincount(copy_pass, weights=self.copy_bytes, minlength=n),
                "copies": np.bincount(copy_pass, minlength=n).astype(np.float64)}
