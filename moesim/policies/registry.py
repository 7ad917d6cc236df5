"""Policies by name: one decorator per policy, parameters from a frozen dataclass.

    @register("lfu", kind="eviction")
    class LFU(EvictionPolicy):
        @dataclass(frozen=True)
        class Params:
            decay: float = field(default=1.0, metadata={"help": "multiply counts by this every pass"})

A spec string names a policy and its parameters: "lfu", "lfu:decay=0.9", "lru-ds:protect=3".
Aliases are variants made by fixing parameters (gem5's LIP-is-BIP idea). The CLI help,
`moesim policies show` and result metadata all come from the Params dataclass.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from moesim.errors import UserError

KINDS = ("eviction", "prefetch", "miss", "placement")

# Modules that hold registered policies; imported on first lookup so registration is complete.
POLICY_MODULES: tuple[str, ...] = (
    "moesim.policies.eviction",
    "moesim.policies.prefetch",
    "moesim.policies.miss_handling",
    "moesim.policies.placement",
)


@dataclass(frozen=True)
class Registered:
    name: str
    kind: str
    cls: type
    fixed: dict[str, Any] = field(default_factory=dict)
    alias_of: str | None = None

    @property
    def doc(self) -> str:
        return (self.cls.__doc__ or "").strip()

    def params_type(self) -> type | None:
        return getattr(self.cls, "Params", None)


_REGISTRY: dict[tuple[str, str], Registered] = {}
_loaded = False

T = TypeVar("T", bound=type)


def register(name: str, kind: str = "eviction") -> Callable[[T], T]:
    if kind not in KINDS:
        raise ValueError(f"unknown policy kind {kind!r}")

    def deco(cls: T) -> T:
        key = (kind, name)
        if key in _REGISTRY:
            raise ValueError(f"policy {kind}/{name} registered twice")
        _REGISTRY[key] = Registered(name=name, kind=kind, cls=cls)
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def register_alias(name: str, target: str, kind: str = "eviction", **fixed: Any) -> None:
    base = _REGISTRY[(kind, target)]
    _REGISTRY[(kind, name)] = Registered(name=name, kind=kind, cls=base.cls, fixed=fixed, alias_of=target)


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in POLICY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def available(kind: str | None = None) -> list[Registered]:
    _ensure_loaded()
    return sorted((r for r in _REGISTRY.values() if kind is None or r.kind == kind), key=lambda r: (r.kind, r.name))


def lookup(name: str, kind: str = "eviction") -> Registered:
    _ensure_loaded()
    try:
        return _REGISTRY[(kind, name)]
    except KeyError:
        names = ", ".join(r.name for r in available(kind))
        raise UserError(f"unknown {kind} policy {name!r}; known: {names}", "policy") from None


@dataclass(frozen=True)
class PolicySpec:
    """A resolved policy choice: registry entry plus typed parameters."""

    name: str
    kind: str
    params: Any

    @property
    def entry(self) -> Registered:
        return lookup(self.name, self.kind)

    def to_dict(self) -> dict[str, Any]:
        params = dataclasses.asdict(self.params) if dataclasses.is_dataclass(self.params) else {}
        return {"name": self.name, "kind": self.kind, "params": params}

    def label(self) -> str:
        """Canonical spec string: name plus the parameters that differ from the defaults."""
        entry = self.entry
        ptype = entry.params_type()
        if ptype is None:
            return self.name
        defaults = ptype()
        parts = [self.name]
        for f in dataclasses.fields(ptype):
            if f.name in entry.fixed:
                continue
            value = getattr(self.params, f.name)
            if value != getattr(defaults, f.name):
                parts.append(f"{f.name}={value}")
        return ":".join(parts)

    def build(self, ctx: Any) -> Any:
        return self.entry.cls(self.params, ctx)


def parse_spec(text: str, kind: str = "eviction") -> PolicySpec:
    """Parse "name[:key=value[:key=value...]]" into a PolicySpec; UserError on any mistake."""
    text = text.strip()
    if not text:
        raise UserError(f"empty {kind} policy name", "policy")
    name, *pairs = text.split(":")
    entry = lookup(name.strip(), kind)
    ptype = entry.params_type()
    values: dict[str, Any] = dict(entry.fixed)
    given: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"parameter {pair!r} must be key=value", f"policy {name}")
        key, value = (s.strip() for s in pair.split("=", 1))
        given[key] = value
    if given and ptype is None:
        raise UserError(f"takes no parameters (got {', '.join(given)})", f"policy {name}")
    if ptype is not None:
        fields = {f.name: f for f in dataclasses.fields(ptype)}
        for key, value in given.items():
            if key not in fields:
                known = ", ".join(k for k in fields if k not in entry.fixed) or "none"
                raise UserError(f"unknown parameter {key!r}; known: {known}", f"policy {name}")
            if key in entry.fixed:
                raise UserError(f"parameter {key!r} is fixed by this alias", f"policy {name}")
            values[key] = _convert(value, fields[key], f"policy {name}")
        try:
            params = ptype(**values)
        except (TypeError, ValueError) as exc:
            raise UserError(str(exc), f"policy {name}") from None
        check = getattr(params, "check", None)
        if check is not None:
            check()
    else:
        params = None
    return PolicySpec(name=entry.name, kind=kind, params=params)


def parse_spec_list(text: str, kind: str = "eviction") -> list[PolicySpec]:
    """"lru,lfu:decay=0.9,belady" -> three specs."""
    return [parse_spec(part, kind) for part in text.split(",") if part.strip()]


def _convert(value: str, f: dataclasses.Field, where: str) -> Any:
    typ = f.type if isinstance(f.type, type) else {"int": int, "float": float, "bool": bool, "str": str}.get(
        str(f.type).replace("typing.", ""), str
    )
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
        return value
    except ValueError:
        raise UserError(f"parameter {f.name!r} expects {typ.__name__}, got {value!r}", where) from None


def describe(entry: Registered) -> dict[str, Any]:
    """Name, kind, doc and parameters (with defaults and help) for `moesim policies show`."""
    ptype = entry.params_type()
    params = []
    if ptype is not None:
        for f in dataclasses.fields(ptype):
            if f.name in entry.fixed:
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            params.append({"name": f.name, "type": getattr(f.type, "__name__", str(f.type)), "default": default,
                           "help": f.metadata.get("help", "")})
    return {
        "name": entry.name,
        "kind": entry.kind,
        "alias_of": entry.alias_of,
        "fixed": entry.fixed,
        "offline": bool(getattr(entry.cls, "offline", False)),
        "compiled": _has_compiled_form(entry.cls),
        "doc": entry.doc,
        "params": params,
    }


def _has_compiled_form(cls: type) -> bool:
    """Whether the class declares a compiled form (moesim.policies.compiled) for the fast engine."""
    from moesim.policies.compiled import compiled_form

    return compiled_form(cls) is not None
