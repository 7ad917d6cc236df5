"""`moesim report RESULTS... --out report.html [--md report.md]`: one report from any results."""

from __future__ import annotations

import argparse
from typing import Any

from moesim.cli import add_json_flag, emit


def _cmd_report(args: argparse.Namespace) -> int:
    from moesim.reports.readers import load_result_set
    from moesim.reports.render import write_report

    from moesim.atomic_io import check_output

    check_output(args.out, "--out")  # before the work: a bad output path fails at once
    if args.md is not None:
        check_output(args.md, "--md")
    results = load_result_set(args.results)
    report = write_report(results, args.out, args.md, title=args.title)
    data: dict[str, Any] = {
        "html": args.out,
        "markdown": args.md,
        "runs": int(len(results.runs)),
        "failed": int(len(report.failed)),
        "figures": [f.title for f in report.figures],
        "notes": report.notes,
    }
    emit(args, data, _render)
    return 0


def _render(data: dict[str, Any]) -> str:
    lines = [f"wrote {data['html']}" + (f" and {data['markdown']}" if data["markdown"] else "")
             + f": {data['runs']} runs ({data['failed']} failed), {len(data['figures'])} figures"]
    lines += [f"  {title}" for title in data["figures"]]
    lines += [f"note: {n}" for n in data["notes"]]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write an HTML report (plots inlined) and a Markdown summary from result files or sweep dirs")
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="result Parquet files (moesim replay --out, timed results, run files) or sweep directories")
    parser.add_argument("--out", required=True, help="HTML file to write")
    parser.add_argument("--md", default=None, help="also write a Markdown summary here")
    parser.add_argument("--title", default="moesim report", help="the report's title")
    add_json_flag(parser)
    parser.set_defaults(func=_cmd_report)
