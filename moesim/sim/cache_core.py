"""The cache core: residency, capacity, pins, in-flight and in-use state, and the miss taxonomy.

One core is shared by the count replay, the simpy engine and the real-GPU executor; each of them
supplies only a clock. One Python driver runs the protocol below over a trace for all of them: the
planner's cell step (moesim/sim/plan_decisions.py `serve_cell`; the count replay is the planner with
no topology). Eviction policies order candidates; the core decides eligibility:
an object that is pinned, in flight, or in use by the cell being served is never a victim.

Cell protocol (event-atomic replay: a layer's experts are needed together, docs/metrics.md):
    outcomes = core.begin_cell(objs, now)   # classify every object at the cell's start; mark in use
    for each missed obj: core.admit(obj, now)  -> reserves its bytes (evicting), state IN_FLIGHT
                         core.fill(obj, now)   -> the copy finished, state RESIDENT
    core.end_cell(objs, now)                # the last compute reading them ended: release
`serve_cell(objs)` does all four in one call, for code that drives a core by hand (tests).

Sequential replay (naive replayers) is the same protocol with one object per "cell": an object is
protected only while its own access is served, so the experts of one layer may evict each other,
and a hit is judged after the earlier accesses of the same cell were served.
Prefetch: core.prefetch(obj, now) admits a not-resident object as IN_FLIGHT if room can be made
without touching protected objects; the demand that later finds it counts as useful or late.

Partitions: scope "global" is one partition; scope "layer" gives every layer its own capacity and
its own policy instance (per-layer LRU is a partitioned LRU, not a different policy).
All per-object state lives in flat arrays indexed by integer object id (no per-access objects).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

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

SCOPES = ("global", "layer")



@dataclass(frozen=True)
class CoreConfig:
    capacity_bytes: int
    scope: str = "global"  # "global" | "layer"
    layer_capacity: Sequence[int] | None = None
    """Per-layer capacities in bytes (scope "layer"); default: capacity split evenly."""
    pinned: Sequence[int] = ()
    """Objects loaded before the first request and never evicted (besides a policy's own pins)."""


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


def partition_capacities(config: CoreConfig, n_layers: int) -> list[int]:
    """Capacity in bytes of every partition: one for scope global, one per layer for scope layer."""
    if config.scope == "global":
        return [int(config.capacity_bytes)]
    if config.scope != "layer":
        raise UserError(f"scope must be one of {', '.join(SCOPES)}, got {config.scope!r}", "scope")
    if config.layer_capacity is not None:
        if len(config.layer_capacity) != n_layers:
            raise UserError(f"layer capacity table has {len(config.layer_capacity)} entries for {n_layers} layers",
                            "capacity")
        return [int(c) for c in config.layer_capacity]
    return [int(config.capacity_bytes) // n_layers] * n_layers


class CacheCore:
    """Residency and capacity accounting over integer object ids.

    Complexity: begin_cell is O(objects in the cell); admit is O(victims walked) plus the policy's
    own cost per hook (O(1) for LRU/FIFO/Least-Stale/ARC/SLRU, O(log n) for the LFU and Belady
    heaps, O(layers log n) per victim for moe-infinity). serve_cell is the same work in one call.
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
        self.capacity = partition_capacities(config, ctx.n_layers)
        if config.scope == "global":
            self.partition_of = [0] * n
            self.policies = [policy_factory(dataclasses.replace(ctx, capacity_bytes=self.capacity[0]))]
        else:
            self.partition_of = [int(x) for x in ctx.object_layer]
            self.policies = [
                policy_factory(dataclasses.replace(ctx, seed=ctx.seed + layer, partition=layer,
                                                   capacity_bytes=self.capacity[layer]))
                for layer in range(ctx.n_layers)
            ]
        self.used = [0] * len(self.capacity)
        self._eligible = self._make_eligible()
        self.eviction_log: list[int] | None = None
        """When a list, every eviction is appended to it, including those of an admit() that then
        fails half-way (admit() returns None and so cannot report them). Callers clear it."""
        install_pins(self)

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

    def _make_eligible(self) -> Callable[[int], bool]:
        """The predicate handed to policy.victim(): resident and not in use by a cell.

        Pinned objects need no test here: they never enter a policy's order (check() asserts it).
        """
        state = self.state
        in_use = self.in_use

        def eligible(obj: int) -> bool:
            return state[obj] == RESIDENT and not in_use[obj]

        return eligible

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
            if s != RESIDENT or not self.pinned[obj]:  # pinned objects are loaded, never demanded in
                seen[obj] = 1
            if in_use[obj] < 255:
                in_use[obj] += 1
        return outcomes

    def admit(self, obj: int, now: float = 0.0, prefetch: bool = False) -> list[int] | None:
        """Reserve obj's bytes, evicting as needed; state becomes IN_FLIGHT.

        Returns the victims (possibly empty), or None when obj cannot be admitted (every other
        object is protected, obj is larger than the partition, or the policy refuses): the caller
        then streams it through a temporary buffer (a miss that leaves no residue). Victims evicted
        before the core found it could not make enough room stay evicted (the room stays free);
        that needs objects larger than the smallest resident one, or a protected set that fills
        the partition.
        """
        if self.state[obj] != ABSENT:
            return []
        part = self.partition_of[obj]
        policy = self.policies[part]
        size = self.object_bytes[obj]
        capacity = self.capacity[part]
        victims: list[int] = []
        if self.used[part] + size > capacity:
            if size > capacity or not policy.admit(obj, prefetch):
                if not prefetch:
                    self.counters.bypasses += 1
                return None
            while self.used[part] + size > capacity:
                victim = policy.victim(self._eligible)
                if victim is None:
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

    def serve_cell(self, objs: Sequence[int], now: float = 0.0,
                   victims_out: list[tuple[int, int]] | None = None) -> tuple[list[int], Sequence[int]]:
        """begin_cell, then admit and fill every miss, then end_cell: one cell with no clock.

        Returns the outcomes and the positions (in `objs`) of misses that could not be admitted.
        With `victims_out`, appends (position, victim) for every eviction. The replays do not call
        it: they drive the protocol through the planner (moesim/sim/plan_decisions.py).
        """
        outcomes = self.begin_cell(objs, now)
        bypassed: list[int] = []
        if victims_out is not None and self.eviction_log is None:
            self.eviction_log = []
        log = self.eviction_log
        for k, (obj, outcome) in enumerate(zip(objs, outcomes)):
            if outcome < MISS_COMPULSORY:
                continue
            if log is not None:
                log.clear()
            if self.admit(obj, now) is None:
                bypassed.append(k)
            else:
                self.fill(obj, now)
            if victims_out is not None:
                victims_out.extend((k, v) for v in log)
        self.end_cell(objs, now)
        return outcomes, bypassed

    def _evict(self, victim: int, part: int, policy: EvictionPolicy) -> None:
        self.state[victim] = ABSENT
        self.used[part] -= self.object_bytes[victim]
        self.evicted_in_pass[victim] = self.pass_index
        self.counters.evictions += 1
        if self.prefetched_unused[victim]:
            self.prefetched_unused[victim] = 0
            self.counters.prefetch_wasted += 1
        if self.eviction_log is not None:
            self.eviction_log.append(victim)
        policy.on_evict(victim)

    def finish(self) -> None:
        """End of the run: prefetches never used count as wasted."""
        for obj, flag in enumerate(self.prefetched_unused):
            if flag:
                self.counters.prefetch_wasted += 1
                self.prefetched_unused[obj] = 0

    # ---- invariants (tests call this after every step) ---------------------------------------
    def check(self) -> None:
        """Assert every invariant of the core and of its policies' bookkeeping (O(n); tests only)."""
        check_core(self)


def install_pins(core: CacheCore) -> None:
    """Load pinned objects first (the config's, then the policies'); they are never evicted.

    Configured pins that do not fit are the user's mistake; a policy's pins beyond the room left
    are skipped (a policy sizes them from ctx.capacity_bytes, so that only happens after
    configured pins took the room).
    """
    for obj in core.config.pinned:
        obj = int(obj)
        if not 0 <= obj < len(core.state):
            raise UserError(f"pinned object {obj} outside 0..{len(core.state) - 1}", "pinned")
        if not _pin(core, obj):
            part = core.partition_of[obj]
            raise UserError(f"pinned objects do not fit partition {part} ({core.capacity[part]} bytes)", "pinned")
    for policy in core.policies:
        for obj in policy.pinned_objects():
            _pin(core, int(obj))


def _pin(core: CacheCore, obj: int) -> bool:
    if core.state[obj] != ABSENT:
        return True
    part = core.partition_of[obj]
    size = core.object_bytes[obj]
    if core.used[part] + size > core.capacity[part]:
        return False
    core.state[obj] = RESIDENT
    core.pinned[obj] = 1
    core.used[part] += size
    return True


def check_core(core: CacheCore) -> None:
    """Assert every invariant of the core and of its policies' bookkeeping (O(n); tests only)."""
    used = [0] * len(core.capacity)
    present: list[set[int]] = [set() for _ in core.capacity]
    for obj, s in enumerate(core.state):
        assert s in (ABSENT, RESIDENT, IN_FLIGHT), (obj, s)
        if s != ABSENT:
            part = core.partition_of[obj]
            used[part] += core.object_bytes[obj]
            if not core.pinned[obj]:
                present[part].add(obj)
        else:
            assert not core.pinned[obj], f"pinned object {obj} is absent"
            assert not core.prefetched_unused[obj], f"absent object {obj} marked as an unused prefetch"
        if core.pinned[obj]:
            assert s == RESIDENT, f"pinned object {obj} not resident"
    assert used == core.used, (used, core.used)
    for part, cap in enumerate(core.capacity):
        assert core.used[part] <= cap, (part, core.used[part], cap)
    for part, policy in enumerate(core.policies):
        tracked = policy.tracked_objects()
        if tracked is not None:
            tracked_set = set(tracked)
            assert len(tracked_set) == len(list(policy.tracked_objects() or ())), f"{policy.name}: duplicates"
            assert tracked_set == present[part], (
                f"{policy.name} partition {part}: policy tracks {sorted(tracked_set ^ present[part])[:8]} "
                "differently from the core")
