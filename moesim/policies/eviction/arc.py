"""ARC (Megiddo and Modha, FAST 2003): recency and frequency lists with an adaptive split."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState, queues
from moesim.policies.registry import register


def _restore(policy: "ARC", state: KernelState) -> None:
    lists = queues(state, 4)  # T1, T2, B1, B2
    for name, objs in zip(("t1", "t2", "b1", "b2"), lists):
        setattr(policy, f"_{name}", OrderedDict.fromkeys(objs))
        policy._bytes[name] = sum(policy._nbytes(o) for o in objs)
    p, adapted, pending = state.values
    policy._p = p
    policy._adapted = None if adapted < 0 else int(adapted)
    policy._pending = None if pending < 0 else int(pending)


@register("arc")
class ARC(EvictionPolicy):
    """Adaptive Replacement Cache: T1 (seen once), T2 (seen again), ghosts B1/B2, target p.

    The textbook algorithm (the paper's Fig. 4) counted in bytes, so it is exact for unit sizes:
    - a hit moves the object to the MRU end of T2; a miss that was in ghost B1 (B2) first raises
      (lowers) p by max(|B2|/|B1|, 1) (resp. max(|B1|/|B2|, 1)) times its size, then enters T2;
      any other miss enters T1;
    - REPLACE evicts T1's LRU object into B1 when |T1| > p (or |T1| = p and the newcomer was in
      B2), else T2's LRU object into B2; ghosts are trimmed so |T1|+|B1| <= c and all four <= 2c.
    Departures, forced by the shared core: the core (not ARC) decides when room is needed, so
    REPLACE runs only when an insertion would overflow; protected objects are skipped in LRU order
    and, when one list has no eligible object, the other list gives the victim; a prefetch
    insertion is treated like a demand miss. c is ctx.capacity_bytes. O(1) per hook.
    """

    compiled = CompiledForm("arc", restore=_restore)

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._c = int(ctx.capacity_bytes or 0)
        self._size = ctx.object_bytes
        self._t1: OrderedDict[int, None] = OrderedDict()
        self._t2: OrderedDict[int, None] = OrderedDict()
        self._b1: OrderedDict[int, None] = OrderedDict()
        self._b2: OrderedDict[int, None] = OrderedDict()
        self._bytes = {"t1": 0, "t2": 0, "b1": 0, "b2": 0}
        self._p = 0.0
        self._adapted: int | None = None  # object whose ghost hit already moved p (in admit)
        self._pending: int | None = None

    def _nbytes(self, obj: int) -> int:
        return int(self._size[obj])

    def _adapt(self, obj: int) -> None:
        size = self._nbytes(obj)
        if obj in self._b1:
            ratio = max(len(self._b2) / len(self._b1), 1.0)
            self._p = min(float(self._c), self._p + ratio * size)
        elif obj in self._b2:
            ratio = max(len(self._b1) / len(self._b2), 1.0)
            self._p = max(0.0, self._p - ratio * size)
        self._adapted = obj

    def admit(self, obj: int, prefetch: bool = False) -> bool:
        self._adapt(obj)
        self._pending = obj
        return True

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        if self._adapted != obj:
            self._adapt(obj)
        self._adapted = None
        self._pending = None
        size = self._nbytes(obj)
        if obj in self._b1:
            del self._b1[obj]
            self._bytes["b1"] -= size
            self._t2[obj] = None
            self._bytes["t2"] += size
        elif obj in self._b2:
            del self._b2[obj]
            self._bytes["b2"] -= size
            self._t2[obj] = None
            self._bytes["t2"] += size
        else:
            self._t1[obj] = None
            self._bytes["t1"] += size
        self._trim_ghosts()

    def on_access(self, obj: int, now: float) -> None:
        if obj in self._t1:
            del self._t1[obj]
            self._t2[obj] = None
            size = self._nbytes(obj)
            self._bytes["t1"] -= size
            self._bytes["t2"] += size
        else:
            self._t2.move_to_end(obj)

    def on_evict(self, obj: int) -> None:
        size = self._nbytes(obj)
        if obj in self._t1:
            del self._t1[obj]
            self._bytes["t1"] -= size
            self._b1[obj] = None
            self._bytes["b1"] += size
        else:
            del self._t2[obj]
            self._bytes["t2"] -= size
            self._b2[obj] = None
            self._bytes["b2"] += size
        self._trim_ghosts()

    def _trim_ghosts(self) -> None:
        b = self._bytes
        c = self._c
        while self._b1 and b["t1"] + b["b1"] > c:
            obj, _ = self._b1.popitem(last=False)
            b["b1"] -= self._nbytes(obj)
        while self._b2 and b["t1"] + b["t2"] + b["b1"] + b["b2"] > 2 * c:
            obj, _ = self._b2.popitem(last=False)
            b["b2"] -= self._nbytes(obj)

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        t1_bytes = self._bytes["t1"]
        from_t1 = bool(self._t1) and (
            t1_bytes > self._p or (self._pending is not None and self._pending in self._b2 and t1_bytes == self._p))
        order = (self._t1, self._t2) if from_t1 else (self._t2, self._t1)
        for lst in order:
            for obj in lst:
                if eligible(obj):
                    return obj
        return None

    def tracked_objects(self) -> Iterable[int]:
        return [*self._t1, *self._t2]
