"""Two test-only eviction policies, registered while a test of this room needs them.

Importing the module registers them (what a sweep's worker process does when a spec names
`imports: [toy_policies]`, or when a run uses them); in the test process a module-scoped fixture
(conftest.py) registers them for this room's test modules and removes them afterwards, so other
rooms' tests, which run every registered policy through their contracts, never see them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from moesim.policies.base import EvictionPolicy
from moesim.policies.registry import _REGISTRY, Registered

NAMES = ("toy-fifo", "toy-fail")


class ToyFIFO(EvictionPolicy):
    """First in, first out (a hit does not refresh): a second policy for the tests' comparisons."""

    def __init__(self, params: object, ctx) -> None:
        super().__init__(params, ctx)
        self._order: OrderedDict[int, None] = OrderedDict()

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._order[obj] = None

    def on_access(self, obj: int, now: float) -> None:
        pass

    def on_evict(self, obj: int) -> None:
        del self._order[obj]

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        return next((o for o in self._order if eligible(o)), None)


class ToyFail(ToyFIFO):
    """FIFO that raises as soon as it must evict: runs whose capacity holds everything succeed."""

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        raise RuntimeError("toy-fail was asked for a victim")


def register() -> None:
    for name, cls in zip(NAMES, (ToyFIFO, ToyFail)):
        cls.name = name
        _REGISTRY[("eviction", name)] = Registered(name=name, kind="eviction", cls=cls)


def unregister() -> None:
    for name in NAMES:
        _REGISTRY.pop(("eviction", name), None)


register()
