"""Small seeded traces for the sweep and report tests; a sweep spec names them as
`{factory: "toy_plugin:zipf_trace", args: {...}}`.

Importable as `toy_plugin` when tests/sweep is on sys.path (the tests put it there, and pass it
to subprocesses through PYTHONPATH). The test-only policies live in toy_policies.py.
"""

from __future__ import annotations

import numpy as np

from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.trace import Trace
from moesim.traces.format.build import build_trace


def zipf_trace(n_layers: int = 4, n_experts: int = 16, top_k: int = 2, passes: int = 40, prefill: int = 4,
               zipf: float = 1.1, seed: int = 0, object_bytes: int = 1000) -> Trace:
    """One request: a prefill pass of `prefill` tokens, then single-token decode passes."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_experts + 1) ** zipf
    weights /= weights.sum()
    perms = [rng.permutation(n_experts) for _ in range(n_layers)]
    pass_specs = []
    for p in range(passes):
        n_tok = prefill if p == 0 else 1
        cells = []
        for layer in range(n_layers):
            rows = [perms[layer][rng.choice(n_experts, size=top_k, replace=False, p=weights)].tolist()
                    for _ in range(n_tok)]
            cells.append((layer, rows))
        tokens = [(0, i) for i in range(n_tok)] if p == 0 else [(0, prefill + p - 1)]
        pass_specs.append({"phase": PREFILL if p == 0 else DECODE, "cells": cells, "tokens": tokens})
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=[object_bytes] * n_layers,
                     model="toy")
    trace = build_trace(meta, pass_specs)
    trace.validate("toy trace")
    return trace
