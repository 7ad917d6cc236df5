"""Shared helpers for the simulator tests: hand-made hardware profiles and a reference Belady.

Profiles are built directly from the dataclasses (the YAML loader lives in another room), with
round numbers so expected times can be worked out by hand.
"""

from __future__ import annotations

import heapq
from typing import Callable

import pytest

from moesim.hw_profiles.profile import Compute, HardwareProfile, Link, Power, Tier
from moesim.policies import registry
from moesim.policies.base import NEVER, EvictionPolicy, PolicyContext

GB = 1e9


def make_profile(
    *,
    name: str = "test",
    host_bw: float = 1 * GB,
    host_latency: float = 0.0,
    host_engines: int = 1,
    host_link: str = "h2d",
    pageable_bw: float | None = None,
    host_memory: str = "pinned",
    peak_flops: float = 1e15,
    memory_bandwidth: float = 1e12,
    launch: float = 0.0,
    vram: float = 80 * GB,
    dram: float | None = None,
    ssd_bw: float | None = None,
    ssd_latency: float = 0.0,
    ssd_queue: int = 1,
    ssd_link: str = "ssd_h",
    cpu_flops: float | None = None,
    cpu_bw: float | None = None,
    idle_watts: float = 100.0,
    active_watts: float = 500.0,
    joules_per_byte: dict[str, float] | None = None,
    unified: bool = False,
) -> HardwareProfile:
    """A profile with one host link (unless `unified`), optional DRAM and SSD tiers."""
    tiers = {"vram": Tier("vram", vram)}
    links: dict[str, Link] = {}
    if not unified:
        links[host_link] = Link(host_link, host_bw, host_latency, host_engines, pageable_bw)
        links["d2h"] = Link("d2h", host_bw, host_latency, 1)
    if dram is not None:
        tiers["dram"] = Tier("dram", dram, bandwidth=100 * GB)
    if ssd_bw is not None:
        tiers["ssd"] = Tier("ssd", 4e12, read_bandwidth=ssd_bw, latency=ssd_latency, queue_depth=ssd_queue)
        links[ssd_link] = Link(ssd_link, ssd_bw, 0.0, 1)
    return HardwareProfile(
        name=name,
        description="hand-made test profile",
        compute=Compute(peak_flops=peak_flops, memory_bandwidth=memory_bandwidth, launch_overhead=launch,
                        cpu_flops=cpu_flops, cpu_memory_bandwidth=cpu_bw),
        tiers=tiers,
        links=links,
        power=Power(idle_watts=idle_watts, active_watts=active_watts, joules_per_byte=joules_per_byte or {}),
        host_memory=host_memory,
    )


@pytest.fixture
def profile_factory() -> Callable[..., HardwareProfile]:
    return make_profile


class ReferenceBelady(EvictionPolicy):
    """MIN: evict the object whose next request is farthest away (a test-only reference).

    Registered as "belady" only while the policies room's own Belady has not landed, so the
    bounds can be tested in this branch; once the real one is registered it is used instead.
    """

    offline = True

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        super().__init__(params, ctx)
        self._heap: list[tuple[int, int]] = []
        self._key: dict[int, int] = {}

    def _touch(self, obj: int) -> None:
        future = self.ctx.future
        nxt = future.next_use(obj, future.position) if future is not None else NEVER
        self._key[obj] = nxt
        heapq.heappush(self._heap, (-nxt, obj))

    def on_insert(self, obj: int, now: float, prefetch: bool) -> None:
        self._touch(obj)

    def on_access(self, obj: int, now: float) -> None:
        self._touch(obj)

    def on_evict(self, obj: int) -> None:
        del self._key[obj]

    def victim(self, eligible: Callable[[int], bool]) -> int | None:
        skipped = []
        found = None
        while self._heap:
            neg, obj = heapq.heappop(self._heap)
            if self._key.get(obj) != -neg:
                continue  # stale entry
            if eligible(obj):
                found = obj
                heapq.heappush(self._heap, (neg, obj))
                break
            skipped.append((neg, obj))
        for item in skipped:
            heapq.heappush(self._heap, item)
        return found


registry.available()  # load every registered policy first
if ("eviction", "belady") not in registry._REGISTRY:
    registry.register("belady")(ReferenceBelady)
