"""Reading the YAML files users write (model specs, hardware profiles) with errors they can act on.

PyYAML silently keeps the last of two equal keys; a profile with `bandwidth` twice would then mean
something the user did not see, so duplicate keys are an error here. Anchors and aliases are
allowed within a small budget: a document whose aliases would expand past MAX_EXPANDED_NODES
nodes (a "billion laughs" bomb: a few hundred bytes that expand to gigabytes) is refused before
anything is built. Only plain data is built (SafeLoader: no Python tags). Every failure (missing
file, bad syntax, a root that is not a mapping) is a UserError naming the file and, where YAML
knows it, the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from moesim.errors import UserError


# A configuration file is a few hundred values; these budgets are far above any real one.
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 100_000
MAX_TEXT_BYTES = 10 * 2**20


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys."""


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a node graph whose aliases expand to more than MAX_EXPANDED_NODES nodes."""
    sizes: dict[int, int] = {}
    uses: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        uses[key] = uses.get(key, 0) + 1
        if key in sizes:
            return sizes[key]
        if key in active:
            raise UserError(f"line {node.start_mark.line + 1}: an alias refers to the node that holds it", where)
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = min(total, MAX_EXPANDED_NODES + 1)
        return sizes[key]

    try:
        total = size(root)
    except RecursionError:
        raise UserError("nested too deeply", where) from None
    aliases = sum(n - 1 for n in uses.values())
    if aliases > MAX_ALIASES or total > MAX_EXPANDED_NODES:
        raise UserError(f"its anchors and aliases expand past the limit ({MAX_ALIASES} aliases, "
                        f"{MAX_EXPANDED_NODES:,} values); write the values out", where)


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
    if len(text) > MAX_TEXT_BYTES:
        raise UserError(f"is {len(text):,} characters; a configuration file is at most {MAX_TEXT_BYTES:,}", where)
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            data = None
        else:
            _check_expansion(node, where)
            data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{line}not valid YAML ({problem})", where) from None
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:  # e.g. a timestamp PyYAML cannot build
        raise UserError(f"not valid YAML ({str(exc)[:200]})", where) from None
    finally:
        if loader is not None:
            loader.dispose()
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
