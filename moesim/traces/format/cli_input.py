"""The trace-input options every command that reads a trace takes, and the one loader they share.

    --format NAME            the input format (default: detected)
    --map FIELD=COLUMN,...   generic logs: which column holds which field
    --option KEY=VALUE       an importer option (repeatable; `moesim traces formats` lists them)
    --pass-by RULE           router logs: prompt | token | column:NAME | reset:NAME
    --skip rows:N|passes:N   router logs: drop each file's first rows, or the first passes
    --where / --drop COL=V   router logs: keep / drop rows by a column's value (repeatable)
    --range COL=LO:HI        router logs: keep rows within a range (repeatable)
    --layer-from-filename P  router logs, one file per layer: e.g. 'moe_layer{layer}'

`load_cli_trace` loads the trace and prints the trace doctor's findings (moesim.traces.importers.doctor) as
one-line warnings on stderr, so a badly grouped import is never replayed silently.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moesim.errors import UserError

ROW_FLAGS = {"pass_by": "pass_by", "where": "where", "drop": "drop", "range": "range",
             "layer_from_filename": "layer_from_filename"}


def add_trace_input_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("trace input (README 'Importing router logs')")
    group.add_argument("--format", help="input format (default: detected); see `moesim traces formats`")
    group.add_argument("--map", help="generic format: FIELD=COLUMN pairs, e.g. layer=lyr,experts=topk_ids")
    group.add_argument("--option", action="append", metavar="KEY=VALUE",
                       help="an importer option, e.g. prefill_len=28 or expert_bytes='3 MiB' (repeatable)")
    group.add_argument("--pass-by", dest="pass_by", metavar="RULE",
                       help="router logs: how rows form passes: prompt (default), token, column:NAME, reset:NAME")
    group.add_argument("--skip", action="append", metavar="rows:N|passes:N",
                       help="router logs: drop each file's first N rows, or the first N passes (a warm-up)")
    group.add_argument("--where", action="append", metavar="COLUMN=VALUE", help="router logs: keep only these rows")
    group.add_argument("--drop", action="append", metavar="COLUMN=VALUE", help="router logs: drop these rows")
    group.add_argument("--range", action="append", metavar="COLUMN=LO:HI",
                       help="router logs: keep rows with LO <= COLUMN <= HI (a step range; LO..HI for ISO times)")
    group.add_argument("--layer-from-filename", dest="layer_from_filename", metavar="PATTERN",
                       help="router logs, one file per layer: the layer in each name, e.g. 'moe_layer{layer}'")


def trace_input(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """(format, importer options) from the flags above."""
    from moesim.traces.importers.options import parse_option_pairs

    options: dict[str, Any] = parse_option_pairs(getattr(args, "option", None))
    fmt = getattr(args, "format", None)
    if getattr(args, "map", None) is not None:
        if fmt not in (None, "generic"):
            raise UserError(f"--map applies to --format generic, not {fmt!r}", "--map")
        fmt = "generic"
        options["column_map"] = args.map
    for attr, key in ROW_FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            options[key] = value
    for item in getattr(args, "skip", None) or []:
        unit, sep, count = str(item).partition(":")
        unit = unit.strip().lower()
        if not sep or unit not in ("rows", "passes") or not count.strip().isdigit():
            raise UserError(f"expected rows:N or passes:N, got {item!r}", "--skip")
        options[f"skip_{unit}"] = count.strip()
    return fmt, options


def load_cli_trace(args: argparse.Namespace, text: str, warn: bool = True) -> Any:
    """The trace named on the command line, with the trace-input flags; doctor warnings on stderr."""
    from moesim.traces.format.io import load_trace

    fmt, options = trace_input(args)
    trace = load_trace(text, format=fmt, **options)
    if warn:
        print_findings(trace)
    return trace


def print_findings(trace: Any) -> None:
    from moesim.traces.importers.doctor import diagnose

    for finding in diagnose(trace):
        print(f"moesim: warning: {finding.message}", file=sys.stderr)
