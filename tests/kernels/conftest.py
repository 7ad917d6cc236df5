"""Kernel tests: run Triton on the CPU interpreter where there is no GPU; skip `gpu` tests there.

TRITON_INTERPRET is read when `@triton.jit` decorates a kernel, so it is set here, before any test
module imports moesim.kernels.expert_kernel. On a GPU host leave it unset to run the kernels for real.
"""

from __future__ import annotations

import os

import pytest

try:
    import torch

    HAS_CUDA = bool(torch.cuda.is_available())
except ImportError:  # a core install: kernel tests that need torch skip themselves
    HAS_CUDA = False

if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
# `make test-gpu` sets this: there a gpu test that cannot run is a failure, not a skip
REQUIRE_GPU = os.environ.get("MOESIM_REQUIRE_GPU", "0") not in ("", "0")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        reason = None
        if not HAS_CUDA:
            reason = "needs a CUDA GPU (torch.cuda.is_available() is false)"
        elif INTERPRETING:
            reason = "TRITON_INTERPRET=1: run GPU tests without the interpreter"
        if reason:
            (pytest.fail if REQUIRE_GPU else pytest.skip)(f"{reason}{' (MOESIM_REQUIRE_GPU=1)' if REQUIRE_GPU else ''}")


@pytest.fixture
def device() -> "torch.device":
    """Where the small kernel tests run: the GPU when Triton can launch there, else the CPU interpreter."""
    return torch.device("cuda" if HAS_CUDA and not INTERPRETING else "cpu")
