"""A throw-away copy of the repository for mutation runs (the working tree is never edited).

The copy holds the files git would commit (tracked plus untracked, not ignored) and, beside it, a
`shared` link to the shared data folder the source tree sees (../shared or ../../shared), so tests
that read ../shared find it in the copy too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def repo_files(repo: Path = REPO) -> list[str]:
    """Paths git would commit: tracked and untracked-but-not-ignored (no .git, no build output)."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=repo, check=True,
                         capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and (repo / p).is_file()]


def shared_folder(repo: Path = REPO) -> Path | None:
    """The shared data folder the repository's tests look for, resolved (None when absent)."""
    for root in (os.environ.get("MOESIM_SHARED"), repo.parent / "shared", repo.parent.parent / "shared"):
        if root and Path(root).is_dir():
            return Path(root).resolve()
    return None


def make_copy(repo: Path = REPO, prefix: str = "moesim-mut-") -> Path:
    """Copy the repository into a fresh temporary folder; returns the copy's root (<tmp>/repo)."""
    top = Path(tempfile.mkdtemp(prefix=prefix))
    root = top / "repo"
    for rel in repo_files(repo):
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest)
    shared = shared_folder(repo)
    if shared is not None:
        (top / "shared").symlink_to(shared, target_is_directory=True)
    return root


def remove_copy(root: Path) -> None:
    shutil.rmtree(root.parent, ignore_errors=True)


def copy_env(root: Path) -> dict[str, str]:
    """Environment for running the copy's tests: its own package first, no stale bytecode."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # an edited file of the same size and second must not reuse a .pyc
    env.setdefault("TRITON_INTERPRET", "1")
    env.setdefault("CI", "true")  # derandomized hypothesis: a probe's verdict does not depend on luck
    return env
