"""SLRU (Karedla, Love and Wherry, 1994): a probationary and a protected LRU segment."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from moesim.errors import UserError
from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState, queues
from moesim.policies.registry import register


def _restore(policy: "SLRU", state: KernelState) -> None:
    probation, protected = queues(state, 2)
    policy._probation = OrderedDict.fromkeys(probation)
    policy._protected = OrderedDict.fromkeys(protected)
    policy._protected_bytes = sum(int(policy._size[o]) for o in protected)


@register("slru")
class SLRU(EvictionPolicy):
    """Segmented LRU: new objects enter probation; a hit there promotes them to protected.

    - Insertions (demand or prefetch) go to the MRU end of probation.
    - A hit in probation moves the object to the MRU end of protected; a hit in protected moves it
      to protected's MRU end. When protected holds more than `protected_share` x capacity bytes,
      its LRU objects are demoted to probation's MRU end (demotion never evicts).
    - Victim: probation's LRU object; if none is eligible, protected's LRU object.
    Textbook two-segment SLRU with sizes in bytes; libCacheSim's SLRU is a different, four-segment
    variant, so it is not used as an oracle here. O(1) amortised per hook.
    """

    compiled = CompiledForm("slru", params=("protected_share",), kernel_params=lambda p: (p.protected_share,),
                            restore=_restore)

    @dataclass(frozen=True)
    class Params:
        protected_share: float = field(default=0.8, metadata={"help": "share of the capacity the protected segment may hold (0..1)"})

        def check(self) -> None:
            if not 0.0 <= self.protected_share <= 1.0:
                raise UserError(f"protected_share must be in [0, 1], got {self.protected_share}", "policy slru")

    def __init__(self, params: "SLRU.Params", ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._size = ctx.object_bytes
        self._limit = params.protected_share * float(ctx.capacity_bytes or 0)
        self._probation: OrderedDict[int, None] = OrderedDict()
        self._protected: OrderedDict[int, None] = OrderedDict()
        self._protected_bytes = 0

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._probation[obj] = None

    def on_access(self, obj: int, now: float) -> None:
        if obj in self._protected:
            self._protected.move_to_end(obj)
            return
        del self._probation[obj]
        self._protected[obj] = None
        self._protected_bytes += int(self._size[obj])
        while self._protected_bytes > self._limit and len(self._protected) > 1:
            demoted, _ = self._protected.popitem(last=False)
            self._protected_bytes -= int(self._size[demoted])
            self._probation[demoted] = None

    def on_evict(self, obj: int) -> None:
        if obj in self._probation:
            del self._probation[obj]
        else:
            del self._protected[obj]
            self._protected_bytes -= int(self._size[obj])

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        for segment in (self._probation, self._protected):
            for obj in segment:
                if eligible(obj):
                    return obj
        return None

    def tracked_objects(self) -> Iterable[int]:
        return [*self._probation, *self._protected]
