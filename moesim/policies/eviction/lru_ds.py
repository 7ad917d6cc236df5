"""LRU that spares the next few layers (MoE-Infinity's lru_ds idea)."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from moesim.errors import UserError
from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState
from moesim.policies.registry import register


def _restore(policy: "LRUDistance", state: KernelState) -> None:
    # the kernel keeps one list in stamp order; each layer's list is that order filtered
    lists = policy._lists
    for lst in lists:
        lst.clear()
    for obj, stamp in zip(state.objs, state.stamp):
        lists[policy._layer_of[obj]][obj] = stamp
    policy._fronts = [(next(iter(lst.values())), layer) for layer, lst in enumerate(lists) if lst]
    heapq.heapify(policy._fronts)
    policy._clock = state.clock
    policy._current = int(state.values[0])


@register("lru-ds")
class LRUDistance(EvictionPolicy):
    """LRU whose victims avoid the layers about to run.

    The current layer is the layer of the latest demand request (a hit, or a miss that needs
    room). Objects of the next `protect` layers after it (cyclically: after the last layer come
    the first ones, which the next pass needs) are passed over; among the rest the least recently
    used goes. If every eligible object lies in a protected layer, plain LRU decides.
    The MoE-Infinity source names the idea but its code was not available to check against; this
    is the description in the moesim issue, not a port.
    Bookkeeping: one LRU list per layer plus a heap of the layers' oldest stamps, so a victim costs
    O(log layers) plus the protected layers it skips, not a scan of all residents.
    """

    # the kernel walks one LRU list, skipping the spared layers (same victims, no heap of fronts)
    compiled = CompiledForm("lru-ds", params=("protect",), kernel_params=lambda p: (p.protect,), restore=_restore,
                            derived=("_fronts",))

    @dataclass(frozen=True)
    class Params:
        protect: int = field(default=3, metadata={"help": "how many layers after the current one are spared"})

        def check(self) -> None:
            if self.protect < 0:
                raise UserError(f"protect must be >= 0, got {self.protect}", "policy lru-ds")

    def __init__(self, params: "LRUDistance.Params", ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._layer_of = ctx.object_layer.tolist()
        self._n_layers = ctx.n_layers
        self._lists: list[OrderedDict[int, int]] = [OrderedDict() for _ in range(ctx.n_layers)]
        self._fronts: list[tuple[int, int]] = []  # (stamp of the layer's oldest object, layer), lazy
        self._clock = 0
        self._current = 0

    # a layer's heap entry is live when its stamp is still the stamp of that layer's oldest object
    def _push_front(self, layer: int) -> None:
        lst = self._lists[layer]
        if lst:
            heapq.heappush(self._fronts, (next(iter(lst.values())), layer))
            if len(self._fronts) > 4 * self._n_layers + 64:
                self._fronts = [(next(iter(lst.values())), l) for l, lst in enumerate(self._lists) if lst]
                heapq.heapify(self._fronts)

    def _touch(self, obj: int) -> None:
        layer = self._layer_of[obj]
        lst = self._lists[layer]
        was_front = bool(lst) and next(iter(lst)) == obj
        self._clock += 1
        lst[obj] = self._clock
        lst.move_to_end(obj)
        if was_front or len(lst) == 1:
            self._push_front(layer)

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        if not prefetch:
            self._current = self._layer_of[obj]
        self._touch(obj)

    def on_access(self, obj: int, now: float) -> None:
        self._current = self._layer_of[obj]
        self._touch(obj)

    def admit(self, obj: int, prefetch: bool = False) -> bool:
        if not prefetch:
            self._current = self._layer_of[obj]
        return True

    def on_evict(self, obj: int) -> None:
        layer = self._layer_of[obj]
        lst = self._lists[layer]
        was_front = next(iter(lst)) == obj
        del lst[obj]
        if was_front:
            self._push_front(layer)

    def _protected(self, layer: int) -> bool:
        distance = (layer - self._current) % self._n_layers
        return 0 < distance <= self.params.protect

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        fronts = self._fronts
        lists = self._lists
        aside: list[tuple[int, int]] = []
        spared: list[int] = []
        best: tuple[int, int] | None = None  # (stamp, obj) of the oldest eligible unspared object so far
        while fronts:
            stamp, layer = fronts[0]
            lst = lists[layer]
            if not lst or next(iter(lst.values())) != stamp:
                heapq.heappop(fronts)
                continue
            if best is not None and stamp > best[0]:
                break  # every layer left starts later than the best candidate
            aside.append(heapq.heappop(fronts))
            if self._protected(layer):
                spared.append(layer)
                continue
            candidate = _first_eligible(lst, eligible)
            if candidate is not None and (best is None or candidate < best):
                best = candidate
        for entry in aside:
            heapq.heappush(fronts, entry)
        if best is None:
            # every eligible object is in a spared layer: plain LRU among those
            for layer in spared:
                candidate = _first_eligible(lists[layer], eligible)
                if candidate is not None and (best is None or candidate < best):
                    best = candidate
        return None if best is None else best[1]

    def tracked_objects(self) -> Iterable[int]:
        return [o for lst in self._lists for o in lst]


def _first_eligible(lst: OrderedDict[int, int], eligible: Callable[[int], bool]) -> tuple[int, int] | None:
    for obj, stamp in lst.items():
        if eligible(obj):
            return stamp, obj
    return None
