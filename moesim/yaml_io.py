"""Reading the YAML files users write (model specs, hardware profiles) with errors they can act on.

PyYAML silently keeps the last of two equal keys; a profile with `bandwidth` twice would then mean
something the user did not see, so duplicate keys are an error here. Every failure (missing file,
bad syntax, a root that is not a mapping) is a UserError naming the file and, where YAML knows it,
the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from moesim.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml_mapping(text: str, where: str) -> dict[str, Any]:
    """Parse YAML `text` whose root must be a mapping; `where` names the file in errors."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{line}not valid YAML ({problem})", where) from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a timestamp PyYAML cannot build
        raise UserError(f"not valid YAML ({exc})", where) from None
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at the top level, got {type(data).__name__}", where)
    return data


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read and parse a YAML file whose root is a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("no such file", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read ({exc.__class__.__name__}: {exc})", str(path)) from None
    return parse_yaml_mapping(text, str(path))
