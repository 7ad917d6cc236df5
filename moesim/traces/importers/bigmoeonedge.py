"""BigMoeOnEdge `route_trace v1` CSV (github.com/Helldez/BigMoeOnEdge, docs/telemetry.md).

Layout: '#' preamble lines ("# route_trace v1"; "# model=... arch=... n_layer=N n_expert=E
n_expert_used=K"; one "# layer=i expert_bytes=B dense_bytes=D" per layer), then a CSV with one row
per routed expert: turn, phase, step, layer, slot, expert, weight, residency, expert_bytes.
Columns are read by name and extra columns are ignored, as the format asks of readers.

Mapping: request = turn; position = step (the absolute context position); a turn's prefill rows
form one pass (layer-major in the file, so its cells are the layers in file order); each decode
step is one pass. top_k = n_expert_used. Per-layer expert_bytes -> meta.object_bytes, dense_bytes
-> meta.dense_bytes. The engine's cache outcome (residency: 0 miss, 1 hit, 2 prefetch hit) is kept
as the int8 annotation "engine_residency". The run's cache size, when the .log, SOURCE.txt or the
.metrics summary beside the file gives it, goes to meta.extra["engine_cache_bytes"].
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.assemble import Routes, assemble
from moesim.traces.importers.common import (float_column, integer_column, provenance, read_csv_text,
                                            read_text, sha256_of)
from moesim.traces.importers.options import Options
from moesim.traces.format.trace_meta import DECODE, TraceMeta

NAME = "bigmoeonedge"
SUMMARY = "BigMoeOnEdge route_trace v1 CSV ('# route_trace v1' preamble), one row per routed expert"
OPTIONS = {
    "cache_mb": "the engine's cache size in MiB, when no .log/SOURCE.txt/.metrics beside the file says",
}
VERSION_LINE = "# route_trace v1"
REQUIRED = ("phase", "step", "layer", "expert")
RESIDENCY_CODES = {"0": "miss (read from flash)", "1": "hit", "2": "prefetch hit"}


def sniff(path: Path) -> bool:
    if not path.is_file() or path.suffix.lower() != ".csv":
        return False
    try:
        with path.open("rb") as f:
            return f.readline(64).startswith(b"# route_trace")
    except OSError:
        return False


def load(path: Path, options: Options) -> Any:
    where = str(path)
    text = read_text(path)
    lines = text.splitlines()
    preamble = _parse_preamble(lines, where)
    n_layers, n_experts, top_k = preamble["n_layer"], preamble["n_expert"], preamble["n_expert_used"]
    frame = read_csv_text(path, len(preamble["lines"]), where)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(f"missing column '{missing[0]}' (columns: {', '.join(frame.columns)})", where)
    first_line = len(preamble["lines"]) + 2
    n = len(frame)
    if n == 0:
        raise UserError("no routing rows after the header", where)

    def ints(name: str) -> np.ndarray:
        return integer_column(frame, name, where, first_line)

    phase, step, layer, expert = ints("phase"), ints("step"), ints("layer"), ints("expert")
    turn = ints("turn") if "turn" in frame.columns else np.zeros(n, dtype=np.int64)
    weight = float_column(frame, "weight", where, first_line) if "weight" in frame.columns else None
    annotations = {}
    if "residency" in frame.columns:
        residency = ints("residency")
        bad = np.flatnonzero((residency < -128) | (residency > 127))
        if bad.size:
            raise UserError(f"field 'residency': {residency[bad[0]]} does not fit int8",
                            f"{where}: line {first_line + int(bad[0])}")
        annotations["engine_residency"] = residency.astype(np.int8)

    new_pass = np.ones(n, dtype=bool)
    new_pass[1:] = ((turn[1:] != turn[:-1]) | (phase[1:] != phase[:-1])
                    | ((phase[1:] == DECODE) & (step[1:] != step[:-1])))
    routes = Routes(
        line=np.arange(first_line, first_line + n, dtype=np.int64),
        new_pass=new_pass,
        phase=phase,
        request=turn,
        position=step,
        layer=layer,
        expert_offsets=np.arange(n + 1, dtype=np.int64),
        expert=expert,
        weight=weight,
        annotations=annotations,
    )
    stem = path.name[: -len(".route.csv")] if path.name.endswith(".route.csv") else path.stem
    extra: dict[str, Any] = {}
    if annotations:
        extra["engine_residency_codes"] = RESIDENCY_CODES
    cache = _cache_size(path, stem, options)
    if cache is not None:
        mib, source = cache
        extra["engine_cache_mib"] = mib
        extra["engine_cache_bytes"] = int(round(mib * 2**20))
        extra["engine_cache_from"] = source
    model_path = preamble.get("model", "")
    model = Path(model_path).name.removesuffix(".gguf") if model_path else None
    meta = TraceMeta(
        n_layers=n_layers,
        n_experts=n_experts,
        top_k=top_k,
        object_bytes=preamble["expert_bytes"],
        model=model,
        dense_bytes=preamble["dense_bytes"],
        provenance=provenance("bigmoeonedge route_trace v1", path, sha256_of([path]),
                              model_file=Path(model_path).name if model_path else None,
                              arch=preamble.get("arch")),
        extra=extra,
    )
    return assemble(routes, meta, where)


def _parse_preamble(lines: list[str], where: str) -> dict[str, Any]:
    """The '#' lines at the top: version, model line, one size line per layer."""
    pre: list[str] = []
    for line in lines:
        if not line.startswith("#"):
            break
        pre.append(line)
    if not pre or pre[0].strip() != VERSION_LINE:
        first = pre[0].strip() if pre else (lines[0][:40] if lines else "")
        raise UserError(f"line 1 must be {VERSION_LINE!r}, found {first!r}", where)
    out: dict[str, Any] = {"lines": pre}
    sizes: dict[int, tuple[int, int]] = {}
    for i, line in enumerate(pre[1:], start=2):
        fields = dict(_pairs(line[1:]))
        if "layer" in fields:
            layer = _int_field(fields, "layer", f"{where}: line {i}")
            sizes[layer] = (_int_field(fields, "expert_bytes", f"{where}: line {i}", positive=True),
                            _int_field(fields, "dense_bytes", f"{where}: line {i}", minimum=0))
        elif "n_layer" in fields:
            for key in ("n_layer", "n_expert", "n_expert_used"):
                out[key] = _int_field(fields, key, f"{where}: line {i}", positive=True)
            out["model"] = fields.get("model", "")
            out["arch"] = fields.get("arch")
    if "n_layer" not in out:
        raise UserError("the preamble has no '# model=... n_layer=N n_expert=E n_expert_used=K' line", where)
    if out["n_expert_used"] > out["n_expert"] or out["n_layer"] > np.iinfo(np.int16).max \
            or out["n_expert"] > np.iinfo(np.int32).max:
        raise UserError("preamble: n_expert_used exceeds n_expert, or n_layer or n_expert is too large", where)
    missing = [layer for layer in range(out["n_layer"]) if layer not in sizes]
    extra = sorted(set(sizes) - set(range(out["n_layer"])))
    if missing or extra:
        what = f"no '# layer={missing[0]} expert_bytes=...' line" if missing else f"layer {extra[0]} beyond n_layer"
        raise UserError(f"preamble: {what}", where)
    out["expert_bytes"] = [sizes[layer][0] for layer in range(out["n_layer"])]
    out["dense_bytes"] = [sizes[layer][1] for layer in range(out["n_layer"])]
    return out


def _pairs(text: str) -> list[tuple[str, str]]:
    return [tuple(tok.split("=", 1)) for tok in text.split() if "=" in tok]  # type: ignore[misc]


def _int_field(fields: dict[str, str], key: str, where: str, positive: bool = False, minimum: int | None = None) -> int:
    if key not in fields:
        raise UserError(f"preamble: missing {key}=", where)
    try:
        value = int(fields[key])
    except ValueError:
        raise UserError(f"preamble: {key}={fields[key][:40]!r} is not an integer", where) from None
    if (positive and value <= 0) or (minimum is not None and value < minimum) or value > 2**62:
        raise UserError(f"preamble: {key}={value} is out of range", where)
    return value


def _cache_size(path: Path, stem: str, options: Options) -> tuple[float | int, str] | None:
    """The run's cache size in MiB and where it was found: --option, the .log's --cache-mb,
    SOURCE.txt's line for this run, or the .metrics summary's cache_budget_MiB."""
    if options.has("cache_mb"):
        return options.int("cache_mb", minimum=1), "--option cache_mb"  # type: ignore[return-value]
    folder = path.parent
    candidates = (
        (folder / f"{stem}.log", re.compile(r"--cache-mb[ =](\d+(?:\.\d+)?)")),
        (folder / "SOURCE.txt", re.compile(rf"^\s*{re.escape(stem)}\s*=.*?--cache-mb[ =](\d+(?:\.\d+)?)", re.M)),
        (folder / f"{stem}.metrics", re.compile(r"cache_budget_MiB=(\d+(?:\.\d+)?)")),
    )
    for file, pattern in candidates:
        try:
            content = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        match = pattern.search(content)
        if match:
            value = float(match.group(1))
            return (int(value) if value.is_integer() else value), file.name
    return None


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    return [Example.file("route-csv", "t.route.csv",
                         "# route_trace v1\n# model=/x/toy.gguf arch=toy n_layer=2 n_expert=4 n_expert_used=2\n"
                         "# layer=0 expert_bytes=100 dense_bytes=10\n# layer=1 expert_bytes=200 dense_bytes=10\n"
                         "turn,phase,step,layer,slot,expert,weight,residency,expert_bytes\n"
                         "0,0,0,0,0,1,0.6,0,100\n0,0,0,0,1,2,0.4,0,100\n0,0,0,1,0,3,0.7,0,200\n0,0,0,1,1,0,0.3,0,200\n"
                         "0,1,1,0,0,1,0.5,1,0\n0,1,1,0,1,3,0.5,0,100\n0,1,1,1,0,3,0.9,1,0\n0,1,1,1,1,2,0.1,0,200\n")]
