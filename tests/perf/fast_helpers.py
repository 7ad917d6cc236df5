"""Shared by the compiled-path tests: small hypothesis traces and a comparable policy state."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.build import simple_trace


@st.composite
def sized_traces(draw):
    """Small random traces: 1-3 layers with object sizes 1-3 bytes per layer, 1-3 tokens per pass
    (so cells repeat experts across tokens), and now and then a layer left out or an empty cell."""
    n_layers = draw(st.integers(1, 3))
    n_experts = draw(st.integers(2, 6))
    top_k = draw(st.integers(1, min(3, n_experts)))
    n_passes = draw(st.integers(1, 14))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n_layers, max_size=n_layers))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    passes, phases = [], []
    for _ in range(n_passes):
        tokens = int(rng.integers(1, 4))
        cells = []
        for _layer in range(n_layers):
            roll = rng.random()
            if roll < 0.05:
                cells.append(None)  # the pass skips this layer
            elif roll < 0.08:
                cells.append([])  # a cell with no accesses
            else:
                cells.append(np.concatenate([rng.choice(n_experts, top_k, replace=False)
                                             for _ in range(tokens)]).tolist())
        passes.append(cells)
        phases.append(PREFILL if tokens > 1 else DECODE)
    return simple_trace(passes, n_layers=n_layers, n_experts=n_experts, object_bytes=sizes, top_k=top_k,
                        phases=phases)


def policy_state(policy):
    """What a policy object holds, in a comparable form (orders as lists, heaps as sorted entries)."""
    if hasattr(policy, "_stale"):
        return ("queues", list(policy._stale), list(policy._current))
    if hasattr(policy, "_order"):
        return ("order", list(policy._order))
    heap = policy._heap
    entries = sorted((o, heap.key[o], type(heap.key[o]).__name__, s) for o, s in heap.stamp.items())
    unit = getattr(policy, "_unit", None)
    return ("heap", entries, policy._clock, None if unit is None else (unit.unit, type(unit.unit).__name__))


def assert_same_core(fast_core, ref_core):
    """Two cores hold the same state: per-object bytes, evictions, used bytes, pass, policy state."""
    for name in ("state", "seen", "pinned", "prefetched_unused", "in_use"):
        assert bytes(getattr(fast_core, name)) == bytes(getattr(ref_core, name)), name
    assert fast_core.evicted_in_pass == ref_core.evicted_in_pass
    assert fast_core.used == ref_core.used
    assert fast_core.pass_index == ref_core.pass_index
    assert [policy_state(p) for p in fast_core.policies] == [policy_state(p) for p in ref_core.policies]
    fast_core.check()
