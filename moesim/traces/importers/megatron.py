"""Megatron-Core router traces (`--moe-routing-trace-path`): JSONL, one record per (step, layer).

Megatron-Core's router tracer (megatron/core/transformer/moe/router_trace.py upstream) writes one
JSONL file per rank, one record per (step, block, layer):

    {"step": 0, "stage": "pre_dispatch", "block": "decoder", "layer": 3, "rank": 0,
     "num_tokens": 128, "topk": 8, "top_indices": [[12, 45, ...], ...]}

Each record is one cell: `num_tokens` tokens, each with its top-k expert ids. This importer makes
a step one pass (`--pass-by column:step`), keeps one stage (the first one in the file unless
`--option stage=...`), decoder records only (multi-token-prediction records, which carry `mtp_idx`,
are left out), and one rank (the lowest unless `--option rank=N`: tensor-parallel ranks repeat the
same tokens). The records name no request or position: the tokens are one sequence, positions
counted in order, and a step is prefill when it is the first and holds more than one token
(`--option phase=...` / `prompt_len` override). Layer numbers are Megatron's, kept in
meta.layer_ids. No sizes: `--option model=...` or `--option expert_bytes=...`.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.common import read_text
from moesim.traces.importers.log_import import ROW_OPTIONS, FileFacts, frames_to_rows, pass_options, rows_to_trace
from moesim.traces.importers.log_read import LogFile, expand_inputs, json_object_lines
from moesim.traces.importers.options import Options
from moesim.traces.format.trace import Trace

NAME = "megatron"
SUMMARY = ("Megatron-Core router trace JSONL (step, stage, layer, rank, num_tokens, topk, top_indices); "
           "one file per rank")
OPTIONS = {
    "stage": "keep records of this stage (default: the first stage in the file, e.g. pre_dispatch)",
    "rank": "keep records of this rank (default: the lowest rank; tensor-parallel ranks repeat the same tokens)",
    **{k: v for k, v in ROW_OPTIONS.items() if k not in ("layer_from_filename", "request_from_filename")},
}
MANY_FILES = True
REQUIRED = ("step", "layer", "top_indices")


def sniff(path: Path) -> bool:
    try:
        if not path.is_file() or path.suffix.lower() not in (".jsonl", ".ndjson"):
            return False
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return '"top_indices"' in head and '"step"' in head


def load(path: Path, options: Options) -> Trace:
    paths = expand_inputs(path)
    files = []
    for p in paths:
        frame, lines = _read(p)
        files.append(LogFile(p.name, frame, lines))
    frame_all = pd.concat([f.frame for f in files], ignore_index=True, sort=False)
    stage = options.text("stage") or (str(frame_all["stage"].iloc[0]) if "stage" in frame_all else None)
    ranks = frame_all["rank"] if "rank" in frame_all else None
    rank = options.int("rank", None)
    if rank is None and ranks is not None:
        rank = int(pd.to_numeric(ranks, errors="coerce").min())
    kept = []
    for f in files:
        keep = np.ones(len(f.frame), dtype=bool)
        if stage is not None and "stage" in f.frame:
            keep &= f.frame["stage"].astype(str).to_numpy() == stage
        if rank is not None and "rank" in f.frame:
            keep &= pd.to_numeric(f.frame["rank"], errors="coerce").to_numpy() == rank
        if "block" in f.frame:
            keep &= f.frame["block"].fillna("decoder").astype(str).to_numpy() == "decoder"
        if "mtp_idx" in f.frame:
            keep &= f.frame["mtp_idx"].isna().to_numpy()
        kept.append(_explode(LogFile(f.name, f.frame.loc[keep].reset_index(drop=True), f.lines[keep])))
    if not any(len(f.frame) for f in kept):
        raise UserError(f"no decoder records of stage {stage!r} and rank {rank}", str(paths[0]))
    kept = [f for f in kept if len(f.frame)] or kept
    columns = {"layer": "layer", "experts": "experts", "pass": "step"}
    rule, _, _ = pass_options(options, columns)
    collected = frames_to_rows(kept, [FileFacts() for _ in kept], columns, options, rule)
    return rows_to_trace(collected, options, columns, {}, NAME, paths,
                         more_provenance={"stage": stage, "rank": rank, "block": "decoder"})


def _read(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    where = str(path)
    records, lines = [], []
    for number, obj in json_object_lines(read_text(path), where):
        missing = [k for k in REQUIRED if k not in obj]
        if missing:
            raise UserError(f"a router trace record needs {', '.join(REQUIRED)}; missing {', '.join(missing)}",
                            f"{where}: line {number}")
        records.append(obj)
        lines.append(number)
    if not records:
        raise UserError("no records", where)
    return pd.DataFrame.from_records(records), np.asarray(lines, dtype=np.int64)


def _explode(f: LogFile) -> LogFile:
    """One row per token: the record's step and layer, the token's expert list."""
    steps, layers, experts, lines = [], [], [], []
    for r, (step, layer, top, n) in enumerate(zip(f.frame["step"], f.frame["layer"], f.frame["top_indices"],
                                                  f.frame["num_tokens"] if "num_tokens" in f.frame
                                                  else [None] * len(f.frame))):
        where = f"{f.name}: line {int(f.lines[r])}"
        if not isinstance(top, list) or not all(isinstance(t, list) for t in top):
            raise UserError("field 'top_indices' must be a list of lists (tokens x top-k)", where)
        if n is not None and n == n and (not isinstance(n, (int, float)) or n != len(top)):  # no int(): inf
            raise UserError(f"num_tokens is {n} but top_indices holds {len(top)} tokens", where)
        steps.extend([step] * len(top))
        layers.extend([layer] * len(top))
        experts.extend(top)
        lines.extend([int(f.lines[r])] * len(top))
    frame = pd.DataFrame({"step": pd.Series(steps, dtype=object), "layer": pd.Series(layers, dtype=object),
                          "experts": pd.Series(experts, dtype=object)})
    return LogFile(f.name, frame, np.asarray(lines, dtype=np.int64))


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    return [Example.file("jsonl", "router_trace.jsonl",
                         '{"step": 0, "stage": "pre_dispatch", "block": "decoder", "layer": 1, "rank": 0, '
                         '"num_tokens": 2, "topk": 2, "top_indices": [[0, 1], [2, 3]]}\n'
                         '{"step": 1, "stage": "pre_dispatch", "block": "decoder", "layer": 1, "rank": 0, '
                         '"num_tokens": 1, "topk": 2, "top_indices": [[3, 1]]}\n')]
