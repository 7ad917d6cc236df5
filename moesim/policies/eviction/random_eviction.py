"""Random: evict a uniformly random eligible object (seeded, so runs repeat exactly)."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from moesim.policies.base import EvictionPolicy, PolicyContext
from moesim.policies.compiled import CompiledForm, KernelState
from moesim.policies.registry import register

_BLOCK = 4096  # uniforms drawn per call to the generator
_TRIES = 32  # rejection-sampling attempts before listing the eligible objects


def _generator_words(policy: "RandomEviction") -> tuple[int, int, int, int]:
    """The fresh generator's PCG64 state and increment as 64-bit words (high, low each): the
    kernel draws the same stream (policy_hooks.c's pcg64_next, numpy's random())."""
    state = policy._rng.bit_generator.state
    if state["bit_generator"] != "PCG64" or state["has_uint32"]:
        raise RuntimeError("the compiled Random needs a fresh PCG64 generator")
    s, inc = state["state"]["state"], state["state"]["inc"]
    mask = (1 << 64) - 1
    return s >> 64, s & mask, inc >> 64, inc & mask


def _restore(policy: "RandomEviction", state: KernelState) -> None:
    policy._items = list(state.objs)
    policy._index = {obj: i for i, obj in enumerate(state.objs)}
    draws = state.clock  # the kernel drew this many uniforms: leave the generator where blocks of
    if draws:            # _BLOCK would have left it, with the block's unused rest queued
        blocks = -(-draws // _BLOCK)
        policy._rng.bit_generator.advance((blocks - 1) * _BLOCK)
        block = policy._rng.random(_BLOCK).tolist()
        policy._uniforms = block[draws - (blocks - 1) * _BLOCK:][::-1]


@register("random")
class RandomEviction(EvictionPolicy):
    """Uniformly random among eligible residents, from numpy's Generator seeded with ctx.seed.

    Rejection sampling over the resident list (uniform over the eligible ones, O(1) expected when
    few are protected); after 32 rejections it lists the eligible objects and draws among them.
    Per-layer scope gives partition l the seed ctx.seed + l. Same seed, same victims.
    """

    compiled = CompiledForm("random", restore=_restore, rng=_generator_words)

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._rng = np.random.default_rng(ctx.seed)
        self._uniforms: list[float] = []
        self._items: list[int] = []
        self._index: dict[int, int] = {}

    def _uniform(self) -> float:
        if not self._uniforms:
            self._uniforms = self._rng.random(_BLOCK).tolist()
            self._uniforms.reverse()
        return self._uniforms.pop()

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._index[obj] = len(self._items)
        self._items.append(obj)

    def on_access(self, obj: int, now: float) -> None:
        pass

    def on_evict(self, obj: int) -> None:
        i = self._index.pop(obj)
        last = self._items.pop()
        if last != obj:
            self._items[i] = last
            self._index[last] = i

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        items = self._items
        if not items:
            return None
        for _ in range(_TRIES):
            obj = items[int(self._uniform() * len(items))]
            if eligible(obj):
                return obj
        candidates = [o for o in items if eligible(o)]
        if not candidates:
            return None
        return candidates[int(self._uniform() * len(candidates))]

    def tracked_objects(self) -> Iterable[int]:
        return self._items
