"""The compiled count replay: which engine runs, and which policies it covers.

count_replay picks an engine per run:
- "fast": replay.c, compiled on first use (build.py), for the policies in `FAST_POLICIES`;
  it makes the same decisions as the reference path, request for request (tests/perf/test_fast_path.py).
- "reference": CacheCore.serve_cell and the policy objects, in Python; every policy.
- "auto" (default): fast where the policy is covered and a C compiler is available, else reference.
The choice comes from the `engine` argument (the CLI's `--engine`), else `$MOESIM_ENGINE`.
Asking for "fast" where it cannot run is a UserError naming the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from moesim.errors import UserError
from moesim.policies.registry import PolicySpec

ENGINES = ("auto", "fast", "reference")
ENV_VAR = "MOESIM_ENGINE"
FAST_POLICIES = ("lru", "fifo", "static-hot", "least-stale", "lfu", "belady")
"""Policy classes the kernel implements (aliases of them, e.g. belady-bypass, included)."""

_MAX_OBJECTS = 2**31 - 1  # the kernel's lists and heaps hold object ids as int32


@dataclass(frozen=True)
class KernelPolicy:
    """A policy spec as the kernel takes it: a code and its parameters."""

    code: int
    lfu_decay: float = 1.0
    belady_bypass: bool = False


def kernel_policy(spec: PolicySpec) -> KernelPolicy | None:
    """The kernel's form of `spec`, or None if the kernel does not implement that policy class.

    Classes are matched exactly, so a subclass that changes behaviour stays on the reference path.
    """
    from moesim.policies.eviction.belady import Belady
    from moesim.policies.eviction.fifo import FIFO
    from moesim.policies.eviction.least_stale import LeastStale
    from moesim.policies.eviction.lfu import LFU
    from moesim.policies.eviction.lru import LRU
    from moesim.policies.eviction.static_hot import StaticHot
    from moesim.sim.fast.kernel import POL_BELADY, POL_FIFO, POL_LEAST_STALE, POL_LFU, POL_LRU

    if spec.kind != "eviction":
        return None
    cls = spec.entry.cls
    if cls is LRU or cls is StaticHot:  # static-hot is LRU over the objects it did not pin
        return KernelPolicy(POL_LRU)
    if cls is FIFO:
        return KernelPolicy(POL_FIFO)
    if cls is LeastStale:
        return KernelPolicy(POL_LEAST_STALE)
    if cls is LFU:
        return KernelPolicy(POL_LFU, lfu_decay=float(spec.params.decay))
    if cls is Belady:
        return KernelPolicy(POL_BELADY, belady_bypass=bool(spec.params.bypass))
    return None


def requested_engine(engine: str | None = None) -> str:
    """The engine asked for: `engine` if given, else $MOESIM_ENGINE, else "auto"."""
    where = "--engine" if engine is not None else ENV_VAR
    value = (engine if engine is not None else os.environ.get(ENV_VAR, "")).strip().lower() or "auto"
    if value not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {value!r}", where)
    return value


def why_not_fast(spec: PolicySpec, n_objects: int) -> str | None:
    """Why this run cannot use the compiled replay (None if it can)."""
    if kernel_policy(spec) is None:
        return f"policy {spec.name} has no compiled replay (covered: {', '.join(FAST_POLICIES)})"
    if n_objects > _MAX_OBJECTS:
        return f"{n_objects} objects exceed the compiled replay's {_MAX_OBJECTS}"
    from moesim.sim.fast import build

    return build.unavailable_reason()


def choose_engine(spec: PolicySpec, n_objects: int, engine: str | None = None) -> str:
    """"fast" or "reference" for one run (see the module docstring)."""
    wanted = requested_engine(engine)
    if wanted == "reference":
        return "reference"
    reason = why_not_fast(spec, n_objects)
    if reason is None:
        return "fast"
    if wanted == "fast":
        raise UserError(f"the fast engine cannot run this: {reason}", "engine")
    return "reference"
