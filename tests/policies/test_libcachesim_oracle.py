"""libCacheSim (0.3.5 Python bindings) as an independent oracle for LRU, FIFO, LFU and ARC.

Same integer ids, same slot capacity (every object 1 byte), requests one by one: moesim's
sequential replay. Bridged semantics (none needed beyond these):
- libCacheSim's LFU forgets an object's count when it is evicted and evicts, among equal counts,
  the object that entered its frequency bucket first; moesim's LFU at decay 1 does both, so the
  counts are identical (a tie-break on object id or insertion time would not be).
- libCacheSim ids start at 1 (0 is reserved), so ids are shifted by one.
- In sequential mode the only protected object is the one being requested, which is not resident
  when it misses, so the core's eligibility rule never changes a victim here.
"""

from __future__ import annotations

import numpy as np
import pytest

from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.build import simple_trace

libcachesim = pytest.importorskip("libcachesim")

ORACLES = {"lru": "LRU", "fifo": "FIFO", "lfu": "LFU", "arc": "ARC"}


def _oracle_hits(name: str, ids: list[int], slots: int) -> int:
    cache = getattr(libcachesim, ORACLES[name])(slots, hashpower=12)  # the default 2^24 buckets cost ~0.2 s each
    req = libcachesim.Request()
    req.obj_size = 1
    hits = 0
    for obj in ids:
        req.obj_id = obj + 1
        hits += bool(cache.get(req))
    return hits


def _zipf_trace(seed: int, n_layers: int, n_experts: int, top_k: int, n_passes: int, prefill_tokens: int = 0):
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_experts + 1) ** 1.2
    w /= w.sum()
    passes, phases = [], []
    if prefill_tokens:
        passes.append([np.concatenate([rng.choice(n_experts, top_k, replace=False, p=w)
                                       for _ in range(prefill_tokens)]).tolist() for _ in range(n_layers)])
        phases.append(PREFILL)
    for _ in range(n_passes):
        passes.append([rng.choice(n_experts, top_k, replace=False, p=w).tolist() for _ in range(n_layers)])
        phases.append(DECODE)
    return simple_trace(passes, n_layers=n_layers, n_experts=n_experts, top_k=top_k, phases=phases)


TRACES = {
    "one-layer": lambda: _zipf_trace(1, n_layers=1, n_experts=64, top_k=1, n_passes=3000),
    "moe-decode": lambda: _zipf_trace(2, n_layers=4, n_experts=16, top_k=2, n_passes=400),
    "moe-prefill": lambda: _zipf_trace(3, n_layers=3, n_experts=12, top_k=3, n_passes=200, prefill_tokens=20),
}


@pytest.mark.parametrize("trace_name", sorted(TRACES))
@pytest.mark.parametrize("policy", sorted(ORACLES))
def test_hit_counts_equal_libcachesim(policy, trace_name):
    trace = TRACES[trace_name]()
    ids = trace.object_ids().tolist()
    for slots in (1, 3, 8, 20, 40):
        result = count_replay(trace, ReplayConfig(policy=policy, capacity_bytes=slots, mode="sequential"))
        ours = int((result.outcomes == 0).sum())
        assert ours == _oracle_hits(policy, ids, slots), (policy, trace_name, slots)
