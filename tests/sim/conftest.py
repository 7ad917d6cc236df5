"""Hypothesis strategies and helpers shared by the replay tests."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.format.build import simple_trace


@st.composite
def moe_traces(draw, max_layers: int = 3, max_experts: int = 6, max_passes: int = 12, max_tokens: int = 3,
               single_token: bool = False):
    """Random small MoE traces with unit-size objects: a pass has 1..max_tokens tokens (prefill if
    more than one), every token routes to top_k distinct experts in every layer."""
    n_layers = draw(st.integers(1, max_layers))
    n_experts = draw(st.integers(2, max_experts))
    top_k = draw(st.integers(1, min(3, n_experts)))
    n_passes = draw(st.integers(1, max_passes))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    passes, phases = [], []
    for _ in range(n_passes):
        tokens = 1 if single_token else int(rng.integers(1, max_tokens + 1))
        passes.append([np.concatenate([rng.choice(n_experts, top_k, replace=False) for _ in range(tokens)]).tolist()
                       for _ in range(n_layers)])
        phases.append(PREFILL if tokens > 1 else DECODE)
    return simple_trace(passes, n_layers=n_layers, n_experts=n_experts, top_k=top_k, phases=phases)


@pytest.fixture(scope="session")
def traces():
    """The strategy factory (session-scoped, so hypothesis tests draw from it with st.data())."""
    return moe_traces


# ---- timing tests: a reference Belady if the policies room has none, and a profile factory ----
from typing import Callable  # noqa: E402

from moesim.hw_profiles.profile import HardwareProfile  # noqa: E402
from timing_helpers import make_profile, register_reference_belady  # noqa: E402

register_reference_belady()


@pytest.fixture
def profile_factory() -> Callable[..., HardwareProfile]:
    return make_profile
