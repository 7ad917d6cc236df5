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


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None:
        if not HAS_CUDA:
            pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is false)")
        if INTERPRETING:
            pytest.skip("TRITON_INTERPRET=1: run GPU tests without the interpreter")


@pytest.fixture
def device() -> "torch.device":
    """Where the small kernel tests run: the GPU when Triton can launch there, else the CPU interpreter."""
    return torch.device("cuda" if HAS_CUDA and not INTERPRETING else "cpu")
