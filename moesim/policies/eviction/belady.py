"""Belady's MIN: evict the object whose next request is farthest in the future (offline bound)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from moesim.errors import UserError
from moesim.policies.base import NEVER, EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState
from moesim.policies.eviction._counts import LazyMinHeap
from moesim.policies.registry import register, register_alias


def _restore(policy: "Belady", state: KernelState) -> None:
    # keys are -next_use; the kernel holds them as doubles, exact below 2**53, and "never used
    # again" (NEVER, 2**61 - 1) rounds to 2**61: map it back
    keys = [-NEVER if k == -float(NEVER) else int(k) for k in state.key]
    policy._heap.key = dict(zip(state.objs, keys))
    policy._heap.stamp = dict(zip(state.objs, state.stamp))
    policy._heap.rebuild()
    policy._clock = state.clock


@register("belady")
class Belady(EvictionPolicy):
    """Belady/MIN: the fewest misses any policy can get on unit-size objects (it reads the future).

    - Next uses come from ctx.future over the request stream being replayed, so event-atomic and
      sequential replays each get their own bound. Objects of the cell being served are protected
      by the core; among the rest the farthest next use goes first (never-used-again first of all,
      the earliest touched of those first).
    - `bypass`: a demand miss whose next use is farther than that of every eligible resident is
      not cached at all (it streams through; the miss counts, the cache is untouched). Without it
      MIN always admits, which is the bound for policies that must cache every miss.
    - With objects of unequal sizes MIN is a heuristic, not a bound (the size-aware optimum is
      NP-hard); moesim still reports it, marked offline.
    O(log n) per hook (a lazy heap keyed by next use).
    """

    offline = True
    # the compiled planner has no per-request next use for a prefetched object: it plans Belady
    # only with prefetch off
    compiled = CompiledForm("belady", params=("bypass",), kernel_params=lambda p: (1.0 if p.bypass else 0.0,),
                            restore=_restore, planner_prefetch=False)

    @dataclass(frozen=True)
    class Params:
        bypass: bool = field(default=False, metadata={"help": "refuse a miss whose next use is farther than every eligible resident's"})

    def __init__(self, params: "Belady.Params", ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        if ctx.future is None:
            raise UserError("belady reads the future of the request stream, which this run does not provide",
                            "policy belady")
        self._future = ctx.future
        self._heap = LazyMinHeap()  # key = -next use: the farthest next use is the minimum
        self._clock = 0
        self._pending: int | None = None

    def _touch(self, obj: int) -> None:
        self._clock += 1
        future = self._future
        self._heap.push(obj, -future.next_use(obj, future.position), self._clock)

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._touch(obj)

    def on_access(self, obj: int, now: float) -> None:
        self._touch(obj)

    def on_evict(self, obj: int) -> None:
        self._heap.remove(obj)

    def admit(self, obj: int, prefetch: bool = False) -> bool:
        self._pending = obj if self.params.bypass and not prefetch else None
        return True

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        entry = self._heap.first(eligible)
        pending, self._pending = self._pending, None
        if entry is None:
            return None
        if pending is not None:
            future = self._future
            if future.next_use(pending, future.position) > -entry[0]:
                return None  # bypass: caching the newcomer would only displace something needed sooner
        return entry[2]

    def tracked_objects(self) -> Iterable[int]:
        return self._heap.stamp


register_alias("belady-bypass", "belady", bypass=True)
