"""The compiled kernels built at install time: a wheel carries them, the package loads them without a
compiler, an edited source is never run against a stale library, and a missing library is said once."""

from __future__ import annotations

import ctypes
import importlib.machinery
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from moesim.sim.fast import build

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
needs_compiler = pytest.mark.skipif(build.compiler() is None, reason="no C compiler on this machine")


@pytest.fixture
def copied_sources(tmp_path, monkeypatch):
    """The kernel sources copied to a folder of their own, with build.py pointed at them."""
    folder = tmp_path / "fast"
    folder.mkdir()
    for path in (*build.INCLUDED, build.SOURCE):
        shutil.copy(path, folder / path.name)
    monkeypatch.setattr(build, "SOURCE", folder / build.SOURCE.name)
    monkeypatch.setattr(build, "INCLUDED", tuple(folder / p.name for p in build.INCLUDED))
    build._load.cache_clear()
    yield folder
    monkeypatch.undo()
    build._load.cache_clear()


@needs_compiler
def test_an_installed_library_is_used_only_while_it_matches_its_sources(copied_sources, monkeypatch, tmp_path):
    target = copied_sources / f"{build.INSTALLED_NAME}{SUFFIX}"
    assert build.build_installed(target) is None
    assert build.installed_library() == target
    digest = ctypes.CDLL(str(target)).moesim_sources_digest
    digest.restype = ctypes.c_char_p
    assert digest().decode() == build.sources_digest()
    # loaded from the package with no compiler and an empty cache: nothing is built on first use
    monkeypatch.setattr(build, "compiler", lambda: None)
    monkeypatch.setenv("MOESIM_CACHE_DIR", str(tmp_path / "cache"))
    assert build.library() is not None and build.unavailable_reason() is None
    assert not (tmp_path / "cache").exists()
    # an edited source makes the installed library stale: without a compiler, the reference path
    with (copied_sources / "replay.c").open("a") as f:
        f.write("\n/* edited */\n")
    build._load.cache_clear()
    assert build.installed_library() is None
    assert build.library() is None
    assert build.unavailable_reason() == "no C compiler found (set CC)"


def test_a_library_without_a_digest_is_not_taken_for_an_installed_one(copied_sources):
    (copied_sources / f"{build.INSTALLED_NAME}{SUFFIX}").write_bytes(b"not a shared object")
    assert build.installed_library() is None


def test_no_library_and_no_compiler_is_said_once(monkeypatch, capsys):
    build._load.cache_clear()
    monkeypatch.setattr(build, "installed_library", lambda: None)
    monkeypatch.setattr(build, "compiler", lambda: None)
    monkeypatch.setattr(build, "_told", False)
    try:
        assert build.unavailable_reason() == "no C compiler found (set CC)"
        assert build.unavailable_reason() == "no C compiler found (set CC)"
    finally:
        build._load.cache_clear()
    err = capsys.readouterr().err.splitlines()
    assert err == ["moesim: compiled kernels unavailable (no C compiler found (set CC)); "
                   "using the slower reference path"]


@pytest.mark.slow
@needs_compiler
def test_a_wheel_carries_the_kernels_and_they_load(tmp_path):
    tree = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tree / rel)
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(tree), "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [wheel] = wheels.glob("moesim-*.whl")
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(unpacked)
    assert f"moesim/sim/fast/{build.INSTALLED_NAME}{SUFFIX}" in names
    probe = ("import moesim.sim.fast.build as b; assert b.__file__.startswith(sys.argv[1]); "
             "print(b.installed_library() is not None, b.library() is not None, b.unavailable_reason())")
    env = {"PYTHONPATH": str(unpacked), "CC": "/nonexistent", "PATH": str(Path(sys.executable).parent),
           "MOESIM_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "import sys; " + probe, str(unpacked)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "None"], out.stderr
    assert not (tmp_path / "cache").exists()  # loaded from the wheel, nothing compiled
