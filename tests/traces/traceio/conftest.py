"""Shared fixtures for the trace format and importer tests.

Real recordings live outside the repository, in ../shared/traces relative to the repository root
(MOESIM_SHARED_TRACES overrides it, e.g. for a worktree that sits deeper); tests that need them
skip with the reason when they are absent. The bundled traces inside the package are always there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.trace import Trace
from moesim.traces.format.build import build_trace

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_TRACES = Path(os.environ.get("MOESIM_SHARED_TRACES", REPO_ROOT.parent / "shared" / "traces"))


def shared_path(*parts: str) -> Path:
    path = SHARED_TRACES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real trace {path} is not here (set MOESIM_SHARED_TRACES to the shared traces folder)")
    return path


@pytest.fixture
def shared_dir() -> Path:
    for sub in ("bigmoeonedge", "stratamoe-switch-base-8"):
        shared_path(sub)
    return SHARED_TRACES


@pytest.fixture
def qwen_csv() -> Path:
    return shared_path("bigmoeonedge", "qwen.route.csv")


@pytest.fixture
def gemma_csv() -> Path:
    return shared_path("bigmoeonedge", "gemma.route.csv")


@pytest.fixture
def strata_dir() -> Path:
    return shared_path("stratamoe-switch-base-8")


@pytest.fixture
def flame_dir() -> Path:
    return shared_path("flame-moe-290m", "Encoder_Batch_0-32")


def make_rich_trace() -> Trace:
    """A small trace using every feature of the format: two requests, prefill and decode, weights,
    annotations of three types, two predictions, an empty cell, a pass token no access names, a
    pass with nothing in it, a short cell holding the pass's last token (canonical) and one holding
    its first (stored in access_token)."""
    meta = TraceMeta(n_layers=3, n_experts=5, top_k=2, object_bytes=[10, 20, 30], model="hand",
                     dense_bytes=[1, 2, 3], layer_ids=[1, 3, 5],
                     provenance={"format": "hand", "note": "all features"}, extra={"k": [1, 2]})
    passes = [
        {"phase": PREFILL, "tokens": [(0, 0), (0, 1), (0, 2)],
         "cells": [(0, [[1, 2], [2, 3], [0, 4]], [[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]]),
                   (1, [[4, 0], [1, 3], [2, 1]], [[0.1, 0.9], [0.3, 0.7], [0.6, 0.4]])]},
        {"phase": DECODE, "tokens": [(0, 3), (1, 7)],
         "cells": [(0, [[3, 1], [0, 2]], [[0.5, 0.5], [0.5, 0.5]]),
                   (2, [], []),
                   (1, [[2, 4]], [[0.9, 0.1]])]},
        {"phase": DECODE, "tokens": [], "cells": []},
        {"phase": DECODE, "tokens": [(1, 8), (0, 4)], "cells": [(2, [[0, 1]], [[0.5, 0.5]])]},
    ]
    trace = build_trace(meta, passes)
    # the layer-1 cell of pass 1 routes only token 1 (its last); pass 3 routes only token 0 (its first)
    trace.access_token = np.array([0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2,  # pass 0
                                   0, 0, 1, 1, 1, 1,  # pass 1: layer 0 tokens 0 and 1, layer 1 token 1
                                   0, 0], dtype=np.int16)  # pass 3: token 0 only
    n_a = trace.n_accesses
    trace.annotations = {
        "residency": (np.arange(n_a) % 3).astype(np.int8),
        "score": np.linspace(0, 1, n_a).astype(np.float32),
        "flag": (np.arange(n_a) % 2 == 0),
    }
    trace.predictions = {
        "lookahead_1": np.arange(trace.n_cells * 3, dtype=np.int16).reshape(trace.n_cells, 3) - 1,
        "prob": np.linspace(0, 1, trace.n_cells * 2).astype(np.float32).reshape(trace.n_cells, 2),
    }
    trace.validate()
    return trace


def check_traces_equal(a: Trace, b: Trace) -> None:
    """Array for array, dtype for dtype, metadata for metadata."""
    assert a.meta.to_dict() == b.meta.to_dict()
    for name in ("pass_phase", "pass_cell_offsets", "pass_token_offsets", "token_request", "token_position",
                 "cell_layer", "cell_offsets", "cell_tokens", "expert"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y), name
    for name in ("weight", "access_token"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    for table in ("annotations", "predictions"):
        x, y = getattr(a, table), getattr(b, table)
        assert sorted(x) == sorted(y), table
        for key in x:
            assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), (table, key)


@pytest.fixture
def rich_trace() -> Trace:
    return make_rich_trace()


@pytest.fixture(scope="session")
def traces_equal():
    """The equality check as a fixture (test modules cannot import conftest under importlib mode)."""
    return check_traces_equal
