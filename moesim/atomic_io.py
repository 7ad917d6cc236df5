"""Atomic file writes: an output either appears whole or not at all, and never replaces an input.

A user's mistake or a crash half-way must never leave a half-written result behind, so every
output is written to a temporary file in the target directory and renamed over the target.
Every writer goes through `atomic_path`, which is also the one output-path guard: a target that
is a directory, that cannot be written, or that is a file this command reads (`note_input`) is a
UserError naming the option before anything is written. Temporary files carry the writer's
process id (`.<name>.<pid>.<random>.tmp`), so the next write of the same target removes the ones
a killed writer left and never touches those of a writer still alive.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from moesim.errors import UserError

# Files the running command reads: (device, inode) -> the name it was given as. Only while a CLI
# command runs (moesim.cli.main calls begin_command/end_command): in a notebook, reading a result
# and later rewriting it is the user's plan, not a mistake.
_INPUTS: dict[tuple[int, int], str] = {}
_COMMAND = {"active": False}
TMP_SUFFIX = ".tmp"


def begin_command() -> None:
    _INPUTS.clear()
    _COMMAND["active"] = True


def end_command() -> None:
    _INPUTS.clear()
    _COMMAND["active"] = False


def note_input(path: str | os.PathLike[str]) -> None:
    """Remember that this command reads the file `path`: no output may replace it."""
    if not _COMMAND["active"]:
        return
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    if not os.path.isdir(path):
        _INPUTS.setdefault((st.st_dev, st.st_ino), os.fspath(path))


def _input_named(target: Path) -> str | None:
    try:
        st = os.stat(target)
    except (OSError, ValueError):
        return None
    return _INPUTS.get((st.st_dev, st.st_ino))


def check_output(target: str | os.PathLike[str], where: str | None = None, replace_input: bool = False) -> Path:
    """The output-path guard: UserError (naming `where`, else the path) unless `target` can be
    written as a new or replaced plain file that is not one of this command's inputs."""
    target = Path(target)
    label = where  # None: the message itself names the path
    if target.is_dir():
        raise UserError(f"{target} is a directory; give a file name", label)
    if target.exists() and not target.is_file():
        raise UserError(f"{target} is not a regular file", label)
    if not replace_input:
        source = _input_named(target)
        if source is not None:
            raise UserError(f"{target} is also an input of this command ({source}); writing it would destroy "
                            "the input: give another output path", label)
    parent = target.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UserError(f"cannot write {target}: {folder} is not a directory", label)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise UserError(f"cannot write {target}: no permission to write in {folder}", label)
            break
    return target


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tmp_owner(name: str) -> int | None:
    """The process id in a temporary file name `.<name>.<pid>.<random>.tmp`, or None."""
    parts = name[:-len(TMP_SUFFIX)].split(".") if name.endswith(TMP_SUFFIX) else []
    if len(parts) >= 3 and parts[-2].isdigit():
        return int(parts[-2])
    return None


def is_stale_tmp(path: Path) -> bool:
    """A temporary file of ours whose writer is gone (no live process with its id)."""
    name = path.name
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return False
    pid = tmp_owner(name)
    return pid is not None and not _pid_alive(pid)


def remove_stale_tmp(target: Path) -> int:
    """Delete the temporary files a killed writer of `target` left beside it."""
    prefix = f".{target.name}."
    removed = 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(prefix) and is_stale_tmp(Path(entry.path)):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed += 1
    return removed


def _mkdir(folder: Path, label: str | None) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder {folder} ({exc.strerror or exc})", label) from None


def _new_tmp(target: Path, label: str | None) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as exc:
        raise UserError(f"cannot write {target} ({exc.strerror or exc})", label) from None
    os.close(fd)
    return Path(tmp)


def _publish(tmp_path: Path, target: Path, label: str | None) -> None:
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        os.replace(tmp_path, target)
    except OSError as exc:
        raise UserError(f"cannot write {target} ({exc.strerror or exc})", label) from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], where: str | None = None, replace_input: bool = False,
                clean_stale: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    `where` names the option in errors (default: the path); `replace_input` lets a command rewrite a
    file it read on purpose (a sweep's own table cache); `clean_stale=False` skips the scan for a
    killed writer's leftovers (a sweep cleans its runs/ folder once, under its lock).
    """
    target = check_output(target, where, replace_input)
    label = where
    _mkdir(target.parent, label)
    if clean_stale:
        remove_stale_tmp(target)
    tmp_path = _new_tmp(target, label)
    try:
        yield tmp_path
        _publish(tmp_path, target, label)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_text_atomic(target: str | os.PathLike[str], text: str, where: str | None = None) -> None:
    with atomic_path(target, where) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes, where: str | None = None) -> None:
    with atomic_path(target, where) as tmp:
        tmp.write_bytes(data)


def write_texts_atomic(files: Mapping[str | os.PathLike[str], str], where: Mapping[str, str] | None = None) -> None:
    """Write several files as one unit: every one is written to its temporary file first, and only
    when all are whole are they renamed into place (a report's HTML and Markdown never mismatch).
    Two of them naming one path is a UserError."""
    where = dict(where or {})
    targets: list[tuple[Path, str | None, str]] = []
    seen: dict[str, str | None] = {}
    for path, text in files.items():
        label = where.get(os.fspath(path))
        target = check_output(path, label)
        key = os.path.realpath(target)
        if key in seen:
            raise UserError(f"{target} is also the output of {seen[key] or 'another file'}: give two different paths",
                            label)
        seen[key] = label
        targets.append((target, label, text))
    temps: list[tuple[Path, Path, str | None]] = []
    try:
        for target, label, text in targets:
            _mkdir(target.parent, label)
            remove_stale_tmp(target)
            tmp = _new_tmp(target, label)
            temps.append((tmp, target, label))
            tmp.write_text(text, encoding="utf-8")
        for tmp, target, label in temps:
            _publish(tmp, target, label)
    except BaseException:
        for tmp, _, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
