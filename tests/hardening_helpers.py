"""Shared inputs and checks of the issue #16 regression tests (tests/test_hardening.py and
tests/test_hardening_limits.py): a small trace, a sweep spec, and `fails`, the one-line-error contract."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from moesim.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("h16") / "v.parquet"
    assert main(["traces", "synth", "--requests", "2", "--set", "n_layers=4", "--set", "n_experts=8",
                 "--set", "top_k=2", "--set", "prefill=fixed:4", "--set", "decode=fixed:8", "--set", "weights=true",
                 "--out", str(path)]) == 0
    return path


@pytest.fixture()
def trace(trace_file, tmp_path) -> Path:
    copy = tmp_path / "v.parquet"
    copy.write_bytes(trace_file.read_bytes())
    return copy


def fails(argv: list[str], capsys, *fragments: str) -> str:
    """Run argv; it must exit 1 with one error line holding every fragment."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("moesim: note:")]
    assert len(lines) == 1 and lines[0].startswith("moesim: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def with_metadata(src: Path, dst: Path, **changes) -> Path:
    """A copy of a moesim Parquet trace whose metadata fields are replaced (bypassing the writer)."""
    table = pq.read_table(src)
    meta = json.loads(table.schema.metadata[b"moesim"])
    target = meta["meta"] if "meta" in meta else meta
    target.update(changes)
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"moesim": json.dumps(meta).encode()}), dst)
    return dst


def small_spec(folder: Path, extra: str = "", trace: str = "v.parquet") -> Path:
    spec = folder / "spec.yaml"
    spec.write_text(f"traces: {{t: {trace}}}\neviction: [lru, fifo]\ncapacities: ['25%', '50%']\n{extra}")
    return spec
