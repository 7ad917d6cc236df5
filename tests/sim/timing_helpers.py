"""Helpers for the timing tests: hand-made hardware profiles, synthetic traces, the hand-timed
trace, and a reference Belady.

Profiles are built directly from the dataclasses (the YAML loader lives in another room), with
round numbers so expected times can be worked out by hand.
"""

from __future__ import annotations

import heapq
from typing import Callable

import numpy as np

from moesim.hw_profiles.profile import Compute, HardwareProfile, Link, Power, Tier
from moesim.policies import registry
from moesim.policies.base import NEVER, EvictionPolicy, PolicyContext
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta, expert_dtype
from moesim.traces.format.trace import Trace
from moesim.traces.format.build import simple_trace

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


def random_trace(
    seed: int,
    n_layers: int = 3,
    n_experts: int = 6,
    top_k: int = 2,
    requests: int = 2,
    prompt: int = 3,
    decode: int = 4,
    object_bytes: int | list[int] = 1_000_000,
    skew: float = 0.5,
) -> Trace:
    """Requests served one after another: a prefill pass of `prompt` tokens, then `decode` passes.

    Routing is drawn per layer from a Dirichlet(skew) popularity, so some experts are hot.
    """
    rng = np.random.default_rng(seed)
    pop = rng.dirichlet(np.full(n_experts, skew), size=n_layers)
    pop = (pop + 1e-3) / (pop + 1e-3).sum(axis=1, keepdims=True)
    phase, pass_cells, pass_tokens, tok_req, tok_pos = [], [0], [0], [], []
    cell_layer, cell_off, cell_tok, experts = [], [0], [], []
    for r in range(requests):
        for step in range(1 + decode):
            n_tok = prompt if step == 0 else 1
            phase.append(PREFILL if step == 0 else DECODE)
            positions = range(prompt) if step == 0 else [prompt + step - 1]
            tok_req.extend([r] * n_tok)
            tok_pos.extend(positions)
            pass_tokens.append(len(tok_req))
            for layer in range(n_layers):
                for _ in range(n_tok):
                    experts.extend(rng.choice(n_experts, size=top_k, replace=False, p=pop[layer]).tolist())
                cell_layer.append(layer)
                cell_tok.append(n_tok)
                cell_off.append(len(experts))
            pass_cells.append(len(cell_layer))
    sizes = [object_bytes] * n_layers if isinstance(object_bytes, int) else list(object_bytes)
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=sizes,
                     dense_bytes=[2_000_000] * n_layers)
    trace = Trace(
        meta=meta,
        pass_phase=np.asarray(phase, dtype=np.int8),
        pass_cell_offsets=np.asarray(pass_cells, dtype=np.int64),
        pass_token_offsets=np.asarray(pass_tokens, dtype=np.int64),
        token_request=np.asarray(tok_req, dtype=np.int32),
        token_position=np.asarray(tok_pos, dtype=np.int32),
        cell_layer=np.asarray(cell_layer, dtype=np.int16),
        cell_offsets=np.asarray(cell_off, dtype=np.int64),
        cell_tokens=np.asarray(cell_tok, dtype=np.int32),
        expert=np.asarray(experts, dtype=expert_dtype(n_experts)),
    )
    trace.validate()
    return trace


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


def register_reference_belady() -> None:
    """Register ReferenceBelady as "belady" unless a real one is registered."""
    registry.available()  # load every registered policy first
    if ("eviction", "belady") not in registry._REGISTRY:
        registry.register("belady")(ReferenceBelady)


US = 1e-6
MB = 1_000_000


def hand_trace() -> Trace:
    """2 layers x 4 experts, one token per cell routed to 2 experts, 1 MB objects, 2 MB dense per layer.

    pass 0 (prefill): layer 0 -> experts {0, 1}, layer 1 -> {0, 1}
    pass 1 (decode):  layer 0 -> {0, 2},      layer 1 -> {1, 3}
    object id = layer * 4 + expert, so the cells need [0, 1], [4, 5], [0, 2], [5, 7].
    """
    trace = simple_trace([[[0, 1], [0, 1]], [[0, 2], [1, 3]]], n_layers=2, n_experts=4, object_bytes=MB, top_k=2,
                         phases=[PREFILL, DECODE])
    trace.meta.dense_bytes = [2 * MB, 2 * MB]
    trace.meta.model = None
    return trace


def hand_profile(**kw: object) -> HardwareProfile:
    """h2d 1 GB/s + 10 us (a 1 MB copy takes 1010 us), HBM 1 TB/s, 1 PFLOP/s, 5 us per launch."""
    base: dict[str, object] = dict(host_bw=1e9, host_latency=10 * US, memory_bandwidth=1e12, peak_flops=1e15,
                                   launch=5 * US, joules_per_byte={"h2d": 1e-9}, active_watts=500.0, idle_watts=100.0)
    base.update(kw)
    return make_profile(**base)  # type: ignore[arg-type]
