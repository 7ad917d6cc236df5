"""Every file a docstring or comment in moesim/ cites exists in this repository.

A citation is a path ending in .py, .md, .c, .h (or, starting with a top-level folder of the
repository, any data file). It resolves against the repository root, moesim/, or the citing file's
folder; a bare file name (`replay.c`) may sit anywhere in the repository. Paths outside the
repository (`../shared/...`, `/work/...`, `reference/*.md`) are refused: a reader of the package
cannot open them. Files of other projects are cited as such, listed in UPSTREAM with their project.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moesim"
TOP_FOLDERS = ("moesim/", "tests/", "docs/", "bench/", "scripts/", "results/", ".ci/")
CODE_EXTENSIONS = ("py", "md", "c", "h")
CITATION = re.compile(
    r"(?<![\w./-])((?:\.\./|~/|/)?[\w.-]+(?:/[\w.-]+)*\.(?:py|md|c|h|yaml|yml|json|txt|parquet|toml|csv))(?![\w/])")
# Files of other projects that docstrings name (cited with their project beside them).
UPSTREAM = {
    "expert_priority_score.py": "MoE-Infinity",
    "moe_infinity/memory/expert_tracer.py": "MoE-Infinity",
    "megatron/core/transformer/moe/router_trace.py": "Megatron-LM",
    "ggml-common.h": "llama.cpp (ggml)",
    "doc/en/DeepseekR1_V3_tutorial.md": "KTransformers",
    "docs/telemetry.md": "BigMoeOnEdge",
    "docs/moe-streaming.md": "BigMoeOnEdge",
    "docs/pressure.md": "BigMoeOnEdge",
}
OUTPUT_FOLDERS = ("out/",)  # where commands write (examples of outputs, not citations)


def _comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".c", ".h"):
        return [(text.count("\n", 0, m.start()) + 1, m.group(0))
                for m in re.finditer(r"/\*.*?\*/|//[^\n]*", text, re.S)]
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                found.append((node.body[0].lineno, doc))
    return found


def _exists(cite: str, citing: Path) -> bool:
    if "/" not in cite:
        return next(ROOT.glob(f"**/{cite}"), None) is not None
    return any((base / cite).exists() for base in (ROOT, PACKAGE, citing.parent))


def _is_checked(cite: str) -> bool:
    extension = cite.rsplit(".", 1)[1]
    if "/" in cite:
        return cite.startswith(TOP_FOLDERS) or extension in CODE_EXTENSIONS
    return extension in ("py", "c", "h")  # a bare data-file name is usually the user's own file


def broken_citations_in(path: Path, as_if: Path | None = None) -> list[str]:
    """The citations in `path` that name no file of the repository (relative ones resolved as if the
    file were `as_if`, default itself)."""
    as_if = as_if or path
    broken = []
    for line, text in _comments_and_docstrings(path):
        for match in CITATION.finditer(text):
            cite = match.group(1)
            if cite in UPSTREAM or cite.startswith(OUTPUT_FOLDERS):
                continue
            where = f"{as_if.relative_to(ROOT)}:{line}: {cite}"
            if cite.startswith(("../", "~/", "/", "reference/")):
                broken.append(f"{where} (outside the repository)")
            elif _is_checked(cite) and not _exists(cite, as_if):
                broken.append(f"{where} (no such file)")
    return broken


def test_every_path_cited_in_the_package_exists() -> None:
    sources = sorted([*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c"), *PACKAGE.rglob("*.h")])
    assert sources
    assert [b for path in sources for b in broken_citations_in(path)] == []


@pytest.mark.parametrize("text, broken", [
    ('"""See ../shared/DESIGN.md."""\n', "outside the repository"),
    ('"""As in reference/specmd.md section 2."""\n', "outside the repository"),
    ("# checked by tests/sim/no_such_test.py\n", "no such file"),
    ('def f():\n    """Compiled from no_such_kernel.c."""\n', "no such file"),
])
def test_the_check_finds_broken_citations(tmp_path: Path, text: str, broken: str) -> None:
    citing = PACKAGE / "sim" / "_probe_citation.py"  # resolved as if it sat in the package
    probe = tmp_path / "probe.py"
    probe.write_text(text)
    found = broken_citations_in(probe, citing)
    assert len(found) == 1 and broken in found[0]


def test_the_check_accepts_real_citations(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""Formulas in docs/metrics.md; the kernel is replay.c (moesim/sim/fast/build.py).\n\n'
                     'Writes out/report.md; MoE-Infinity\'s expert_priority_score.py."""\n')
    assert broken_citations_in(probe, PACKAGE / "sim" / "fast" / "_probe_citation.py") == []

