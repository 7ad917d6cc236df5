"""The timing layer: a simpy clock over a Plan.

Processes (docs/metrics.md, "Engine"):
- one compute stream runs cells in pass/layer order. A cell is its dense part, its *gate* (where its
  copies are issued: demand misses and the prefetches it proposed), a stall until every copy it
  must wait for has landed (its demand copies; a prefetch copy not yet landed is a late prefetch),
  then its expert part (device experts, or the host-CPU path when longer);
- copy servers: the host link (h2d or c2c) with one server per copy engine, and the SSD queue with
  one server per queue slot. A server takes queued demand copies before queued prefetch copies
  (FIFO within each class) and holds a copy for its precomputed duration (latency + bytes / bandwidth);
- a copy is queued once its dependencies have landed (the SSD -> DRAM copy it reads from, the
  reader of a DRAM slot it overwrites); a copy into a VRAM slot whose previous copy has not started
  cancels it, and waits for it if it is running.
Hits create no events. A cell that issues no copy and waits for none creates none either: the
compute process sleeps once from one such "event cell" to the next, so runs of hit-only cells cost
one timeout. Everything but the stalls is known before the clock runs, and cell start/end times
are rebuilt from the stalls with a cumulative sum.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from moesim.sim.plan import Plan
from moesim.sim.topology import SERVER_HOST, SERVER_SSD


class CountingEnvironment(simpy.Environment):
    """simpy.Environment that counts scheduled events (benchmarks assert them, as SimPy's own do)."""

    def __init__(self) -> None:
        super().__init__()
        self.events_scheduled = 0

    def schedule(self, event: Any, priority: int = 1, delay: float = 0) -> None:  # type: ignore[override]
        self.events_scheduled += 1
        super().schedule(event, priority, delay)


@dataclass
class EngineOutput:
    """What the clock decided: stalls per cell, start/end per copy."""

    stall: np.ndarray  # seconds per cell waiting for copies at its gate
    late: np.ndarray  # per cell: waited prefetch copies that had not landed at its gate
    copy_start: np.ndarray  # NaN for cancelled copies
    copy_end: np.ndarray
    copy_cancelled: np.ndarray  # bool
    events: int  # simpy events scheduled
    event_cells: int  # cells that needed the clock (issued or waited for a copy)


def simulate(
    plan: Plan,
    copy_duration: np.ndarray,
    copy_server: np.ndarray,
    pre_gate: np.ndarray,
    server_slots: tuple[int, int],
) -> EngineOutput:
    """Run the plan's copies and the compute stream on a simpy clock.

    `pre_gate[c]` is the compute time from cell c-1's stall end to cell c's gate: cell c-1's
    expert part plus cell c's dense part. `server_slots` = (host link engines, SSD queue depth).
    """
    n_cells = plan.trace.n_cells
    n_copies = plan.n_copies
    env = CountingEnvironment()
    duration = copy_duration.tolist()
    server = copy_server.tolist()
    is_prefetch = plan.copy_prefetch.tolist()
    dep_off = plan.dep_offsets.tolist()
    deps = plan.deps.tolist()
    cancel_off = plan.cancel_offsets.tolist()
    cancels = plan.cancels.tolist()
    wait_off = plan.wait_offsets.tolist()
    waits = plan.waits.tolist()
    cell_copy_off = plan.cell_copy_offsets.tolist()

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
    queues = ((deque(), deque()), (deque(), deque()))  # [server][demand, prefetch]
    idle: tuple[deque, deque] = (deque(), deque())
    compute_state = {"pending": 0, "wake": None}

    def enqueue(k: int) -> None:
        s = server[k]
        queues[s][1 if is_prefetch[k] else 0].append(k)
        if idle[s]:
            idle[s].popleft().succeed()

    def land(k: int) -> None:
        """Copy k finished (or was cancelled): release its dependents and the compute stream."""
        done[k] = 1
        followers = dependents.pop(k, None)
        if followers:
            for j in followers:
                n_deps[j] -= 1
                if n_deps[j] == 0 and not cancelled[j]:
                    enqueue(j)
        if waited[k]:
            compute_state["pending"] -= 1
            if compute_state["pending"] == 0:
                compute_state["wake"].succeed()

    def issue(k: int) -> None:
        blocking = 0
        for j in cancels[cancel_off[k] : cancel_off[k + 1]]:
            if done[j]:
                continue
            if not started[j]:
                cancelled[j] = 1
                land(j)
            else:
                dependents.setdefault(j, []).append(k)
                blocking += 1
        for j in deps[dep_off[k] : dep_off[k + 1]]:
            if not done[j]:
                dependents.setdefault(j, []).append(k)
                blocking += 1
        if blocking:
            n_deps[k] = blocking
        else:
            enqueue(k)

    def copy_engine(s: int):  # noqa: ANN202 - a simpy process
        demand, prefetch = queues[s]
        timeout = env.timeout
        while True:
            if demand:
                k = demand.popleft()
            elif prefetch:
                k = prefetch.popleft()
            else:
                wake = env.event()
                idle[s].append(wake)
                yield wake
                continue
            if cancelled[k]:
                continue
            started[k] = 1
            start_t[k] = env.now
            yield timeout(duration[k])
            end_t[k] = env.now
            land(k)

    # cells that need the clock, and the compute time between their gates
    issues = np.diff(plan.cell_copy_offsets) > 0
    has_wait = np.diff(plan.wait_offsets) > 0
    event_cells = np.flatnonzero(issues | has_wait)
    gate_clock = np.cumsum(pre_gate)
    at_gate = gate_clock[event_cells]
    deltas = np.diff(np.concatenate(([0.0], at_gate))).tolist()
    event_list = event_cells.tolist()

    def compute():  # noqa: ANN202 - a simpy process
        for k in range(plan.n_setup_copies):  # pinned objects load before the first cell
            issue(k)
        timeout = env.timeout
        for e, delta in zip(event_list, deltas):
            if delta > 0:
                yield timeout(delta)
            gate = env.now
            for k in range(cell_copy_off[e], cell_copy_off[e + 1]):
                issue(k)
            pending = 0
            n_late = 0
            for k in waits[wait_off[e] : wait_off[e + 1]]:
                if not done[k]:
                    waited[k] = 1
                    pending += 1
                    if is_prefetch[k]:
                        n_late += 1
            if pending:
                late[e] = n_late
                wake = env.event()
                compute_state["pending"] = pending
                compute_state["wake"] = wake
                yield wake
                stall[e] = env.now - gate
            # the next delta is measured from this gate: shift by the stall
        return None

    for s, slots in ((SERVER_HOST, server_slots[0]), (SERVER_SSD, server_slots[1])):
        if np.any(copy_server == s):
            for _ in range(max(int(slots), 1)):
                env.process(copy_engine(s))
    env.process(compute())
    env.run()
    return EngineOutput(
        stall=stall,
        late=late,
        copy_start=np.asarray(start_t, dtype=np.float64),
        copy_end=np.asarray(end_t, dtype=np.float64),
        copy_cancelled=np.frombuffer(bytes(cancelled), dtype=np.uint8).astype(bool),
        events=env.events_scheduled,
        event_cells=int(event_cells.size),
    )
