"""Helpers for policy tests: a cache core for any registered policy, and small replays."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from moesim.policies.base import PolicyContext
from moesim.policies.registry import parse_spec
from moesim.sim.cache_core import CacheCore, CoreConfig
from moesim.sim.count_replay import CountResult, ReplayConfig, count_replay
from moesim.sim.future import StreamFuture
from moesim.traces.format.build import simple_trace


def _make_core(policy: str, n_objects: int, capacity: int, *, n_layers: int = 1, sizes: list[int] | None = None,
               scope: str = "global", pinned: tuple[int, ...] = (), stream: list[int] | None = None,
               seed: int = 0, profile: list[int] | None = None) -> CacheCore:
    """A core over objects 0..n_objects-1 (layer-major, n_objects // n_layers per layer).

    Offline policies get a future over `stream` (default: every object once, in id order), so the
    contract tests can build every registered policy the same way.
    """
    n_experts = n_objects // n_layers
    stream_arr = np.asarray(stream if stream is not None else list(range(n_objects)), dtype=np.int64)
    ctx = PolicyContext(
        n_objects=n_objects,
        n_layers=n_layers,
        n_experts=n_experts,
        object_layer=np.repeat(np.arange(n_layers, dtype=np.int32), n_experts),
        object_bytes=np.asarray(sizes if sizes is not None else [1] * n_objects, dtype=np.int64),
        seed=seed,
        future=StreamFuture(stream_arr, n_objects),
        profile_counts=None if profile is None else np.asarray(profile, dtype=np.int64),
    )
    return CacheCore(CoreConfig(capacity_bytes=capacity, scope=scope, pinned=pinned), parse_spec(policy).build, ctx)


@pytest.fixture
def make_core() -> Callable[..., CacheCore]:
    return _make_core


def _replay(cells_per_pass: list[list[list[int] | None]], policy: str, capacity: int, *, n_layers: int = 1,
            n_experts: int = 8, top_k: int | None = None, phases: list[int] | None = None, mode: str = "event",
            scope: str = "global", seed: int = 0) -> CountResult:
    """count_replay of a simple_trace; capacity in bytes with every object 1 byte (i.e. in slots)."""
    trace = simple_trace(cells_per_pass, n_layers=n_layers, n_experts=n_experts, top_k=top_k, phases=phases)
    return count_replay(trace, ReplayConfig(policy=policy, capacity_bytes=capacity, mode=mode, scope=scope,
                                            seed=seed), record_victims=True)


@pytest.fixture
def replay() -> Callable[..., CountResult]:
    return _replay
