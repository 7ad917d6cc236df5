"""The small interfaces every policy implements.

After gem5's replacement policies and CacheLib's MM containers: the cache core owns residency,
sizes, pins and in-flight state; an eviction policy only keeps its own ordering and, asked for a
victim, walks that order and returns the first object the core says may go. The clock (`now`) is
passed in and never read from simpy, so the same policy object runs in the count replay, the timing
engine and the real-GPU executor. A policy must not import from `moesim.sim` or `moesim.kernels`.
"""

from __future__ import annotations

import abc

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Protocol

import numpy as np


class FutureView(Protocol):
    """Read access to the future of the request stream, for offline policies (Belady, oracles).

    Positions are indices into the request stream the core is replaying; `position` is the
    index of the request being served now.
    """

    position: int

    def next_use(self, obj: int, after: int) -> int:
        """Position of the first request for `obj` strictly after `after` (a large sentinel if none)."""
        ...


NEVER = np.iinfo(np.int64).max // 4
"""Next-use sentinel for an object that is never requested again."""


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may know about the workload. Arrays are indexed by object id."""

    n_objects: int
    n_layers: int
    n_experts: int
    object_layer: np.ndarray
    object_bytes: np.ndarray
    seed: int = 0
    future: FutureView | None = None
    partition: int | None = None
    """The layer this policy instance serves when the cache is partitioned per layer, else None."""
    profile_counts: np.ndarray | None = None
    """Per-object access counts from a profiling trace or prefix (static pinning, frequency prefetch)."""
    trace: object | None = None
    """The whole trace (moesim.traces.format.trace.Trace), given only to offline policies (oracles) and to
    policies that read recorded predictions; online policies must not look ahead through it."""
    trace_name: str | None = None
    """How to name the trace in error messages (its file path, when it came from one)."""
    capacity_bytes: int | None = None
    """Bytes of the partition this policy orders (set by the cache core): segment sizes (SLRU),
    ghost-list bounds (ARC) and pin budgets (static-hot) are shares of it."""


class EvictionPolicy(abc.ABC):
    """Orders resident objects for eviction. Subclasses register with `@register("name")`.

    The core calls, for objects in this policy's partition:
      on_pass_begin(p, now)        a new forward pass starts (Least-Stale, collision taxonomy)
      admit(obj, prefetch) -> bool room must be made for obj (its insertion would evict); called
                                   once, before any victim is asked for obj; False refuses (bypass)
      victim(eligible) -> obj      walk the policy's order; return the first obj with eligible(obj)
      on_evict(obj)                the core removed obj
      on_insert(obj, now, prefetch) obj became resident (or started its copy in)
      on_access(obj, now)          a demand request hit obj (or found it in flight)
    Hits on pinned objects are not reported (pinned objects are never in a policy's order).
    Every hook must be O(1) or O(log n) amortised: the count replay calls them millions of times.
    """

    name: ClassVar[str] = ""
    offline: ClassVar[bool] = False
    """True if the policy reads the future (Belady): results are bounds, not deployable."""

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        self.params = params
        self.ctx = ctx

    def on_pass_begin(self, pass_index: int, now: float) -> None:
        pass

    @abc.abstractmethod
    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        """Keep the policy's order in step with the core."""

    @abc.abstractmethod
    def on_access(self, obj: int, now: float) -> None:
        """Keep the policy's order in step with the core."""

    @abc.abstractmethod
    def on_evict(self, obj: int) -> None:
        """Keep the policy's order in step with the core."""

    @abc.abstractmethod
    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        """The first object in eviction order for which `eligible` is true, or None.

        None with eligible candidates left refuses the admission under way (Belady's bypass
        decides there, where it can see which residents are eligible); the core counts a bypass.
        """

    def admit(self, obj: int, prefetch: bool = False) -> bool:
        """Room must be made for `obj`; return False to refuse it (it is then streamed, not cached).

        Only offline policies normally refuse (Belady with bypass). Layer-aware policies also learn
        the layer being served here, since a cell whose objects all miss reports no access before
        its victims are chosen.
        """
        return True

    def pinned_objects(self) -> list[int]:
        """Objects the core must load at start and never evict (static hot pinning)."""
        return []

    def tracked_objects(self) -> Iterable[int] | None:
        """The objects in this policy's order, for CacheCore.check() (tests); None skips the check.

        They must be exactly the partition's present (resident or in-flight) unpinned objects.
        """
        return None


@dataclass(frozen=True)
class PrefetchRequest:
    obj: int
    priority: float
    """Higher first. Requests of equal priority keep the order given."""


@dataclass(frozen=True)
class PrefetchView:
    """What a prefetch policy sees when it is asked for proposals.

    `cell` is the cell that just started computing (its pass and layer); `routed` its experts' object
    ids; `resident` answers whether an object is resident or in flight; `link_bytes_per_s` and
    `compute_window_s` let a policy budget what the link can move while compute runs.
    """

    pass_index: int
    cell: int
    layer: int
    routed: np.ndarray
    resident: Callable[[int], bool]
    link_bytes_per_s: float = 0.0
    compute_window_s: float = 0.0


@dataclass(frozen=True)
class ServedCells:
    """Consecutive served cells first, first + 1, ...: cell first + i has pass pass_index[i], layer
    layer[i] and routed object ids routed[offsets[i]:offsets[i + 1]] (offsets index `routed`)."""

    first: int
    pass_index: np.ndarray
    layer: np.ndarray
    offsets: np.ndarray
    routed: np.ndarray


class PrefetchPolicy:
    """Proposes objects to copy ahead of demand. Registered like eviction policies (kind "prefetch").

    `observe(pass_index, cell, layer, routed)` is called with every served cell (online learners);
    `routed` holds object ids (layer * n_experts + expert), as in PrefetchView, and `cell` is the
    trace's cell index (the oracles index the trace with it);
    `propose(view)` returns PrefetchRequests for later layers; the engine issues them while the
    link has room, demand copies first.
    Two optional hooks let a planner skip the cells where nothing would be proposed (the compiled
    planner runs those cells without Python): `quiet_cells` names them, and `observe_cells` then
    receives the skipped cells' observations in one batch, before the next propose(). A policy
    whose observe() reads nothing but its arguments may batch them; the default replays them.
    """

    name: ClassVar[str] = ""
    offline: ClassVar[bool] = False
    proposes_nothing: ClassVar[bool] = False
    """True if propose() never returns anything and observe() reads nothing: the planners then
    skip the prefetch step altogether (tests/policies/test_prefetch_contracts.py checks it)."""

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        self.params = params
        self.ctx = ctx

    def observe(self, pass_index: int, cell: int, layer: int, routed: np.ndarray) -> None:
        pass

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        return []

    def observe_cells(self, cells: ServedCells) -> None:
        """observe() for each of `cells`, in order."""
        offsets = cells.offsets.tolist()
        for i, (p, layer) in enumerate(zip(cells.pass_index.tolist(), cells.layer.tolist())):
            self.observe(p, cells.first + i, layer, cells.routed[offsets[i]:offsets[i + 1]])

    def quiet_cells(self, link_bytes_per_s: float, compute_window_s: np.ndarray) -> np.ndarray | None:
        """Per cell, True where propose() returns nothing whatever the cache holds; None: unknown.

        `compute_window_s` is every cell's window (PrefetchView.compute_window_s) in cell order.
        """
        return None
