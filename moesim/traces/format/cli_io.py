"""`moesim traces info | convert | validate | formats`: inspect, import and check traces."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.traces.format.cli_input import add_trace_input_flags, load_cli_trace
from moesim.units import format_bytes


def register_traces(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="what a trace holds: layers, experts, top-k, passes, tokens, bytes, provenance")
    info.add_argument("trace", help="a trace file or folder in any supported format, or bundled:NAME")
    _add_input_flags(info)
    add_json_flag(info)
    info.set_defaults(func=_info)

    convert = sub.add_parser("convert", help="import a trace from another format and write moesim Parquet")
    convert.add_argument("input", help="the trace to import (file or folder)")
    convert.add_argument("--out", required=True, help="the .parquet file to write (atomically)")
    _add_input_flags(convert)
    add_json_flag(convert)
    convert.set_defaults(func=_convert)

    validate = sub.add_parser("validate", help="check a trace; exit 1 naming the first problem")
    validate.add_argument("trace", help="a trace file or folder in any supported format, or bundled:NAME")
    _add_input_flags(validate)
    add_json_flag(validate)
    validate.set_defaults(func=_validate)

    formats = sub.add_parser("formats", help="the trace formats moesim reads, with their options")
    add_json_flag(formats)
    formats.set_defaults(func=_formats)


def _add_input_flags(parser: argparse.ArgumentParser) -> None:
    add_trace_input_flags(parser)


def _load(args: argparse.Namespace, path: str, warn: bool = True) -> Any:
    return load_cli_trace(args, path, warn=warn)


def _info(args: argparse.Namespace) -> int:
    from moesim.traces.format.info import trace_info

    data = trace_info(_load(args, args.trace))
    data["source"] = args.trace
    emit(args, data, _render_info)
    return 0


def _render_info(d: dict[str, Any]) -> str:
    sizes = d["object_bytes"]
    size_text = format_bytes(sizes["min"]) if sizes["min"] == sizes["max"] else \
        f"{format_bytes(sizes['min'])} .. {format_bytes(sizes['max'])} by layer"
    if sizes["unknown"]:
        size_text = "unknown (1-byte placeholders)"
    p, t = d["passes"], d["tokens"]
    lines = [
        f"{d['source']}: {d['model'] or 'unknown model'} ({d['kind']})",
        f"  layers {d['layers']}" + (f" (model layers {d['layer_ids']})" if d["layer_ids"] else "")
        + f", experts {d['experts']}, top-k {d['top_k'] if d['top_k'] is not None else 'variable'}",
        f"  passes {p['total']} (prefill {p['prefill']}, decode {p['decode']}); "
        f"tokens {t['total']} (prefill {t['prefill']}, decode {t['decode']}); requests {d['requests']}",
        f"  routed accesses {d['routed_accesses']:,} in {d['cells']:,} cells",
        f"  object size {size_text}; all routed objects {format_bytes(d['total_routed_bytes'])}; "
        f"touched {d['touched']['total']['objects']} objects = {format_bytes(d['touched']['total']['bytes'])}"
        + (f" (decode {format_bytes(d['touched']['decode']['bytes'])})" if t["decode"] else ""),
    ]
    more = [name for name, on in (("weights", d["weights"]),) if on] + list(d["annotations"]) + \
        [f"prediction {n} ({w})" for n, w in d["predictions"].items()]
    if more:
        lines.append(f"  carries {', '.join(more)}")
    prov = d["provenance"]
    if prov:
        lines.append("  provenance " + ", ".join(f"{k}={v}" for k, v in sorted(prov.items())
                                                  if k in ("format", "source_file", "upstream", "licence")))
    if d["extra"].get("engine_cache_bytes"):
        lines.append(f"  engine cache {format_bytes(d['extra']['engine_cache_bytes'])} "
                     f"(from {d['extra'].get('engine_cache_from')})")
    lines.append(f"  content hash {d['content_hash'][:16]}")
    return "\n".join(lines)


def _convert(args: argparse.Namespace) -> int:
    from moesim.errors import UserError
    from moesim.traces.format.io import save_trace

    if Path(args.out).suffix.lower() != ".parquet":
        raise UserError(f"moesim writes traces as Parquet; name the file .parquet, not {Path(args.out).name!r}",
                        "--out")
    trace = _load(args, args.input)
    save_trace(trace, args.out)
    data = {"input": args.input, "out": str(Path(args.out)), "passes": trace.n_passes,
            "routed_accesses": trace.n_accesses, "content_hash": trace.content_hash()}
    emit(args, data, lambda d: f"wrote {d['out']}: {d['passes']} passes, {d['routed_accesses']:,} routed accesses")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from moesim.traces.importers.doctor import diagnose

    trace = _load(args, args.trace, warn=False)  # loading validates; any problem is a UserError (exit 1)
    findings = diagnose(trace)
    if trace.n_passes == 0:  # a valid container, but nothing to replay: validate says so
        from moesim.errors import UserError

        raise UserError("holds no passes (no rows): nothing to replay", args.trace)
    data = {"trace": args.trace, "valid": True, "passes": trace.n_passes, "cells": trace.n_cells,
            "routed_accesses": trace.n_accesses,
            "warnings": [{"code": f.code, "message": f.message} for f in findings]}

    def render(d: dict[str, Any]) -> str:
        head = (f"{d['trace']}: valid ({d['passes']} passes, {d['cells']} cells, "
                f"{d['routed_accesses']:,} routed accesses)")
        if not d["warnings"]:
            return head + "; the trace doctor finds nothing wrong"
        return "\n".join([head + f"; the trace doctor warns ({len(d['warnings'])}):"]
                         + [f"  {w['code']}: {w['message']}" for w in d["warnings"]])

    emit(args, data, render)
    return 0


def _formats(args: argparse.Namespace) -> int:
    from moesim.traces.importers import importer, importer_names

    data = [{"name": "moesim", "summary": "moesim Parquet (docs/trace-format.md); also bundled:NAME",
             "options": {}}]
    for name in importer_names():
        module = importer(name)
        data.append({"name": name, "summary": module.SUMMARY, "options": dict(module.OPTIONS)})

    def render(items: list[dict[str, Any]]) -> str:
        out = []
        for item in items:
            out.append(f"{item['name']:14s} {item['summary']}")
            for opt, text in item["options"].items():
                out.append(f"{'':16s}--option {opt}=...  {text}")
        return "\n".join(out)

    emit(args, data, render)
    return 0
