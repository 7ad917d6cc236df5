"""Importer options: typed reads from a dict that may come from Python (ints, lists) or the CLI (strings).

`moesim traces convert ... --option prefill_len=28` gives every value as text, while
`load_trace(path, format="vllm", prefill_len=28)` gives an int; both go through the same readers so
an importer states each option's type once and a bad value is a UserError naming the option.
"""

from __future__ import annotations

from typing import Any, Mapping

from moesim.errors import UserError
from moesim.units import parse_quantity


class Options:
    """The options given to one importer; `finish()` rejects any the importer did not read."""

    def __init__(self, values: Mapping[str, Any], known: Mapping[str, str], fmt: str) -> None:
        self._values = dict(values)
        self._known = known
        self._fmt = fmt
        unknown = sorted(set(self._values) - set(known))
        if unknown:
            names = ", ".join(sorted(known)) or "none"
            raise UserError(f"unknown option {unknown[0]!r} for format {fmt!r}; known options: {names}", "--option")

    def _where(self, name: str) -> str:
        return f"--option {name}"

    def has(self, name: str) -> bool:
        return self._values.get(name) is not None

    def raw(self, name: str) -> Any:
        return self._values.get(name)

    def int(self, name: str, default: int | None = None, minimum: int | None = 0) -> int | None:
        value = self._values.get(name)
        if value is None:
            return default
        number = _to_int(value, self._where(name))
        if minimum is not None and number < minimum:
            raise UserError(f"must be >= {minimum}, got {number}", self._where(name))
        return number

    def int_list(self, name: str, minimum: int = 0) -> list[int] | None:
        """A list of ints: a Python list/tuple, one int, or text such as "28,12,40"."""
        value = self._values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", "").split(",") if p]
            if not parts:
                raise UserError("expected a comma-separated list of integers", self._where(name))
            items: list[Any] = parts
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        numbers = [_to_int(v, self._where(name)) for v in items]
        if any(n < minimum for n in numbers):
            raise UserError(f"every entry must be >= {minimum}", self._where(name))
        return numbers

    def text(self, name: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str | None:
        value = self._values.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise UserError(f"expected text, got {value!r}", self._where(name))
        if choices is not None and value not in choices:
            raise UserError(f"must be one of {', '.join(choices)}, got {value!r}", self._where(name))
        return value

    def byte_sizes(self, name: str, n_layers: int) -> list[int] | None:
        """Object bytes per layer: one size for every layer or one per layer.

        Accepts a number of bytes (int), a quantity with a unit ("3 MiB"), or a comma-separated list
        or Python list of either.
        """
        value = self._values.get(name)
        if value is None:
            return None
        where = self._where(name)
        items: list[Any]
        if isinstance(value, str):
            items = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        sizes = [parse_size(v, where) for v in items]
        if len(sizes) == 1:
            sizes = sizes * n_layers
        if len(sizes) != n_layers:
            raise UserError(f"gives {len(sizes)} sizes for {n_layers} layers", where)
        return sizes


def parse_size(value: Any, where: str) -> int:
    """Bytes from an int (or integer text) or a quantity with a unit; must be positive."""
    if isinstance(value, bool):
        raise UserError(f"expected a size in bytes, got {value!r}", where)
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        size = int(value.strip())
    elif isinstance(value, str):
        size = int(round(parse_quantity(value, "bytes", where)))
    else:
        raise UserError(f"expected a size in bytes such as 3059712 or '3 MiB', got {value!r}", where)
    if size <= 0:
        raise UserError(f"size must be positive, got {value!r}", where)
    return size


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise UserError(f"expected an integer, got {value!r}", where)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise UserError(f"expected an integer, got {value!r}", where)


def parse_option_pairs(pairs: list[str] | None, flag: str = "--option") -> dict[str, str]:
    """["a=1", "b=x,y"] -> {"a": "1", "b": "x,y"} (the CLI's repeated --option KEY=VALUE)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected KEY=VALUE, got {pair!r}", flag)
        out[key.strip()] = value.strip()
    return out
