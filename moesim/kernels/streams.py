"""Copies on a side stream with events, the write-after-read slot hazard, and per-cell timing.

On a GPU: expert copies run on a dedicated copy stream; the compute stream waits on a copy's end
event before reading the slot (read-after-write), and the copy stream waits on the slot's
last-read event before overwriting it (write-after-read: a slot is overwritten only after every
kernel that read its previous object has finished; missing this wait is the usual silent
corruption in prefetchers, gpu_method.md §3). Times come from CUDA events on the stream that did
the work.

On CPU the same calls run synchronously: copies happen at once, events are monotonic-clock stamps
and waits are no-ops (the timings are meaningless there, but present, so the same executor code
runs and CI exercises it). Every event carries a sequence number and, with `log=True`, each
record/wait/copy is appended to `log`, so tests can check the hazard protocol was followed.
GPU path only: imports torch.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Iterator

import torch


@dataclass
class Event:
    """A point in a stream's work: a CUDA event, or a perf_counter stamp on CPU."""

    seq: int
    t_ns: int
    cuda_event: Any = None

    def seconds_until(self, later: "Event") -> float:
        """Seconds from this event to `later` (CUDA: both must have completed; synchronize first)."""
        if self.cuda_event is not None and later.cuda_event is not None:
            return float(self.cuda_event.elapsed_time(later.cuda_event)) * 1e-3
        return (later.t_ns - self.t_ns) * 1e-9

    def done(self) -> bool:
        return True if self.cuda_event is None else bool(self.cuda_event.query())


@dataclass
class CopyRecord:
    """One issued copy: what moved, where to, and the events bracketing it on the copy stream."""

    tag: Hashable
    nbytes: int
    slot: int | None
    start: Event
    end: Event

    def seconds(self) -> float:
        return self.start.seconds_until(self.end)


class DeviceClock:
    """Records events on a device's streams (CUDA events, or monotonic stamps on CPU)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._seq = itertools.count()

    def record(self, stream: Any = None) -> Event:
        """An event at the current end of `stream` (default: the device's current stream)."""
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record(stream if stream is not None else torch.cuda.current_stream(self.device))
            return Event(next(self._seq), time.perf_counter_ns(), ev)
        return Event(next(self._seq), time.perf_counter_ns())

    def compute_stream(self) -> Any:
        return torch.cuda.current_stream(self.device) if self.cuda else None

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


class CopyStream:
    """A side stream for host-to-device expert copies, tracking per-slot fill and last-read events.

    Protocol per slot s: `copy(dst, src, slot=s)` first waits for s's last read, then copies;
    `wait_ready([s])` makes the compute stream wait for s's latest copy; after launching the
    kernel that reads s, `record_read([s])` marks where that read ends.
    """

    def __init__(self, device: torch.device | str, log: bool = False, clock: DeviceClock | None = None,
                 shared: "CopyStream | None" = None, priority: int = 0) -> None:
        """`shared`: another copy stream whose slot events, records and log this one shares (several
        copy engines over one slot pool: a read or a fill is seen whichever stream did it).
        `priority`: CUDA stream priority (lower = higher priority; -1 for demand copies)."""
        self.clock = shared.clock if shared is not None else (clock or DeviceClock(device))
        self.device = self.clock.device
        self.cuda = self.clock.cuda
        self.stream = torch.cuda.Stream(device=self.device, priority=priority) if self.cuda else None
        if shared is not None:
            self._last_read, self._filled = shared._last_read, shared._filled
            self.records, self.log = shared.records, shared.log
            return
        self._last_read: dict[int, Event] = {}
        self._filled: dict[int, Event] = {}
        self.records: list[CopyRecord] = []
        self.log: list[tuple] | None = [] if log else None

    def _note(self, *entry: Any) -> None:
        if self.log is not None:
            self.log.append(entry)

    # ---- write-after-read ----------------------------------------------------------------------
    def record_read(self, slots: int | Iterable[int], stream: Any = None) -> Event:
        """Mark the end of the compute (enqueued so far) that reads `slots` (one slot or several)."""
        ev = self.clock.record(stream)
        for slot in ([slots] if isinstance(slots, int) else slots):
            self._last_read[int(slot)] = ev
            self._note("read", int(slot), ev.seq)
        return ev

    def wait_slot_free(self, slot: int) -> None:
        """Make the copy stream wait until the last kernel that read `slot` has finished."""
        ev = self._last_read.get(int(slot))
        if ev is None:
            return
        if self.cuda:
            self.stream.wait_event(ev.cuda_event)
        self._note("wait_free", int(slot), ev.seq)

    # ---- copies --------------------------------------------------------------------------------
    def copy(self, dst: torch.Tensor, src: torch.Tensor, slot: int | None = None, tag: Hashable = None) -> CopyRecord:
        """Copy src into dst on the side stream (after the slot's last read and, when another stream
        filled it, after that fill: write-after-write); returns its record."""
        if slot is not None:
            self.wait_slot_free(slot)
            previous = self._filled.get(int(slot))
            if self.cuda and previous is not None and previous.cuda_event is not None:
                self.stream.wait_event(previous.cuda_event)
        with torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext():
            start = self.clock.record(self.stream)
            dst.copy_(src, non_blocking=True)
            end = self.clock.record(self.stream)
        if slot is not None:
            self._filled[int(slot)] = end
        self._note("copy", slot, tag, end.seq)
        rec = CopyRecord(tag, src.numel() * src.element_size(), slot, start, end)
        self.records.append(rec)
        return rec

    def wait_ready(self, slots: Iterable[int], stream: Any = None) -> None:
        """Make the compute stream wait for the latest copy into each of `slots` (read-after-write)."""
        target = stream if stream is not None else self.clock.compute_stream()
        for slot in slots:
            ev = self._filled.get(int(slot))
            if ev is None:
                continue
            if self.cuda:
                target.wait_event(ev.cuda_event)
            self._note("wait_ready", int(slot), ev.seq)

    def synchronize(self) -> None:
        if self.cuda:
            self.stream.synchronize()


class CellTimer:
    """Named spans on the compute stream (e.g. ("stall", cell), ("compute", cell)), read after a sync."""

    def __init__(self, clock: DeviceClock) -> None:
        self.clock = clock
        self._spans: dict[Hashable, tuple[Event, Event | None]] = {}

    def start(self, key: Hashable) -> None:
        self._spans[key] = (self.clock.record(), None)

    def stop(self, key: Hashable) -> None:
        begin, _ = self._spans[key]
        self._spans[key] = (begin, self.clock.record())

    @contextlib.contextmanager
    def span(self, key: Hashable) -> Iterator[None]:
        self.start(key)
        try:
            yield
        finally:
            self.stop(key)

    def seconds(self) -> dict[Hashable, float]:
        """Elapsed seconds of every closed span (synchronises the device first)."""
        self.clock.synchronize()
        return {k: b.seconds_until(e) for k, (b, e) in self._spans.items() if e is not None}
