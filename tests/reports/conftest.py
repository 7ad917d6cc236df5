"""Make tests/sweep's helpers importable here too (small traces, test-only policies), and register
the test-only policies only while this room's test modules run."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SWEEP_TESTS = Path(__file__).resolve().parents[1] / "sweep"
if str(SWEEP_TESTS) not in sys.path:
    sys.path.insert(0, str(SWEEP_TESTS))


@pytest.fixture(scope="module", autouse=True)
def toy_policies():
    module = importlib.import_module("toy_policies")
    module.register()
    yield module
    module.unregister()
