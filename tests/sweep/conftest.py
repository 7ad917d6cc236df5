"""Make tests/sweep's helpers importable (sweep specs name toy_plugin and toy_policies), and
register the test-only policies only while this room's test modules run."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="module", autouse=True)
def toy_policies():
    module = importlib.import_module("toy_policies")
    module.register()
    yield module
    module.unregister()


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for a `python -m moesim` child that finds this checkout and the helpers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
