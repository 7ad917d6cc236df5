"""Real traces that ship with moesim (moesim/traces/data/*.parquet), by short name.

    load_bundled("qwen")          # also load_trace("bundled:qwen")

Each was converted from a public, Apache-2.0 recording by the importer named below; NOTICE at the
repository root gives the attribution. `python -m moesim.traces.format.bundled SHARED_TRACES_DIR` rebuilds
the files from the raw recordings (the conversion is deterministic: same bytes every time).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from moesim.errors import UserError
from moesim.traces.format import parquet_codec
from moesim.traces.format.trace import Trace

DATA_DIR = Path(__file__).resolve().parents[1] / "data"  # moesim/traces/data


@dataclass(frozen=True)
class BundledSource:
    """Where a bundled trace came from and how it was converted."""

    format: str
    raw_path: str  # relative to the shared traces folder the raw recordings live in
    url: str
    commit: str
    upstream_path: str
    licence: str
    description: str


_BIGMOE = ("https://github.com/Helldez/BigMoeOnEdge", "36020f2f127f061f837fa2ff430e9d1d745438f9")
_STRATA = ("https://github.com/Labeeb2339/stratamoe-lab", "56039d32daac402fcd5fed134c3e024f0ee160b0")

BUNDLED: dict[str, BundledSource] = {
    "qwen": BundledSource(
        "bigmoeonedge", "bigmoeonedge/qwen.route.csv", *_BIGMOE,
        "docs/bench-data/2026-07-15-route-trace/qwen.route.csv", "Apache-2.0",
        "Qwen3-30B-A3B Q4_K_M on a phone (llama.cpp-based engine, experts streamed from flash), top-k 8->6, "
        "48 MoE layers x 128 experts, 28 prompt + 128 decode tokens, engine cache 4000 MiB"),
    "gemma": BundledSource(
        "bigmoeonedge", "bigmoeonedge/gemma.route.csv", *_BIGMOE,
        "docs/bench-data/2026-07-15-route-trace/gemma.route.csv", "Apache-2.0",
        "gemma-4-26B-A4B-it Q4_K_M on the same phone and engine, top-k 8->6, 30 MoE layers x 128 experts, "
        "29 prompt + 128 decode tokens, engine cache 4000 MiB"),
    "switch-base-8": BundledSource(
        "stratamoe", "stratamoe-switch-base-8/router-trace.v2.json", *_STRATA,
        "evidence/switch-base-8/router-trace.v2.json", "Apache-2.0",
        "google/switch-base-8 encoder routers on CPU (fp32), 10 prompts, 215 tokens, 6 sparse layers x 8 "
        "experts, top-1; prefill only"),
}


def bundled_names() -> list[str]:
    """Names of the bundled traces present in this installation."""
    return sorted(name for name in BUNDLED if (DATA_DIR / f"{name}.parquet").is_file())


def bundled_trace_path(name: str) -> Path:
    path = DATA_DIR / f"{name}.parquet"
    if name not in BUNDLED or not path.is_file():
        raise UserError(f"no bundled trace {name!r}; bundled: {', '.join(bundled_names()) or 'none'}",
                        f"bundled:{name}")
    return path


def load_bundled(name: str) -> Trace:
    return parquet_codec.read_trace(bundled_trace_path(name))


def build_bundled(name: str, shared_traces_dir: Path) -> Trace:
    """Import bundled trace `name` from its raw recording and add the upstream attribution."""
    from moesim.traces.format.io import load_trace

    source = BUNDLED[name]
    trace = load_trace(shared_traces_dir / source.raw_path, format=source.format)
    trace.meta.provenance.update({
        "upstream": source.url,
        "upstream_commit": source.commit,
        "upstream_path": source.upstream_path,
        "licence": source.licence,
        "description": source.description,
    })
    return trace


def write_bundled(shared_traces_dir: Path, out_dir: Path = DATA_DIR) -> list[Path]:
    """(Re)write every bundled trace from the raw recordings under `shared_traces_dir`."""
    written = []
    for name in BUNDLED:
        path = out_dir / f"{name}.parquet"
        parquet_codec.write_trace(build_bundled(name, shared_traces_dir), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rebuild moesim's bundled traces from the raw recordings")
    parser.add_argument("shared_traces_dir", type=Path,
                        help="folder holding bigmoeonedge/ and stratamoe-switch-base-8/")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="where to write the .parquet files")
    args = parser.parse_args(argv)
    for path in write_bundled(args.shared_traces_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
