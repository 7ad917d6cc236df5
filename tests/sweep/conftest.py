"""Make tests/sweep/toy_plugin.py importable as `toy_plugin` (sweep specs import it by name)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for a `python -m moesim` child that finds this checkout and toy_plugin."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
