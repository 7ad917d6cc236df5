"""The timing layer: a simpy clock over a Plan.

Processes and resources (docs/metrics.md, "Engine"):
- one compute stream runs cells in pass/layer order. A cell is its dense part, its *gate* (where its
  copies are issued: demand misses and the prefetches it proposed), a stall until every copy it
  must wait for has landed (its demand copies; a prefetch copy not yet landed is a late prefetch),
  then its expert part (device experts, or the host-CPU path when longer);
- link servers (moesim.sim.link_server.FluidServer): one per link direction the routes use, with
  `slots` transfers in flight (copy engines, or storage read lanes) that share the link's aggregate
  rate (processor sharing); queued demand copies go before queued prefetch copies (FIFO within each
  class); a transfer waits its latency, then flows at aggregate(n) / n;
- overlap: per-layer barrier (the stall lasts until the last waited copy lands), or per-expert
  pipelining (`Pipelined`: each expert runs as soon as its own bytes land, in arrival order);
- slice reads (`Slicing`, moesim/sim/read_slices.py): a storage read becomes one request per weight
  slice, each on its own lane, queued expert- or slice-major at the gate; a copy lands with its last
  slice, its lane time is the sum of its slices'; with an expert-id order the pipelined stall waits
  for each (slice, expert) unit in turn; the write-after-write waits below hold per copy (its slices
  are queued once the copies it waits for have landed), and cancel_unstarted drops a sliced copy none
  of whose slices has started;
- a copy is queued once its dependencies have landed (the SSD -> DRAM copy it reads from, the
  reader of a DRAM slot it overwrites); a copy into a VRAM slot whose previous copy is still queued
  or running waits for it (write-after-write), or, with the plan's `cancel_unstarted`, cancels it
  if it has not started.
Hits create no events. A cell that issues no copy and waits for none creates none either: the
compute process sleeps once from one such "event cell" to the next, so runs of hit-only cells cost
one timeout. Everything but the stalls is known before the clock runs, and cell start/end times
are rebuilt from the stalls with a cumulative sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from moesim.sim.link_server import FluidServer
from moesim.sim.plan import Plan
from moesim.sim.read_slices import Slicing, ordered_stall, piece_order
from moesim.sim.topology import LinkServer


@dataclass
class EngineOutput:
    """What the clock decided: stalls per cell, start/end per copy."""

    stall: np.ndarray  # seconds per cell waiting for copies at its gate
    late: np.ndarray  # per cell: waited prefetch copies that had not landed at its gate
    late_wait: np.ndarray  # bool per entry of plan.waits: a prefetch copy the cell stalled for (late)
    copy_start: np.ndarray  # NaN for cancelled copies
    copy_end: np.ndarray
    copy_cancelled: np.ndarray  # bool
    events: int  # simpy events scheduled
    event_cells: int  # cells that needed the clock (issued or waited for a copy)
    copy_busy: np.ndarray | None = None  # lane seconds per copy where reads were split into slices


@dataclass(frozen=True)
class Pipelined:
    """Per-expert overlap inputs: compute seconds of the object each waited copy brings (aligned
    with plan.waits), and per cell the device expert time and the CPU path."""

    wait_compute: np.ndarray
    expert: np.ndarray
    cpu_path: np.ndarray
    barrier: np.ndarray | None = None  # bool per cell: these cells wait for all their copies (an engine's prefill)
    overlappable: np.ndarray | None = None  # seconds per cell of post-expert work run while its reads are in flight


def simulate(
    plan: Plan,
    copy_server: np.ndarray,
    pre_gate: np.ndarray,
    servers: tuple[LinkServer, ...],
    pipelined: Pipelined | None = None,
    slicing: Slicing | None = None,
) -> EngineOutput:
    """Run the plan's copies and the compute stream on a simpy clock.

    `pre_gate[c]` is the compute time from cell c-1's stall end to cell c's gate: cell c-1's
    expert part plus cell c's dense part. `copy_server[k]` indexes `servers` (one per link
    direction). Without `pipelined` a cell's experts wait for all its copies (per-layer barrier);
    with it, resident experts run at the gate and each missing one as soon as its bytes land, in
    arrival order, on the one compute stream; the stall is the time that stream waited.
    """
    n_cells = plan.trace.n_cells
    n_copies = plan.n_copies
    env = simpy.Environment()
    nbytes = plan.copy_bytes.astype(np.float64).tolist()
    server_of = copy_server.tolist()
    is_prefetch = plan.copy_prefetch.tolist()
    deps = _sparse(plan.dep_offsets, plan.deps)
    cancels = _sparse(plan.cancel_offsets, plan.cancels)
    wait_off = plan.wait_offsets.tolist()
    waits = plan.waits.tolist()
    cell_copy_off = plan.cell_copy_offsets.tolist()
    cancel_unstarted = bool(plan.config.cancel_unstarted)

    started = bytearray(n_copies)
    done = bytearray(n_copies)
    cancelled = bytearray(n_copies)
    waited = bytearray(n_copies)
    n_deps = [0] * n_copies
    dependents: dict[int, list[int]] = {}
    start_t = [float("nan")] * n_copies
    end_t = [float("nan")] * n_copies
    stall = np.zeros(n_cells)
    late = np.zeros(n_cells, dtype=np.int64)
    late_wait = np.zeros(len(waits), dtype=bool)
    compute_state: list[Any] = [0, None]  # copies the compute stream waits for, its wake-up event

    def land(k: int) -> None:
        """Copy k finished (or was cancelled): release its dependents and the compute stream."""
        done[k] = 1
        if not cancelled[k]:
            end_t[k] = env.now
        followers = dependents.pop(k, None)
        if followers:
            for j in followers:
                n_deps[j] -= 1
                if n_deps[j] == 0 and not cancelled[j]:
                    submit(j)
        if waited[k]:
            compute_state[0] -= 1
            if compute_state[0] == 0:
                compute_state[1].succeed()

    fluid = []
    for spec in servers:
        server = FluidServer(env, spec, nbytes, land)
        server.cancelled, server.started, server.start_t = cancelled, started, start_t
        fluid.append(server)
    pieces = _Pieces(env, plan, servers, slicing, nbytes, land, fluid, server_of, is_prefetch) \
        if slicing else None

    def submit(k: int) -> None:
        if pieces is not None and pieces.sliced[server_of[k]]:
            if pieces.batch is not None:
                pieces.batch.append(k)  # queued at the gate, in the slicing's order
            else:
                pieces.submit([k], False)
        else:
            fluid[server_of[k]].submit(k, is_prefetch[k])

    def issue(k: int) -> None:
        blocking = 0
        old = cancels.get(k)
        if old:
            for j in old:
                if done[j]:
                    continue
                if cancel_unstarted and not started[j] and (pieces is None or pieces.cancel(j)):
                    # its object was evicted before the copy began
                    cancelled[j] = 1
                    land(j)
                else:  # queued or still writing the slot this copy reuses
                    dependents.setdefault(j, []).append(k)
                    blocking += 1
        before = deps.get(k)
        if before:
            for j in before:
                if not done[j]:
                    dependents.setdefault(j, []).append(k)
                    blocking += 1
        if blocking:
            n_deps[k] = blocking
        else:
            submit(k)

    # cells that need the clock, and the compute time between their gates
    issues = np.diff(plan.cell_copy_offsets) > 0
    has_wait = np.diff(plan.wait_offsets) > 0
    event_cells = np.flatnonzero(issues | has_wait)
    at_gate = np.cumsum(pre_gate)[event_cells]
    deltas = np.diff(np.concatenate(([0.0], at_gate))).tolist()
    event_list = event_cells.tolist()

    if pipelined is not None:
        wait_compute = pipelined.wait_compute.tolist()
        cell_expert = pipelined.expert.tolist()
        cell_cpu = pipelined.cpu_path.tolist()
        cell_barrier = pipelined.barrier.tolist() if pipelined.barrier is not None else [False] * n_cells
        if pipelined.overlappable is not None:  # e.g. a dense FFN beside the experts: the stream runs it first
            cell_expert = (pipelined.expert + pipelined.overlappable).tolist()

    def compute():  # noqa: ANN202 - a simpy process
        for k in range(plan.n_setup_copies):  # pinned objects load before the first cell
            issue(k)
        timeout = env.timeout
        next_gate = 0.0
        for i, e in enumerate(event_list):
            next_gate += deltas[i]
            if next_gate > env.now:
                yield timeout(next_gate - env.now)
            gate = env.now
            if pieces is not None:
                pieces.batch = []
            for k in range(cell_copy_off[e], cell_copy_off[e + 1]):
                issue(k)
            if pieces is not None:
                pieces.submit_gate(slicing.slice_major)
            pending = []
            n_late = 0
            for w in range(wait_off[e], wait_off[e + 1]):
                k = waits[w]
                if not done[k]:
                    waited[k] = 1
                    pending.append(w)
                    if is_prefetch[k]:
                        n_late += 1
            if pending:
                wake = env.event()
                compute_state[0] = len(pending)
                compute_state[1] = wake
                yield wake
                if pipelined is None or cell_barrier[e]:
                    stall[e] = env.now - gate
                elif pieces is not None and slicing.order is not None:
                    stall[e] = pieces.ordered(e, gate, wait_off, waits, end_t, cell_cpu[e],
                                              0.0 if pipelined.overlappable is None else pipelined.overlappable[e])
                else:
                    stall[e] = _pipelined_stall(gate, pending, waits, end_t, wait_compute, cell_expert[e], cell_cpu[e])
                if stall[e] > 0:  # a copy landing at the gate's very instant is not late
                    late[e] = n_late
                    for w in pending:
                        if is_prefetch[waits[w]]:
                            late_wait[w] = True
            next_gate = gate + stall[e]  # later deltas count from this gate, shifted by its stall

    env.process(compute())
    env.run()
    return EngineOutput(
        stall=stall,
        late=late,
        late_wait=late_wait,
        copy_busy=None if pieces is None else pieces.busy_seconds(end_t, start_t),
        copy_start=np.asarray(start_t, dtype=np.float64),
        copy_end=np.asarray(end_t, dtype=np.float64),
        copy_cancelled=np.frombuffer(bytes(cancelled), dtype=np.uint8).astype(bool),
        events=_events_scheduled(env),
        event_cells=int(event_cells.size),
    )


class _Pieces:
    """The slice requests of storage reads (Slicing): one FluidServer per storage server over piece ids
    k x n + p, a copy landing when its last piece has."""

    def __init__(self, env: simpy.Environment, plan: Plan, servers: tuple[LinkServer, ...], slicing: Slicing,
                 nbytes: list[float], land: Any, fluid: list[FluidServer],
                 server_of: list[int], is_prefetch: list[bool]) -> None:
        self.env, self.slicing, self.n = env, slicing, slicing.n
        self.land = land
        self.server_of, self.is_prefetch = server_of, is_prefetch
        n_copies = plan.n_copies
        self.sliced = [bool(x) for x in slicing.servers] or [spec.curve is not None for spec in servers]
        piece_bytes = [b * f for b in nbytes for f in slicing.fractions]
        self.piece_end = np.full((n_copies, self.n), np.nan)
        self.piece_busy = np.zeros(n_copies)
        self.left = [self.n] * n_copies
        self.read_sliced = np.zeros(n_copies, dtype=bool)
        self.piece_start = [float("nan")] * (n_copies * self.n)
        self.servers: dict[int, FluidServer] = {}
        for i, spec in enumerate(servers):
            if self.sliced[i]:
                server = FluidServer(env, spec, piece_bytes, self._piece_done)
                server.cancelled = bytearray(n_copies * self.n)
                server.started = bytearray(n_copies * self.n)
                server.start_t = self.piece_start
                self.servers[i] = server
                fluid[i] = server
        self.batch: list[int] | None = None

    def submit(self, copies: list[int], slice_major: bool) -> None:
        for k, p in piece_order(copies, self.n, slice_major):
            self.read_sliced[k] = True
            self.servers[self.server_of[k]].submit(k * self.n + p, self.is_prefetch[k])

    def submit_gate(self, slice_major: bool) -> None:
        """The gate's sliced copies that could start: demand ones first, as the servers serve demand before
        prefetch, each class in the slicing's order; the rest are queued as the copies they wait for land."""
        batch, self.batch = self.batch or [], None
        self.submit([k for k in batch if not self.is_prefetch[k]], slice_major)
        self.submit([k for k in batch if self.is_prefetch[k]], slice_major)

    def cancel(self, k: int) -> bool:
        """cancel_unstarted on copy k: drop its queued slices if none has started (True), else False.
        A copy not yet queued as slices (waiting for a copy, or not a storage read) has nothing queued here."""
        if not self.read_sliced[k]:
            return True
        server, ids = self.servers[self.server_of[k]], range(k * self.n, (k + 1) * self.n)
        if any(server.started[j] for j in ids):
            return False
        for j in ids:
            server.cancelled[j] = 1
        return True

    def _piece_done(self, j: int) -> None:
        k, p = divmod(j, self.n)
        self.piece_end[k, p] = self.env.now
        self.piece_busy[k] += self.env.now - self.piece_start[j]
        self.left[k] -= 1
        if self.left[k] == 0:
            self.land(k)

    def ordered(self, cell: int, gate: float, wait_off: list[int], waits: list[int], end_t: list[float],
                cpu_path: float, overlappable: float) -> float:
        order = self.slicing.order
        ends = self.piece_end
        lo, hi = int(order.offsets[cell]), int(order.offsets[cell + 1])
        mine = set(order.copy[lo:hi].tolist())
        others = [end_t[waits[w]] for w in range(wait_off[cell], wait_off[cell + 1]) if waits[w] not in mine]
        for k in mine:  # a copy not read in slices lands whole: every slice at its end
            if k >= 0 and np.isnan(ends[k, 0]):
                ends[k, :] = end_t[k]
        return ordered_stall(gate, lo, hi, order, self.slicing.fractions, ends, others, overlappable, cpu_path)

    def busy_seconds(self, end_t: list[float], start_t: list[float]) -> np.ndarray:
        """Lane seconds per copy: its slices' summed time for a sliced read, end - start otherwise. A sliced
        copy's start (written into start_t) is its first slice's."""
        sliced = self.read_sliced
        first = np.asarray(self.piece_start, dtype=np.float64).reshape(-1, self.n).min(axis=1)
        for k in np.flatnonzero(sliced).tolist():
            start_t[k] = float(first[k])
        whole = np.asarray(end_t, dtype=np.float64) - np.asarray(start_t, dtype=np.float64)
        return np.where(sliced, self.piece_busy, whole)


def _pipelined_stall(gate: float, pending: list[int], waits: list[int], end_t: list[float],
                     wait_compute: list[float], expert: float, cpu_path: float) -> float:
    """Seconds the compute stream waited in a pipelined cell (see `simulate`).

    Resident experts (and copies landed before the gate) run first; each pending copy's expert
    starts at max(stream free, its arrival). The CPU path starts once every copy has landed.
    """
    arrivals = sorted((end_t[waits[w]], w) for w in pending)
    t = gate + expert - sum(wait_compute[w] for w in pending)
    for arrival, w in arrivals:
        t = max(t, arrival) + wait_compute[w]
    end = max(t, (arrivals[-1][0] if cpu_path > 0 else gate) + cpu_path)
    return max(end - gate - max(expert, cpu_path), 0.0)


def _sparse(offsets: np.ndarray, values: np.ndarray) -> dict[int, list[int]]:
    """Per-copy lists from offsets + flat values, only for copies that have any."""
    counts = np.diff(offsets)
    out: dict[int, list[int]] = {}
    flat = values.tolist()
    for k in np.flatnonzero(counts).tolist():
        out[k] = flat[int(offsets[k]) : int(offsets[k + 1])]
    return out


def _events_scheduled(env: simpy.Environment) -> int:
    """Events the environment scheduled (simpy numbers them with an internal counter)."""
    counter = getattr(env, "_eid", None)
    return int(next(counter)) if counter is not None else -1
