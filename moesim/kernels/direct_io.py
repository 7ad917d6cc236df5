"""File reads that bypass the page cache (O_DIRECT), with a stated fallback where the filesystem refuses.

A file just written sits in the page cache: a buffered read of it times DRAM, not the drive
(the bug issue #19 names in the old SSD store). O_DIRECT reads go to the device, but need the
buffer address, the file offset and the length aligned to the logical block size (4096 bytes is
safe on every Linux filesystem that supports O_DIRECT). Where `open(O_DIRECT)` is refused
(tmpfs, some overlay filesystems: EINVAL), reads fall back to buffered `preadv` after
`posix_fadvise(DONTNEED)` dropped the file's clean pages, and `DirectFile.mode` says so;
callers put that note into what they write. Buffers come from anonymous mmap (page aligned).
numpy/stdlib only: no torch.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

ALIGN = 4096


def align_up(n: int, align: int = ALIGN) -> int:
    return (int(n) + align - 1) // align * align


def aligned_buffer(nbytes: int) -> mmap.mmap:
    """A zeroed, page-aligned anonymous buffer of at least `nbytes` (rounded up to ALIGN)."""
    return mmap.mmap(-1, max(align_up(nbytes), ALIGN))


def write_file(path: str | os.PathLike[str], chunks, sync: bool = True) -> None:
    """Write `chunks` (bytes-like) back to back, fsync, and drop the file's pages from the page cache."""
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        if sync:
            os.fsync(f.fileno())
        drop_cache(f.fileno())


def drop_cache(fd: int) -> None:
    """Ask the kernel to forget the file's clean cached pages (no-op where unsupported)."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):
        pass


class DirectFile:
    """A file opened for O_DIRECT reads (`mode == "o_direct"`), or buffered with a note (`mode == "buffered"`)."""

    def __init__(self, path: str | os.PathLike[str], direct: bool = True) -> None:
        self.path = Path(path)
        self.note = ""
        self.mode = "buffered"
        self._fd: int | None = None
        flag = getattr(os, "O_DIRECT", 0)
        if direct and flag:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | flag)
                self.mode = "o_direct"
            except OSError as exc:
                self.note = (f"O_DIRECT refused by the filesystem of {self.path} ({exc.strerror}): buffered reads "
                             "after dropping the page cache; repeated reads may be served from DRAM")
        elif direct:
            self.note = "this platform has no O_DIRECT: buffered reads after dropping the page cache"
        else:
            self.note = "buffered reads (O_DIRECT not asked for)"
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            drop_cache(self._fd)
        self._bounce: mmap.mmap | None = None

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.path} is closed")
        return self._fd

    def read_into(self, view: memoryview, offset: int, length: int | None = None) -> int:
        """Read `length` bytes (default len(view)) at `offset` into `view`; returns the bytes read.

        With O_DIRECT, an aligned offset/length/address is read in place; anything else goes through
        a page-aligned bounce buffer (one extra memcpy of the request).
        """
        view = memoryview(view).cast("B")
        length = len(view) if length is None else int(length)
        if length > len(view):
            raise ValueError(f"buffer holds {len(view)} bytes, {length} asked for")
        if self.mode != "o_direct":
            return _read_full(self.fd, view[:length], offset, self.path)
        start = offset - offset % ALIGN
        span = align_up(offset + length) - start
        in_place = start == offset and span == length and _address(view) % ALIGN == 0
        if in_place:
            return _read_full(self.fd, view[:length], offset, self.path, allow_eof=False)
        if self._bounce is None or len(self._bounce) < span:
            self._bounce = aligned_buffer(span)
        bounce = memoryview(self._bounce)
        got = _read_full(self.fd, bounce[:span], start, self.path, allow_eof=True)
        skip = offset - start
        if got < skip + length:
            raise OSError(f"short read of {length} bytes at {offset} from {self.path}")
        view[:length] = bounce[skip:skip + length]
        return length

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._bounce is not None:
            self._bounce.close()
            self._bounce = None

    def __enter__(self) -> "DirectFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _address(view: memoryview) -> int:
    import ctypes

    if view.readonly:
        return -1
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _read_full(fd: int, view: memoryview, offset: int, path: Path, allow_eof: bool = False) -> int:
    """preadv until `view` is full (a positioned read may return short); stops at end of file if allowed."""
    done = 0
    want = len(view)
    while done < want:
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            if allow_eof:
                break
            raise OSError(f"short read at {offset + done} from {path}")
        done += n
    return done
