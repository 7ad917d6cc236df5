"""Load and save traces: the one entry point for every supported format.

    trace = load_trace("run.parquet")                        # moesim's own format
    trace = load_trace("qwen.route.csv")                     # BigMoeOnEdge, detected from the content
    trace = load_trace("routed.npy", format="vllm", prefill_len=28)
    trace = load_trace("bundled:qwen")                       # a trace shipped with moesim
    save_trace(trace, "out.parquet")                         # atomic, deterministic bytes

Detection looks at the path (a folder, the extension) and the first bytes; where two formats look
alike (an integer .npy may be vLLM routed experts or MoE-Infinity counts) it picks the documented
default and `format=` overrides. Every problem with the input is a UserError naming the file, and
the row or field where one applies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moesim.errors import UserError
from moesim.traces.format import parquet_codec
from moesim.traces.importers import IMPORTER_MODULES, importer, sniff_importer
from moesim.traces.importers.log_read import has_wildcard
from moesim.traces.importers.options import Options
from moesim.traces.format.trace import Trace

MOESIM_FORMAT = "moesim"
BUNDLED_PREFIX = "bundled:"


def format_names() -> list[str]:
    return [MOESIM_FORMAT, *IMPORTER_MODULES]


def save_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write `trace` as moesim Parquet (docs/trace-format.md). Validates first; writes atomically."""
    parquet_codec.write_trace(trace, Path(path))


def load_trace(path: str | os.PathLike[str], format: str | None = None, **options: Any) -> Trace:
    """Read a trace in any supported format (detected unless `format` is given); validated.

    `options` are the importer's (see `moesim traces formats`), e.g. prefill_len=28 for vLLM arrays
    or column_map="layer=lyr,experts=ids" for the generic CSV/JSONL importer.
    """
    text = os.fspath(path)
    if text.startswith(BUNDLED_PREFIX):
        from moesim.traces.format.bundled import bundled_trace_path

        if options:
            raise UserError("bundled traces take no options", text)
        if format not in (None, MOESIM_FORMAT):
            raise UserError(f"bundled traces are in the moesim format, not {format!r}", text)
        return parquet_codec.read_trace(bundled_trace_path(text[len(BUNDLED_PREFIX):]))
    p = Path(text)
    wildcard = not p.exists() and has_wildcard(text)
    if not p.exists() and not wildcard:
        raise UserError("no such file or folder", text)
    fmt = format or detect_format(p)
    if fmt == MOESIM_FORMAT:
        if p.is_dir() or wildcard:
            raise UserError("a moesim trace is one .parquet file, not a folder or a pattern", text)
        return with_sizes(parquet_codec.read_trace(p), options, text)
    if fmt not in IMPORTER_MODULES:
        raise UserError(f"unknown format {fmt!r}; known: {', '.join(format_names())}", "--format")
    module = importer(fmt)
    if wildcard and not getattr(module, "MANY_FILES", False):
        raise UserError(f"format {fmt!r} reads one file or folder, not a pattern", text)
    opts = Options(options, module.OPTIONS, fmt)
    return module.load(p, opts)


def with_sizes(trace: Trace, options: dict[str, Any], where: str) -> Trace:
    """A moesim trace with `expert_bytes` (one size or one per layer) replacing its object sizes,
    e.g. to give real sizes to a trace imported with 1-byte placeholders; no other option applies."""
    unknown = sorted(set(options) - {"expert_bytes"})
    if unknown:
        raise UserError(f"the moesim format takes only --option expert_bytes (got {', '.join(unknown)})", where)
    if "expert_bytes" not in options:
        return trace
    sizes = Options(options, {"expert_bytes": ""}, MOESIM_FORMAT).byte_sizes("expert_bytes", trace.meta.n_layers)
    assert sizes is not None
    trace.meta.object_bytes = sizes
    trace.meta.extra.pop("object_bytes_unknown", None)
    trace.meta.extra.pop("object_bytes_note", None)
    trace.meta.provenance["object_bytes_from"] = "--option expert_bytes"
    return trace


def detect_format(path: Path) -> str:
    """The format of `path` by its layout and content; UserError if nothing recognises it."""
    if path.is_file() and path.suffix.lower() == ".parquet":
        if parquet_codec.read_metadata(path) is not None:
            return MOESIM_FORMAT
    name = sniff_importer(path)
    if name is None:
        raise UserError(f"cannot tell this file's format; pass --format (one of {', '.join(format_names())})",
                        str(path))
    return name
