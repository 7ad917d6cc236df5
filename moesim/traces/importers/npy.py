"""Reading .npy arrays safely: no pickles, and the header alone for sniffing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moesim.errors import UserError


# numpy parses the header with Python's tokenizer and literal_eval, which raise a zoo of types on
# garbage (ValueError, SyntaxError, tokenize.TokenError, MemoryError, RecursionError, ...); any of
# them only means "this is not a readable .npy file".
_HEADER_ERRORS = (Exception,)


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) from a .npy header, or None if the file is not a readable .npy."""
    found = _header(path)
    return None if found is None else found[:2]


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """(shape, dtype, offset of the data) or None."""
    if not path.is_file() or path.suffix.lower() != ".npy":
        return None
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            offset = f.tell()
    except _HEADER_ERRORS:
        return None
    return tuple(int(n) for n in shape), np.dtype(dtype), offset


def load_npy(path: Path, ndim: int) -> np.ndarray:
    """The array in `path` (no pickles); UserError if unreadable or not `ndim`-dimensional."""
    where = str(path)
    found = _header(path)
    if found is None:
        raise UserError("not a readable .npy array (bad magic or header)", where)
    shape, dtype, offset = found
    if dtype.hasobject:
        raise UserError("the array holds Python objects; moesim reads numeric arrays only", where)
    needed = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    available = path.stat().st_size - offset
    if needed > available:
        raise UserError(f"truncated: the header promises {needed} bytes of data, the file has {available}", where)
    try:
        array = np.load(path, allow_pickle=False)
    except _HEADER_ERRORS as exc:
        text = str(exc).strip().splitlines()
        raise UserError(f"not a readable .npy array ({text[0][:160] if text else type(exc).__name__})", where) from None
    if not isinstance(array, np.ndarray):
        raise UserError("expected one .npy array, found an archive", where)
    if array.ndim != ndim:
        raise UserError(f"expected a {ndim}-dimensional array, got shape {array.shape}", where)
    return array


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy file (importers' examples)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
