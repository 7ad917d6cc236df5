"""Find, or build, the compiled kernels and load them with ctypes; say why not when that cannot be done.

The library is one C99 translation unit with no Python headers (plan.c, which includes replay.c and
whatever other C files sit beside it), so any C compiler builds it in about a second. Where it comes from:
1. installed: `pip install` builds it into the package (setup.py calls `build_installed`, so a wheel
   carries moesim/sim/fast/_kernels<extension suffix>); the library carries the digest of the sources
   it was built from and is used only when that matches the sources beside it (an edited source is
   never run stale);
2. else built on first use with the user's C compiler, cached under `$MOESIM_CACHE_DIR` (default
   `$XDG_CACHE_HOME/moesim` or `~/.cache/moesim`), named by a hash of the source, the compiler
   command and the platform, so an edited source or a different interpreter platform gets its own
   build; concurrent first uses race harmlessly (each writes a private temporary file and renames it
   into place).
No library, no compiler, a failed build or an unwritable cache leaves the pure-Python reference path,
with the reason in `unavailable_reason()`, said once per process on stderr when a run falls back.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from functools import lru_cache
from pathlib import Path

SOURCE = Path(__file__).with_name("plan.c")
"""The file compiled; it includes the other C sources beside it (all of them are hashed)."""
INCLUDED = tuple(sorted(p for p in Path(__file__).parent.glob("*.[ch]") if p.name != SOURCE.name))
INSTALLED_NAME = "_kernels"
"""moesim/sim/fast/_kernels<extension suffix>: the library setup.py builds into the package."""
ABI_VERSION = 3  # replay.c's moesim_abi_version()
CFLAGS = ("-O3", "-std=c99", "-ffp-contract=off", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 120


def cache_dir() -> Path:
    root = os.environ.get("MOESIM_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "moesim"


def compiler() -> list[str] | None:
    """The C compiler command: $CC, else the one Python was built with, else cc/gcc/clang on PATH."""
    for text in (os.environ.get("CC"), sysconfig.get_config_var("CC")):
        if text:
            cmd = shlex.split(text)
            if cmd and shutil.which(cmd[0]):
                return cmd
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def library_path(cmd: list[str], source: bytes) -> Path:
    h = hashlib.sha256()
    for part in (source, " ".join(cmd).encode(), " ".join(CFLAGS).encode(), sys.platform.encode(),
                 platform.machine().encode(), str(ABI_VERSION).encode()):
        h.update(part + b"\0")
    suffix = ".dll" if sys.platform == "win32" else ".so"
    return cache_dir() / f"moesim-replay-{h.hexdigest()[:16]}{suffix}"


def _sources() -> bytes:
    return b"\0".join(path.read_bytes() for path in (*INCLUDED, SOURCE))


def sources_digest() -> str:
    """The digest an installed library must carry to be used: of the sources, flags and ABI it was built from."""
    h = hashlib.sha256()
    for part in (_sources(), " ".join(CFLAGS).encode(), str(ABI_VERSION).encode()):
        h.update(part + b"\0")
    return h.hexdigest()


def installed_library() -> Path | None:
    """The library `pip install` built into the package, if it is there and built from these sources."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = SOURCE.parent / f"{INSTALLED_NAME}{suffix}"
        if not path.is_file():
            continue
        try:
            digest = ctypes.CDLL(str(path)).moesim_sources_digest
            digest.restype = ctypes.c_char_p
            return path if digest().decode() == sources_digest() else None
        except (OSError, AttributeError):  # unloadable, or built before libraries carried a digest
            return None
    return None


def build_installed(target: Path) -> str | None:
    """Build the library at `target` (setup.py's build_ext), carrying its sources' digest; None on success,
    else the reason. The digest is a second, generated translation unit, so the kernel sources stay as they are."""
    cmd = compiler()
    if cmd is None:
        return "no C compiler found (set CC)"
    with tempfile.TemporaryDirectory() as tmp:
        stamp = Path(tmp) / "sources_digest.c"
        stamp.write_text(f'const char *moesim_sources_digest(void) {{ return "{sources_digest()}"; }}\n')
        return _compile(cmd, target, (str(stamp),))


def _compile(cmd: list[str], target: Path, extra_sources: tuple[str, ...] = ()) -> str | None:
    """Build the library at `target`; None on success, else a one-line reason."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        return f"cannot write the compiled kernel to {target.parent} ({exc.strerror}); set MOESIM_CACHE_DIR"
    try:
        proc = subprocess.run([*cmd, *CFLAGS, "-I", str(SOURCE.parent), "-o", tmp, str(SOURCE), *extra_sources],
                              capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if proc.returncode != 0:
            first = (proc.stderr or proc.stdout).strip().splitlines()
            return f"{cmd[0]} failed on {SOURCE.name}: {first[0] if first else 'exit ' + str(proc.returncode)}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cmd[0]} could not be run ({exc})"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _find_or_build() -> tuple[Path | None, str | None]:
    """The library to load (installed, else cached, else built now), or why there is none."""
    installed = installed_library()
    if installed is not None:
        return installed, None
    cmd = compiler()
    if cmd is None:
        return None, "no C compiler found (set CC)"
    try:
        source = _sources()
    except OSError as exc:
        return None, f"kernel source missing ({exc})"
    try:
        path = library_path(cmd, source)
    except (RuntimeError, KeyError) as exc:  # no home directory to cache in
        return None, f"no cache directory ({exc}); set MOESIM_CACHE_DIR"
    if not path.exists():
        reason = _compile(cmd, path)
        if reason is not None:
            return None, reason
    return path, None


@lru_cache(maxsize=1)
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    path, reason = _find_or_build()
    if path is None:
        return None, reason
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        return None, f"cannot load {path} ({exc})"
    lib.moesim_abi_version.restype = ctypes.c_int64
    if lib.moesim_abi_version() != ABI_VERSION:
        return None, f"{path} has ABI {lib.moesim_abi_version()}, expected {ABI_VERSION}"
    for name in ("moesim_count_replay", "moesim_policy_code", "moesim_event_requests", "moesim_event_stream",
                 "moesim_replay_struct_size",
                 "moesim_plan_open",
                 "moesim_plan_run", "moesim_plan_prefetch", "moesim_plan_close", "moesim_plan_struct_size"):
        getattr(lib, name).restype = ctypes.c_int64
    return lib, None


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, building it first if needed; None if that is impossible."""
    return _load()[0]


def unavailable_reason() -> str | None:
    """Why the compiled kernel cannot be used here (None if it can); said once per process on stderr."""
    reason = _load()[1]
    global _told
    if reason is not None and not _told:
        _told = True
        print(f"moesim: compiled kernels unavailable ({reason}); using the slower reference path", file=sys.stderr)
    return reason


_told = False
