"""The cache core: residency, capacity, pins, in-flight and in-use state, and the miss taxonomy.

One core is shared by the count replay, the simpy engine and the real-GPU executor; each of them
supplies only a clock. Eviction policies order candidates; the core decides eligibility:
an object that is pinned, in flight, or in use by the cell being served is never a victim.

Cell protocol (event-atomic replay, ../shared/DESIGN.md):
    outcomes = core.begin_cell(objs, now)   # classify every object at the cell's start; mark in use
    for each missed obj: core.admit(obj, now)  -> reserves its bytes (evicting), state IN_FLIGHT
                         core.fill(obj, now)   -> the copy finished, state RESIDENT
    core.end_cell(objs, now)                # the last compute reading them ended: release

Sequential replay (naive replayers) is the same protocol with one object per "cell".
Prefetch: core.prefetch(obj, now) admits a not-resident object as IN_FLIGHT if room can be made
without touching protected objects; the demand that later finds it counts as useful or late.

Partitions: scope "global" is one partition; scope "layer" gives every layer its own capacity and
its own policy instance (per-layer LRU is a partitioned LRU, not a different policy).
All per-object state lives in flat arrays indexed by integer object id (no per-access objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import EvictionPolicy, PolicyContext

# object states
ABSENT = 0
RESIDENT = 1
IN_FLIGHT = 2

# outcome codes of one request (a cell-distinct object in event mode, an access in sequential mode)
HIT = 0
LATE = 1  # the object was being prefetched when demanded: no new copy, a partial stall
MISS_COMPULSORY = 2
MISS_CAPACITY = 3
MISS_COLLISION = 4
OUTCOME_NAMES = ("hit", "late_prefetch", "compulsory", "capacity", "collision")


@dataclass(frozen=True)
class CoreConfig:
    capacity_bytes: int
    scope: str = "global"  # "global" | "layer"
    layer_capacity: Sequence[int] | None = None
    """Per-layer capacities in bytes (scope "layer"); default: capacity split evenly."""


@dataclass
class CoreCounters:
    """Totals the core keeps itself (per-request outcomes are written by the driver)."""

    evictions: int = 0
    bypasses: int = 0  # misses that could not be admitted (no room, or the policy refused)
    prefetch_issued: int = 0
    prefetch_useful: int = 0
    prefetch_late: int = 0
    prefetch_wasted: int = 0
    prefetch_bytes: int = 0


class CacheCore:
    """Residency and capacity accounting over integer object ids.

    Complexity: begin_cell is O(objects in the cell); admit is O(victims walked) plus the policy's
    own cost per hook (O(1) for LRU/FIFO/Least-Stale, O(log n) for LFU/Belady heaps).
    """

    def __init__(
        self,
        config: CoreConfig,
        policy_factory: Callable[[PolicyContext], EvictionPolicy],
        ctx: PolicyContext,
    ) -> None:
        self.config = config
        self.ctx = ctx
        n = ctx.n_objects
        self.object_bytes = [int(b) for b in ctx.object_bytes]
        self.state = bytearray(n)
        self.in_use = bytearray(n)  # counts cells (or computes) reading the object; capped at 255
        self.pinned = bytearray(n)
        self.seen = bytearray(n)
        self.prefetched_unused = bytearray(n)
        self.evicted_in_pass = [-1] * n
        self.pass_index = -1
        self.counters = CoreCounters()
        if config.scope == "global":
            self.partition_of = [0] * n
            self.capacity = [int(config.capacity_bytes)]
            self.policies = [policy_factory(ctx)]
        elif config.scope == "layer":
            layers = ctx.n_layers
            self.partition_of = [int(x) for x in ctx.object_layer]
            if config.layer_capacity is not None:
                if len(config.layer_capacity) != layers:
                    raise UserError(f"layer capacity table has {len(config.layer_capacity)} entries for {layers} layers",
                                    "capacity")
                self.capacity = [int(c) for c in config.layer_capacity]
            else:
                self.capacity = [int(config.capacity_bytes) // layers] * layers
            self.policies = [
                policy_factory(
                    PolicyContext(
                        n_objects=ctx.n_objects,
                        n_layers=ctx.n_layers,
                        n_experts=ctx.n_experts,
                        object_layer=ctx.object_layer,
                        object_bytes=ctx.object_bytes,
                        seed=ctx.seed + layer,
                        future=ctx.future,
                        partition=layer,
                        profile_counts=ctx.profile_counts,
                    )
                )
                for layer in range(layers)
            ]
        else:
            raise UserError(f"scope must be 'global' or 'layer', got {config.scope!r}", "scope")
        self.used = [0] * len(self.capacity)
        self._eligible = self._is_eligible
        self._install_pins()

    # ---- set-up ------------------------------------------------------------------------------
    def _install_pins(self) -> None:
        """Load the policies' pinned objects first; they occupy capacity and are never evicted."""
        for policy in self.policies:
            for obj in policy.pinned_objects():
                part = self.partition_of[obj]
                size = self.object_bytes[obj]
                if self.state[obj] != ABSENT or self.used[part] + size > self.capacity[part]:
                    continue
                self.state[obj] = RESIDENT
                self.pinned[obj] = 1
                self.used[part] += size

    # ---- queries -----------------------------------------------------------------------------
    def is_resident(self, obj: int) -> bool:
        return self.state[obj] == RESIDENT

    def is_present(self, obj: int) -> bool:
        """Resident or in flight."""
        return self.state[obj] != ABSENT

    def resident_objects(self) -> list[int]:
        return [i for i, s in enumerate(self.state) if s == RESIDENT]

    def used_bytes(self) -> int:
        return sum(self.used)

    def _is_eligible(self, obj: int) -> bool:
        return self.state[obj] == RESIDENT and not self.in_use[obj] and not self.pinned[obj]

    # ---- the protocol ------------------------------------------------------------------------
    def begin_pass(self, pass_index: int, now: float = 0.0) -> None:
        self.pass_index = pass_index
        for policy in self.policies:
            policy.on_pass_begin(pass_index, now)

    def classify(self, obj: int) -> int:
        """Outcome of a demand request for obj now, without changing any state."""
        state = self.state[obj]
        if state == RESIDENT:
            return HIT
        if state == IN_FLIGHT:
            return LATE
        if not self.seen[obj]:
            return MISS_COMPULSORY
        if self.evicted_in_pass[obj] == self.pass_index:
            return MISS_COLLISION
        return MISS_CAPACITY

    def begin_cell(self, objs: Sequence[int], now: float = 0.0) -> list[int]:
        """Classify the cell's distinct objects at its start, touch the hits, protect all of them."""
        outcomes = []
        state = self.state
        in_use = self.in_use
        seen = self.seen
        partition_of = self.partition_of
        policies = self.policies
        for obj in objs:
            s = state[obj]
            if s == RESIDENT:
                outcomes.append(HIT)
                if self.prefetched_unused[obj]:
                    self.prefetched_unused[obj] = 0
                    self.counters.prefetch_useful += 1
                if not self.pinned[obj]:
                    policies[partition_of[obj]].on_access(obj, now)
            elif s == IN_FLIGHT:
                outcomes.append(LATE)
                if self.prefetched_unused[obj]:
                    self.prefetched_unused[obj] = 0
                    self.counters.prefetch_late += 1
                policies[partition_of[obj]].on_access(obj, now)
            elif not seen[obj]:
                outcomes.append(MISS_COMPULSORY)
            elif self.evicted_in_pass[obj] == self.pass_index:
                outcomes.append(MISS_COLLISION)
            else:
                outcomes.append(MISS_CAPACITY)
            seen[obj] = 1
            if in_use[obj] < 255:
                in_use[obj] += 1
        return outcomes

    def admit(self, obj: int, now: float = 0.0, prefetch: bool = False) -> list[int] | None:
        """Reserve obj's bytes, evicting as needed; state becomes IN_FLIGHT.

        Returns the victims (possibly empty), or None when obj cannot be admitted (every other
        object is protected, obj is larger than the partition, or the policy refuses): the caller
        then streams it through a temporary buffer (a miss that leaves no residue).
        """
        if self.state[obj] != ABSENT:
            return []
        part = self.partition_of[obj]
        policy = self.policies[part]
        size = self.object_bytes[obj]
        capacity = self.capacity[part]
        if size > capacity or not policy.admit(obj):
            if not prefetch:
                self.counters.bypasses += 1
            return None
        victims: list[int] = []
        while self.used[part] + size > capacity:
            victim = policy.victim(self._eligible)
            if victim is None:
                # Roll back nothing: victims already evicted stay evicted (the room is still useful).
                if not prefetch:
                    self.counters.bypasses += 1
                return None
            self._evict(victim, part, policy)
            victims.append(victim)
        self.used[part] += size
        self.state[obj] = IN_FLIGHT
        policy.on_insert(obj, now, prefetch)
        if prefetch:
            self.prefetched_unused[obj] = 1
            self.counters.prefetch_issued += 1
            self.counters.prefetch_bytes += size
        return victims

    def can_admit_without_eviction(self, obj: int) -> bool:
        part = self.partition_of[obj]
        return self.used[part] + self.object_bytes[obj] <= self.capacity[part]

    def prefetch(self, obj: int, now: float = 0.0) -> list[int] | None:
        """Admit obj as a prefetch (IN_FLIGHT); None if absent room or already present."""
        if self.state[obj] != ABSENT:
            return None
        return self.admit(obj, now, prefetch=True)

    def fill(self, obj: int, now: float = 0.0) -> None:
        """The copy of obj finished."""
        if self.state[obj] == IN_FLIGHT:
            self.state[obj] = RESIDENT

    def end_cell(self, objs: Sequence[int], now: float = 0.0) -> None:
        """The last compute reading these objects ended: they may be evicted again."""
        in_use = self.in_use
        for obj in objs:
            if in_use[obj]:
                in_use[obj] -= 1

    def _evict(self, victim: int, part: int, policy: EvictionPolicy) -> None:
        self.state[victim] = ABSENT
        self.used[part] -= self.object_bytes[victim]
        self.evicted_in_pass[victim] = self.pass_index
        self.counters.evictions += 1
        if self.prefetched_unused[victim]:
            self.prefetched_unused[victim] = 0
            self.counters.prefetch_wasted += 1
        policy.on_evict(victim)

    def finish(self) -> None:
        """End of the run: prefetches never used count as wasted."""
        for obj, flag in enumerate(self.prefetched_unused):
            if flag:
                self.counters.prefetch_wasted += 1
                self.prefetched_unused[obj] = 0

    # ---- invariants (tests call this after every step) ---------------------------------------
    def check(self) -> None:
        used = [0] * len(self.capacity)
        for obj, s in enumerate(self.state):
            if s != ABSENT:
                used[self.partition_of[obj]] += self.object_bytes[obj]
        assert used == self.used, (used, self.used)
        for part, cap in enumerate(self.capacity):
            assert self.used[part] <= cap, (part, self.used[part], cap)
