"""Typed, named reads from a parsed YAML mapping, for configuration files users write.

Every read names the file and the dotted field ("olmoe.yaml: experts.top_k: ...") in its UserError,
and `Section.finish()` rejects keys nobody read, so a typo ("bandwith") is an error rather than a
silently ignored line.
"""

from __future__ import annotations

from typing import Any, Sequence

from moesim.errors import UserError


class Section:
    """One mapping of a configuration file: `where` is the file, `path` the dotted field prefix."""

    def __init__(self, data: Any, where: str, path: str = "") -> None:
        if not isinstance(data, dict):
            raise UserError(f"expected a mapping, got {_type_name(data)}", _locate(where, path))
        self.data = data
        self.where = where
        self.path = path
        self._read: set[str] = set()
        for key in data:
            if not isinstance(key, str):
                raise UserError(f"field name {key!r} is not a string", _locate(where, path))

    def field_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> UserError:
        return UserError(message, _locate(self.where, self.field_path(key) if key else self.path))

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, required: bool = True, default: Any = None) -> Any:
        self._read.add(key)
        if key not in self.data:
            if required:
                raise self.error(key, "missing field")
            return default
        return self.data[key]

    def section(self, key: str, required: bool = True) -> "Section | None":
        value = self.raw(key, required)
        if value is None and not required:
            return None
        return Section(value, self.where, self.field_path(key))

    def string(self, key: str, required: bool = True, default: str = "", choices: Sequence[str] = ()) -> str:
        if not required and key not in self.data:
            self._read.add(key)
            return default
        value = self.raw(key, required)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_type_name(value)}")
        if choices and value not in choices:
            raise self.error(key, f"{value!r} is not one of: {', '.join(choices)}")
        return value

    def integer(self, key: str, required: bool = True, default: int = 0, minimum: int | None = 1) -> int:
        if not required and key not in self.data:
            self._read.add(key)
            return default
        value = self.raw(key, required)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_type_name(value)}")
        if minimum is not None and value < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            raise self.error(key, f"must be {what}, got {value}")
        return value

    def optional_integer(self, key: str, minimum: int = 1) -> int | None:
        """An integer that may be absent or null (e.g. DeepSeek-V2-Lite's q_lora_rank: null)."""
        if self.raw(key, required=False) is None:
            return None
        return self.integer(key, minimum=minimum)

    def boolean(self, key: str, required: bool = False, default: bool = False) -> bool:
        if not required and key not in self.data:
            self._read.add(key)
            return default
        value = self.raw(key, required)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_type_name(value)}")
        return value

    def finish(self) -> None:
        """Reject fields that no read asked for."""
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read))
            raise self.error(unknown[0], f"unknown field (known here: {known})")


def _locate(where: str, path: str) -> str:
    return f"{where}: {path}" if path else where


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    return type(value).__name__
