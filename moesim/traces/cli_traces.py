"""`moesim traces ...`: the command group; each sub-module adds its own subcommands."""

from __future__ import annotations

import argparse
import importlib

# Modules that add `moesim traces <sub>` commands via register_traces(subparsers).
TRACES_SUBCOMMAND_MODULES: tuple[str, ...] = (
    "moesim.traces.format.cli_io",  # info, convert, validate, import formats
    "moesim.traces.synth.cli_synth",  # synth, fit, stats
    "moesim.traces.synth.cli_tol",  # synth-tol (token-indexed memory workloads)
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("traces", help="inspect, convert, validate, synthesise and fit routing traces")
    sub = parser.add_subparsers(dest="traces_command", metavar="SUBCOMMAND", parser_class=type(parser))
    for name in TRACES_SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register_traces(sub)
    parser.set_defaults(func=lambda args: parser.print_help() or 0)
