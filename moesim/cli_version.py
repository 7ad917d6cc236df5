"""`moesim version`: the package and its main dependencies' versions."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform

import moesim
from moesim.cli import add_json_flag, emit

DEPENDENCIES = ("numpy", "pandas", "pyarrow", "simpy", "pyyaml", "matplotlib", "torch", "triton", "nvidia-ml-py", "ray")


def versions() -> dict[str, object]:
    deps: dict[str, str | None] = {}
    for name in DEPENDENCIES:
        try:
            deps[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            deps[name] = None
    return {"moesim": moesim.__version__, "python": platform.python_version(), "dependencies": deps}


def _render(data: dict[str, object]) -> str:
    lines = [f"moesim {data['moesim']} (python {data['python']})"]
    for name, version in data["dependencies"].items():  # type: ignore[union-attr]
        lines.append(f"  {name:14s} {version or '-'}")
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("version", help="print moesim's version and its dependencies'")
    add_json_flag(parser)
    parser.set_defaults(func=lambda args: emit(args, versions(), _render))
