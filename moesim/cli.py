"""The `moesim` command line.

Each room of the package owns its commands in a `cli_*.py` module with a `register(subparsers)`
function; this file only lists those modules and turns errors into exit codes:
0 ok, 1 a user's mistake (one line, no traceback), 2 a bug in moesim (with traceback).
Modules keep heavy imports (torch, triton, ray) inside their command functions so that
`moesim --help` stays fast and works on a core install.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import traceback
from typing import Any, Callable, Sequence

from moesim.atomic_io import begin_command, end_command, note_input
from moesim.safe_text import terminal_text
from moesim.errors import EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USER_ERROR, UserError

# Modules that add subcommands, in the order `moesim --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "moesim.cli_version",
    "moesim.traces.models.cli_models",
    "moesim.hw_profiles.cli_profiles",
    "moesim.traces.cli_traces",
    "moesim.policies.cli_policies",
    "moesim.sim.cli_replay",
    "moesim.reports.cli_reports",
    "moesim.sweeps.cli_sweep",
    "moesim.advise.cli_advise",
    "moesim.kernels.cli_gpu",
    "moesim.harness.cli_harness",
    "moesim.traces.record.cli_record",
    "moesim.runs.cli_runs",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage mistakes as UserError (exit 1) instead of exiting 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # "moesim replay" names the command; the bare program name would print "moesim: error: moesim: ..."
        command = self.prog.removeprefix("moesim").strip()
        # argparse quotes a bad value whole ("invalid int value: '999...'"): cut long ones
        raise UserError(re.sub(r"'([^']{40})[^']{20,}'", r"'\1...'", message), command or None)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="moesim",
        description="Replay MoE expert-routing traces against hardware profiles and cache/offload policies.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A room that has not landed yet, or whose optional extra is missing, adds no command.
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                continue
            raise
        module.register(subparsers)
    return parser


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def emit(args: argparse.Namespace, data: Any, render_text: Callable[[Any], str] | None = None) -> None:
    """Print `data` as JSON when --json was given, else as text via `render_text` (or JSON)."""
    if getattr(args, "json", False) or render_text is None:
        print(json.dumps(data, indent=2, sort_keys=True, default=_json_default))  # JSON escapes controls
    else:
        print(terminal_text(render_text(data)))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        _note_inputs(args)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_OK if not argv else EXIT_USER_ERROR
        result = args.func(args)
        return int(result or EXIT_OK)
    except UserError as exc:
        print(f"moesim: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("moesim: interrupted", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except MemoryError as exc:  # an input that declares more than this machine holds
        print(f"moesim: error: not enough memory for this input ({_short(exc)}); use a smaller one", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        # a path the user gave that a reader did not check first: still one line naming it
        print(f"moesim: error: {exc.filename or '?'}: {exc.strerror or _short(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception:  # a bug in moesim, not the user's mistake
        traceback.print_exc()
        print("moesim: internal error (a bug in moesim; please report it with the traceback above)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    finally:
        end_command()


# Options that name what a command writes; every other option or argument naming an existing file
# is an input, and the output guard (moesim.atomic_io) refuses to replace it.
OUTPUT_OPTIONS = ("out", "md")


def _note_inputs(args: argparse.Namespace) -> None:
    begin_command()
    for name, value in vars(args).items():
        if name in OUTPUT_OPTIONS:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item and len(item) < 4096 and "\x00" not in item:
                note_input(item)


def _one_line(text: str) -> str:
    """An error as the one line the CLI promises: controls escaped, at most 2,000 characters."""
    text = terminal_text(text.replace("\r", " ").replace("\n", " "))
    return text if len(text) <= 2000 else text[:2000] + "..."


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
