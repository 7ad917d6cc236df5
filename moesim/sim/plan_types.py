"""The planner's value types: its config, one cell's decisions (CellPlan) and a run's (Plan).

moesim/sim/plan.py decides them; moesim/sim/engine.py times a Plan; moesim/kernels/executor.py runs
CellPlans on a device. Copy ids, deps, cancels and victims are the copy ledger's
(moesim/sim/copy_ledger.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from moesim.policies.registry import PolicySpec, parse_spec
from moesim.sim.cache_core import CoreCounters
from moesim.sim.copy_ledger import PlannedCopy
from moesim.sim.requests import RequestStream
from moesim.sim.topology import Topology
from moesim.traces.format.trace import Trace

PLACED = -1
"""Outcome of a request whose object a placement policy keeps on the CPU (neither hit nor miss)."""
KINDS = ("eviction", "prefetch", "miss")


def parsed_specs(parsed: tuple[PolicySpec, ...] | None, texts: tuple[str, str, str]) -> tuple[PolicySpec, ...]:
    """Specs parsed once upstream (a RunSpec's), used while each still has the canonical label its
    text gives; else the texts parsed here (a config built or changed from strings)."""
    if parsed is not None and all(spec.label() == text for spec, text in zip(parsed, texts)):
        return parsed
    return tuple(parse_spec(text, kind) for text, kind in zip(texts, KINDS))


@dataclass(frozen=True)
class PlanConfig:
    """The decisions' inputs. Specs are strings such as "lru", "oracle:lookahead=2", "lowbit:bits=4"."""

    eviction: str = "lru"
    prefetch: str = "none"
    miss: str = "stall"
    capacity_bytes: int = 0
    scope: str = "global"
    layer_capacity: tuple[int, ...] | None = None
    seed: int = 0
    dram_eviction: str = "lru"
    cancel_unstarted: bool = False  # see the module docstring (`cancels`)
    placement: str = "gpu"  # moesim/policies/placement.py: objects kept on the CPU never enter the cache
    mode: str = "event"  # moesim/sim/requests.py; "sequential" only for a planner with no topology (counts)
    parsed: tuple[PolicySpec, PolicySpec, PolicySpec] | None = field(default=None, compare=False, repr=False)
    """eviction, prefetch and miss already parsed (see `parsed_specs`)"""

    def specs(self) -> tuple[PolicySpec, PolicySpec, PolicySpec]:
        return parsed_specs(self.parsed, (self.eviction, self.prefetch, self.miss))


@dataclass(frozen=True)
class CellPlan:
    """The decisions of one cell, for executors that run cell by cell."""

    cell: int
    pass_index: int
    layer: int
    objects: tuple[int, ...]
    outcomes: tuple[int, ...]
    gpu_tokens: tuple[int, ...]  # tokens each object processes on the device (0: CPU or dropped)
    cpu_tokens: tuple[int, ...]  # tokens each object processes on the host CPU
    copies: tuple[PlannedCopy, ...]
    waits: tuple[int, ...]  # copy ids the cell's compute must wait for
    altered: int  # expert applications altered by lossy miss handling


@dataclass
class Plan:
    """Every decision of a run, as flat arrays (copies in issue order; setup copies first)."""

    trace: Trace
    config: PlanConfig
    topology: Topology
    stream: RequestStream
    eviction: PolicySpec
    prefetch: PolicySpec
    miss: PolicySpec
    lossy: bool
    outcomes: np.ndarray  # int8 per request
    bypassed: np.ndarray  # bool per request
    gpu_tokens: np.ndarray  # int32 per request
    cpu_tokens: np.ndarray  # int32 per request
    req_tokens: np.ndarray  # int32 per request: tokens routed to the object in its cell
    altered: np.ndarray  # int64 per cell
    copy_obj: np.ndarray
    copy_bytes: np.ndarray
    copy_route: np.ndarray
    copy_prefetch: np.ndarray
    copy_resident: np.ndarray
    copy_cell: np.ndarray  # issuing cell (SETUP_CELL for pinned loads)
    dep_offsets: np.ndarray
    deps: np.ndarray
    cancel_offsets: np.ndarray
    cancels: np.ndarray
    victim_offsets: np.ndarray
    victims: np.ndarray
    cell_copy_offsets: np.ndarray  # copies issued at cell c: [cell_copy_offsets[c], cell_copy_offsets[c + 1])
    n_setup_copies: int
    wait_offsets: np.ndarray
    waits: np.ndarray
    counters: CoreCounters
    dram_counters: dict[str, int] = field(default_factory=dict)
    engine: str = "reference"  # which planner decided it ("fast": the compiled one); never saved

    @property
    def n_copies(self) -> int:
        return int(self.copy_obj.shape[0])
