"""MoE-Infinity-style priority: activation frequency weighted by how soon the object's layer runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState
from moesim.policies.eviction._counts import DecayingUnit, LazyMinHeap, check_decay
from moesim.policies.registry import register


def _restore(policy: "MoEInfinityPriority", state: KernelState) -> None:
    integer = policy.params.decay == 1.0  # integer counts at decay 1, as the reference keeps them
    policy._count = {o: (int(c) if integer else c) for o, c in state.counts.items()}
    for heap in policy._heaps:
        heap.key.clear()
        heap.stamp.clear()
    for obj, key, stamp in zip(state.objs, state.key, state.stamp):
        heap = policy._heaps[policy._layer_of[obj]]
        # an object only ever prefetched has the reference's integer 0 as its key
        heap.key[obj] = int(key) if integer or obj not in state.counts else key
        heap.stamp[obj] = stamp
    for heap in policy._heaps:
        heap.rebuild()
    policy._clock = state.clock
    policy._current = int(state.values[0])
    policy._unit.unit = 1 if integer else state.unit


@register("moe-infinity")
class MoEInfinityPriority(EvictionPolicy):
    """Evict the object with the lowest  priority = count x (1 - d / L).

    - count: demand requests for the object so far (hits and admitted misses; prefetch insertions
      do not count), kept across evictions like MoE-Infinity's activation statistics, optionally
      multiplied by `decay` at every pass start.
    - d = (layer - current - 1) mod L: how many layers run before the object's layer comes up
      again (0 for the next layer, L - 1 for the layer just served), with `current` the layer of
      the latest demand request; L the number of layers.
    Ties go to the object touched earlier. MoE-Infinity's own score (moe_infinity/memory/
    expert_priority_score.py) multiplies a normalised frequency by a layer decay 1 - i/L that is
    measured from the first layer for layers not yet run and 1.0 for layers already run, with an
    extra per-request matrix for encoder-decoder models; this is the decoder-only, cyclic
    reading of it, because in decode the layer after the last is the first.
    Cost: O(log n) per hook; a victim costs O(L log n) (the minimum of every layer's heap, each
    scaled by its layer's factor), since the factor of every layer changes with the current layer.
    """

    compiled = CompiledForm("moe-infinity", params=("decay",), kernel_params=lambda p: (p.decay,), restore=_restore)

    @dataclass(frozen=True)
    class Params:
        decay: float = field(default=1.0, metadata={"help": "multiply every activation count by this at each pass start"})

        def check(self) -> None:
            check_decay(self.decay, "policy moe-infinity")

    def __init__(self, params: "MoEInfinityPriority.Params", ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._layer_of = ctx.object_layer.tolist()
        self._n_layers = ctx.n_layers
        self._count: dict[int, float] = {}
        self._heaps = [LazyMinHeap() for _ in range(ctx.n_layers)]
        self._unit = DecayingUnit(params.decay)
        self._clock = 0
        self._current = 0

    def on_pass_begin(self, pass_index: int, now: float) -> None:
        if self._unit.advance():
            factor = 1.0 / self._unit.unit
            for obj in self._count:
                self._count[obj] *= factor
            for heap in self._heaps:
                heap.scale_keys(factor)
            self._unit.unit = 1.0

    def _touch(self, obj: int, demand: bool) -> None:
        count = self._count.get(obj, 0)
        if demand:
            count += self._unit.unit
            self._count[obj] = count
            self._current = self._layer_of[obj]
        self._clock += 1
        self._heaps[self._layer_of[obj]].push(obj, count, self._clock)

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._touch(obj, not prefetch)

    def on_access(self, obj: int, now: float) -> None:
        self._touch(obj, True)

    def admit(self, obj: int, prefetch: bool = False) -> bool:
        if not prefetch:
            self._current = self._layer_of[obj]
        return True

    def on_evict(self, obj: int) -> None:
        self._heaps[self._layer_of[obj]].remove(obj)

    def proximity(self, layer: int) -> float:
        """1 - d / L for an object of `layer`, d = layers run before it comes up again."""
        d = (layer - self._current - 1) % self._n_layers
        return 1.0 - d / self._n_layers

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        best: tuple[float, int, int] | None = None
        for layer, heap in enumerate(self._heaps):
            if not heap:
                continue
            entry = heap.first(eligible)
            if entry is None:
                continue
            key = (entry[0] * self.proximity(layer), entry[1], entry[2])
            if best is None or key < best:
                best = key
        return None if best is None else best[2]

    def tracked_objects(self) -> Iterable[int]:
        return [o for heap in self._heaps for o in heap.stamp]
