"""The planner's cache tiers: one CacheCore per tier that caches objects.

VRAM is always a cache tier; host DRAM is a second one when the profile's topology makes DRAM a
cache over SSD (`Topology.dram_cache_bytes`; a planner with no topology, the count replay, has
VRAM only). Each core records its evictions in its own log,
which the planner reads after each admission to name the copy's victims. `dram_stage` makes
objects present in DRAM and records the SSD -> DRAM copies in the copy ledger
(moesim/sim/copy_ledger.py).
"""

from __future__ import annotations

from moesim.errors import UserError
from moesim.policies.base import PolicyContext
from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim.cache_core import MISS_COMPULSORY, CacheCore, CoreConfig
from moesim.sim.copy_ledger import CopyLedger
from moesim.sim.topology import ROUTE_STAGE, Topology


class TierCaches:
    """The VRAM core and, where DRAM caches SSD, the DRAM core, with their eviction logs."""

    def __init__(self, topology: Topology | None, capacity: CoreConfig, eviction: PolicySpec,
                 eviction_ctx: PolicyContext, dram_eviction: str) -> None:
        self.vram = CacheCore(capacity, eviction.build, eviction_ctx)
        self.dram: CacheCore | None = None
        self.dram_spec: PolicySpec | None = None
        if topology is not None and topology.dram_cache_bytes is not None:
            dram_spec = parse_spec(dram_eviction, "eviction")
            if getattr(dram_spec.entry.cls, "offline", False):
                raise UserError("the DRAM tier's policy must be online (it has no future view)", "dram eviction")
            self.dram = CacheCore(CoreConfig(capacity_bytes=topology.dram_cache_bytes), dram_spec.build,
                                  _plain_context(eviction_ctx))
            self.dram_spec = dram_spec
        self.vram_log: list[int] = []
        self.vram.eviction_log = self.vram_log
        self.dram_log: list[int] = []
        if self.dram is not None:
            self.dram.eviction_log = self.dram_log
        self.dram_counts = {"requests": 0, "hits": 0, "misses": 0}

    def begin_pass(self, p: int) -> None:
        self.vram.begin_pass(p)
        if self.dram is not None:
            self.dram.begin_pass(p)

    def dram_counters(self) -> dict[str, int]:
        return dict(self.dram_counts, evictions=self.dram.counters.evictions) if self.dram else {}

    def dram_stage(self, objs: list[int], cell: int, prefetch: bool, ledger: CopyLedger,
                   object_bytes: list[int]) -> tuple[list[int], list[int]]:
        """Make `objs` present in DRAM (SSD -> DRAM copies for DRAM misses).

        Returns, per object, the copy a reader of its DRAM slot must wait for (-1: none), and the
        ids of the SSD -> DRAM copies issued.
        """
        dram = self.dram
        assert dram is not None
        counts = self.dram_counts
        outs = dram.begin_cell(objs)
        log = self.dram_log
        inbound, reader = ledger.dram_inbound, ledger.dram_reader
        chain = []
        issued = []
        for obj, out in zip(objs, outs):
            counts["requests"] += 1
            if out < MISS_COMPULSORY:
                counts["hits"] += 1
                chain.append(inbound[obj])
                continue
            counts["misses"] += 1
            log.clear()
            got = dram.admit(obj)
            victims = list(log)
            if ledger.dram_orphans:
                victims = ledger.dram_orphans + victims
                ledger.dram_orphans = []
            if got is None:
                ledger.dram_orphans.extend(victims)
                victims = []
            deps = []
            for v in victims:
                # write-after-read: the last copy reading v's slot; write-after-write: the copy filling it
                if reader[v] >= 0:
                    deps.append(reader[v])
                if inbound[v] >= 0:
                    deps.append(inbound[v])
                reader[v] = -1
                inbound[v] = -1
            k = ledger.append(obj, object_bytes[obj], ROUTE_STAGE, prefetch, got is not None, cell, deps, [], victims)
            if got is not None:
                dram.fill(obj)
                inbound[obj] = k
            chain.append(k)
            issued.append(k)
        dram.end_cell(objs)
        return chain, issued


def _plain_context(ctx: PolicyContext) -> PolicyContext:
    """The DRAM tier's policy context: same objects, no future, no trace."""
    return PolicyContext(n_objects=ctx.n_objects, n_layers=ctx.n_layers, n_experts=ctx.n_experts,
                         object_layer=ctx.object_layer, object_bytes=ctx.object_bytes, seed=ctx.seed)
