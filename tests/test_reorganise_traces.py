"""scripts/dev/reorganise_traces.py: the tree uses only the new module paths, and the rewriter moves an
old import, dotted name or file citation to where the code now lives, the same on a second run."""

# reorganise_traces: leave this file alone (its probe holds the old paths on purpose)
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "scripts" / "dev" / "reorganise_traces.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("reorganise_traces", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_has_nothing_left_to_move_or_rewrite():
    """A merge that brings back an old traces import fails here until the tool is run again."""
    proc = subprocess.run([sys.executable, str(TOOL), "--check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not in MODULE_MOVES" not in proc.stderr


def test_every_new_module_exists_and_no_old_one_does(tool):
    moves = tool.module_moves()
    for old, new in moves.items():
        assert (ROOT / tool.module_path(new)).is_file(), new
        assert not (ROOT / tool.module_path(old)).exists(), old
    for table in tool.SYMBOL_MOVES.values():
        for new in table.values():
            assert (ROOT / tool.module_path(new)).is_file(), new


OLD = '''from moesim.traces.recorder import (  # noqa: E402
    RecordConfig,
    load_model,
)
from moesim.traces.trace import Trace, simple_trace, DECODE
from moesim.traces import stats, io
from moesim.traces.importers import importer
from moesim.traces.stats import unique_sorted, compute_stats
x = "moesim.traces.stats.compute_stats"
y = ("moesim.traces.trace.build_trace", "python -m moesim.traces.bundled")
# see moesim/traces/stats.py, traces/trace.py and tests/traces/test_stats.py
'''
NEW = '''from moesim.traces.record.recorder import RecordConfig  # noqa: E402
from moesim.traces.record.hf_model import load_model  # noqa: E402
from moesim.traces.format.trace import Trace
from moesim.traces.format.build import simple_trace
from moesim.traces.format.trace_meta import DECODE
from moesim.traces.stats import summary as stats
from moesim.traces.format import io
from moesim.traces.importers import importer
from moesim.traces.stats.arrays import unique_sorted
from moesim.traces.stats.summary import compute_stats
x = "moesim.traces.stats.summary.compute_stats"
y = ("moesim.traces.format.build.build_trace", "python -m moesim.traces.format.bundled")
# see moesim/traces/stats/summary.py, traces/format/trace.py and tests/traces/test_stats.py
'''


def test_old_references_move_to_where_the_code_lives_and_a_second_run_changes_nothing(tool):
    rewriter = tool.Rewriter(tool.module_moves())
    once = rewriter.rewrite(OLD, "probe.py")
    assert once == NEW
    assert rewriter.rewrite(once, "probe.py") == once
    assert any("imports split module moesim.traces.stats whole" in w for w in rewriter.warnings)
