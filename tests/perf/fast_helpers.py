"""Shared by the compiled-path tests: small hypothesis traces and a comparable policy state."""

from __future__ import annotations

import tracemalloc

from collections import OrderedDict

import numpy as np
from hypothesis import strategies as st

from moesim.policies.compiled import compiled_form
from moesim.policies.eviction._counts import DecayingUnit, LazyMinHeap
from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.build import simple_trace


def random_pass_cells(rng: np.random.Generator, n_layers: int, n_experts: int, top_k: int, tokens: int,
                      skip: float = 0.05, empty: float = 0.08) -> list[list[int] | None]:
    """One pass's cells, `tokens` tokens each routed to top_k distinct experts per layer; a layer is
    left out (None) with probability `skip`, an empty cell with probability `empty` - `skip`."""
    cells: list[list[int] | None] = []
    for _layer in range(n_layers):
        roll = rng.random()
        if roll < skip:
            cells.append(None)  # the pass skips this layer
        elif roll < empty:
            cells.append([])  # a cell with no accesses
        else:
            cells.append(np.concatenate([rng.choice(n_experts, top_k, replace=False)
                                         for _ in range(tokens)]).tolist())
    return cells


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
        passes.append(random_pass_cells(rng, n_layers, n_experts, top_k, tokens, empty=0.08))
        phases.append(PREFILL if tokens > 1 else DECODE)
    return simple_trace(passes, n_layers=n_layers, n_experts=n_experts, object_bytes=sizes, top_k=top_k,
                        phases=phases)


def policy_state(policy):
    """Every field of a policy object in a comparable form (orders as lists, heaps as their live
    entries with key types, generators by state), less what its compiled form calls derived."""
    form = compiled_form(type(policy))
    skip = {"params", "ctx", *(form.derived if form is not None else ())}
    return {name: _comparable(value) for name, value in sorted(vars(policy).items()) if name not in skip}


def _comparable(value):
    if isinstance(value, LazyMinHeap):
        return ("heap", sorted((o, value.key[o], type(value.key[o]).__name__, s) for o, s in value.stamp.items()))
    if isinstance(value, DecayingUnit):
        return ("unit", value.unit, type(value.unit).__name__, value.decay)
    if isinstance(value, OrderedDict):
        return ("ordered", [(k, _comparable(v)) for k, v in value.items()])
    if isinstance(value, dict):
        return ("dict", sorted((k, _comparable(v)) for k, v in value.items()))
    if isinstance(value, np.random.Generator):
        return ("rng", value.bit_generator.state)
    if isinstance(value, np.ndarray):
        return ("array", value.tolist())
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    return ("object",)  # e.g. Belady's view of the future: each engine builds its own kind


def assert_same_core(fast_core, ref_core):
    """Two cores hold the same state: per-object bytes, evictions, used bytes, pass, policy state."""
    for name in ("state", "seen", "pinned", "prefetched_unused", "in_use"):
        assert bytes(getattr(fast_core, name)) == bytes(getattr(ref_core, name)), name
    assert fast_core.evicted_in_pass == ref_core.evicted_in_pass
    assert fast_core.used == ref_core.used
    assert fast_core.pass_index == ref_core.pass_index
    assert [policy_state(p) for p in fast_core.policies] == [policy_state(p) for p in ref_core.policies]
    fast_core.check()


def traced_peak(action) -> int:
    """Peak bytes numpy and Python allocate during `action` (tracemalloc; Arrow buffers are not traced)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
