"""Small workloads and machines for the advise tests (seconds per search, not minutes)."""

from __future__ import annotations

import numpy as np

from moesim.advise.space import Machine
from moesim.advise.workload import Workload
from moesim.hw_profiles.loader import load_profile
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.build import build_trace

MiB = 2**20


def zipf_trace(n_layers: int = 3, n_experts: int = 8, top_k: int = 2, passes: int = 10, prefill: int = 3,
               zipf: float = 1.0, seed: int = 0, object_bytes: int = 8 * MiB):
    """One request: a prefill pass, then single-token decode passes; Zipf-popular experts."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_experts + 1) ** zipf
    weights /= weights.sum()
    perms = [rng.permutation(n_experts) for _ in range(n_layers)]
    specs = []
    for p in range(passes):
        n_tok = prefill if p == 0 else 1
        cells = [(layer, [perms[layer][rng.choice(n_experts, size=top_k, replace=False, p=weights)].tolist()
                          for _ in range(n_tok)]) for layer in range(n_layers)]
        tokens = [(0, i) for i in range(n_tok)] if p == 0 else [(0, prefill + p - 1)]
        specs.append({"phase": PREFILL if p == 0 else DECODE, "cells": cells, "tokens": tokens})
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=[object_bytes] * n_layers,
                     model=None, dense_bytes=[4 * MiB] * n_layers)  # no catalog look-up per run
    trace = build_trace(meta, specs)
    trace.validate("toy trace")
    return trace


def workload(trace, dense_bytes: int = 64 * MiB, kv_bytes: int = 0) -> Workload:
    return Workload(model="toy", spec=None, trace=trace, trace_label="toy", synthetic=False, prompt=3,
                    decode=trace.n_passes - 1, batch=1, dense_bytes=dense_bytes, kv_bytes=kv_bytes)


def machine(profile: str, cache_share: float, trace, dense_bytes: int = 64 * MiB, dram_free: int | None = None,
            overrides: tuple[str, ...] = ()) -> Machine:
    """A machine whose free VRAM leaves `cache_share` of the trace's expert bytes for the cache."""
    vram_free = dense_bytes + int(cache_share * trace.total_object_bytes())
    return Machine(profile, load_profile(profile, overrides), vram_free, dram_free)
