"""One link direction in the engine: a fluid processor-sharing server over simpy (docs/metrics.md, "Engine").

`slots` transfers (copy engines, or read lanes out of storage) run at once; waiting ones are served
demand class first, FIFO within a class. A started transfer first waits the server's per-transfer
latency (it holds its slot, moves no bytes), then its bytes flow: with n transfers flowing, each
gets aggregate(n) / n bytes/s (moesim.sim.topology.LinkServer.shares), recomputed whenever one
starts or ends. As all flowing transfers get the same share, the server keeps one simpy Timeout,
for the transfer with the fewest bytes left; a start or an end schedules a new one and the old one,
now stale, is ignored (a version number per server). A server with one slot, or whose
per-transfer share does not change with n, schedules exactly one event per copy (plus none for
the latency).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import simpy

from moesim.sim.topology import LinkServer

TIE_S = 1e-12  # transfers within a picosecond of the earliest end together (equal copies started together)


class FluidServer:
    def __init__(self, env: simpy.Environment, spec: LinkServer, nbytes: list[float],
                 on_done: Callable[[int], None]) -> None:
        self.env = env
        self.spec = spec
        self.free = max(int(spec.slots), 1)
        self.latency = float(spec.latency)
        self.shares = spec.shares
        self.nbytes = nbytes
        self.on_done = on_done
        self.demand: deque[int] = deque()
        self.prefetch: deque[int] = deque()
        self.cancelled: bytearray | None = None
        self.started: bytearray | None = None
        self.start_t: list[float] | None = None
        # flowing transfers: k -> [bytes left, rate, time of last update]
        self.flowing: dict[int, list[Any]] = {}
        self.version = 0
        self.simple = self.free == 1 or len(set(self.shares[1:])) == 1

    def submit(self, k: int, prefetch: bool) -> None:
        if self.free:
            self.free -= 1
            self._start(k)
        elif prefetch:
            self.prefetch.append(k)
        else:
            self.demand.append(k)

    def _start(self, k: int) -> None:
        self.started[k] = 1  # type: ignore[index]
        self.start_t[k] = self.env.now  # type: ignore[index]
        if self.simple:  # the share never changes: latency + bytes / share, one event
            event = simpy.events.Timeout(self.env, self.latency + self.nbytes[k] / self.shares[1], k)
            event.callbacks.append(self._finish_simple)
        elif self.latency > 0:
            event = simpy.events.Timeout(self.env, self.latency, k)
            event.callbacks.append(self._flow)
        else:
            self._begin(k)

    def _flow(self, event: simpy.events.Timeout) -> None:
        self._begin(event._value)

    def _begin(self, k: int) -> None:
        self._advance()
        self.flowing[k] = [float(self.nbytes[k]), 0.0, self.env.now]
        self._reschedule()

    def _advance(self) -> None:
        now = self.env.now
        for state in self.flowing.values():
            state[0] -= state[1] * (now - state[2])
            state[2] = now

    def _reschedule(self) -> None:
        """Every flowing transfer gets the same share, so only the one with the fewest bytes left
        can end next: one Timeout per server for it; earlier ones are stale (version)."""
        self.version += 1
        if not self.flowing:
            return
        share = self.shares[len(self.flowing)]
        for state in self.flowing.values():
            state[1] = share
        left = min(state[0] for state in self.flowing.values())
        event = simpy.events.Timeout(self.env, max(left, 0.0) / share, self.version)
        event.callbacks.append(self._finish_fluid)

    def _finish_fluid(self, event: simpy.events.Timeout) -> None:
        if event._value != self.version:
            return  # stale: a transfer started or ended after this Timeout was scheduled
        self._advance()
        share = self.shares[len(self.flowing)]
        ended = [k for k, state in self.flowing.items() if state[0] <= share * TIE_S]
        for k in ended:
            del self.flowing[k]
        self._reschedule()
        for k in ended:
            self._done(k)

    def _finish_simple(self, event: simpy.events.Timeout) -> None:
        self._done(event._value)

    def _done(self, k: int) -> None:
        self.on_done(k)
        cancelled = self.cancelled
        for queue in (self.demand, self.prefetch):
            while queue:
                j = queue.popleft()
                if not cancelled[j]:  # type: ignore[index]
                    self._start(j)
                    return
        self.free += 1
