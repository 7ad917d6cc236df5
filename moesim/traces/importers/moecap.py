"""MoE-CAP expert-distribution recordings (moe_cap/extracted_expert_dist upstream): per_token and per_pass.

MoE-CAP's recorder (adapted from SGLang's expert distribution recorder) keeps one record per
forward pass and rank; this importer reads them as JSONL (one record per line) or as one JSON
object `{"records": [...], ...}`:

- per_token: `{"forward_pass_id": 7, "rank": 0, "topk_ids": [[[3, 9], [1, 4], ...], ...],
  "num_tokens": T, "topk": K}`: topk_ids is [layers][tokens][top-k], padded with -1 (a layer with
  fewer tokens, or none: a dense layer). Lossless for routing: each token's experts at each layer.
- per_pass: `{"forward_pass_id": 7, "rank": 0, "expert_counts": [[...], ...], ...}`: how many tokens
  each expert served at each layer in that pass. **Lossy** (meta.extra.lossy says so): which token
  chose which experts is gone; tokens = count sum / top_k (`--option top_k`, or the record's
  `topk`), experts dealt to tokens round-robin (every token top-k distinct experts, every expert its
  count), as the moe-infinity importer does.

One pass per forward_pass_id (`--pass-by column:forward_pass_id`), layers that hold no tokens are
left out (their numbers kept in meta.layer_ids), one rank kept (the lowest unless --option rank=N).
A `forward_mode` field (prefill / extend / decode), when every record has one, gives the phase; otherwise the
first pass of more than one token is prefill. The records name no request: one sequence, positions
counted in order. No sizes: `--option model=...` or `--option expert_bytes=...`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.common import read_text
from moesim.traces.importers.log_import import ROW_OPTIONS, FileFacts, frames_to_rows, pass_options, rows_to_trace
from moesim.traces.importers.log_read import LogFile, expand_inputs, json_object_lines
from moesim.traces.importers.options import Options
from moesim.traces.format.trace import Trace

NAME = "moecap"
SUMMARY = "MoE-CAP expert-distribution records, JSONL or JSON: per_token (topk_ids) or per_pass (expert_counts, lossy)"
OPTIONS = {
    "rank": "keep records of this rank (default: the lowest)",
    **{k: v for k, v in ROW_OPTIONS.items() if k not in ("layer_from_filename", "request_from_filename")},
}
MANY_FILES = True
LOSSY_NOTE = ("MoE-CAP per_pass counts: tokens = count sum / top_k, experts dealt to tokens round-robin; "
              "which token chose which experts is not in the source")


def sniff(path: Path) -> bool:
    try:
        if not path.is_file() or path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
            return False
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    return '"forward_pass_id"' in head and ('"topk_ids"' in head or '"expert_counts"' in head)


def load(path: Path, options: Options) -> Trace:
    paths = expand_inputs(path)
    raw = [_records(p) for p in paths]
    ranks = [r.get("rank") for recs, _ in raw for r in recs if isinstance(r.get("rank"), int)]
    rank = options.int("rank", None)
    if rank is None and ranks:
        rank = min(ranks)
    top_k = options.int("top_k", None, minimum=1)
    files, lossy = [], False
    for p, (recs, lines) in zip(paths, raw):
        rows: list[dict[str, Any]] = []
        row_lines: list[int] = []
        for rec, line in zip(recs, lines):
            if rank is not None and rec.get("rank", rank) != rank:
                continue
            where = f"{p.name}: line {line}"
            if "topk_ids" in rec:
                made = _per_token(rec, where)
            elif "expert_counts" in rec:
                made, lossy = _per_pass(rec, top_k, where), True
            else:
                raise UserError("the record holds neither topk_ids (per_token mode) nor expert_counts (per_pass "
                                "mode); other MoE-CAP logs carry no expert ids", where)
            rows.extend(made)
            row_lines.extend([line] * len(made))
        if rows:
            files.append(LogFile(p.name, pd.DataFrame.from_records(rows), np.asarray(row_lines, dtype=np.int64)))
    if not files:
        raise UserError(f"no routed tokens in the records of rank {rank}", str(paths[0]))
    columns = {"layer": "layer", "experts": "experts", "pass": "forward_pass_id"}
    if all("forward_mode" in f.frame.columns and f.frame["forward_mode"].notna().all() for f in files):
        columns["phase"] = "forward_mode"
    rule, _, _ = pass_options(options, columns)
    collected = frames_to_rows(files, [FileFacts() for _ in files], columns, options, rule)
    return rows_to_trace(collected, options, columns, {}, NAME, paths, more_provenance={"rank": rank},
                         lossy=LOSSY_NOTE if lossy else None)


def _records(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    where = str(path)
    text = read_text(path)
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise UserError(f"not valid JSON ({str(exc)[:120]})", where) from None
        recs = obj.get("records") if isinstance(obj, dict) else obj
        if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
            raise UserError("expected {\"records\": [...]} or a list of records", where)
        return recs, list(range(1, len(recs) + 1))
    recs, lines = [], []
    for number, obj in json_object_lines(text, where):
        recs.append(obj)
        lines.append(number)
    if not recs:
        raise UserError("no records", where)
    return recs, lines


def _base(rec: dict[str, Any], where: str) -> dict[str, Any]:
    if "forward_pass_id" not in rec:
        raise UserError("a record needs forward_pass_id", where)
    base = {"forward_pass_id": rec["forward_pass_id"]}
    if "forward_mode" in rec:
        base["forward_mode"] = rec["forward_mode"]
    return base


def _per_token(rec: dict[str, Any], where: str) -> list[dict[str, Any]]:
    ids = rec["topk_ids"]
    if not isinstance(ids, list) or not all(isinstance(layer, list) for layer in ids):
        raise UserError("field 'topk_ids' must be [layers][tokens][top-k]", where)
    base = _base(rec, where)
    rows = []
    for layer, tokens in enumerate(ids):
        for token in tokens:
            if not isinstance(token, list):
                raise UserError(f"field 'topk_ids': layer {layer} holds {str(token)[:40]!r}, not a list", where)
            experts = [e for e in token if not (isinstance(e, (int, float)) and e == -1)]
            if experts:  # an all -1 row is padding
                rows.append({**base, "layer": layer, "experts": experts})
    return rows


def _per_pass(rec: dict[str, Any], top_k: int | None, where: str) -> list[dict[str, Any]]:
    counts = rec["expert_counts"]
    k = top_k if top_k is not None else rec.get("topk")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError("per_pass records keep counts only: give --option top_k=K", where)
    try:
        c = np.asarray(counts, dtype=np.float64)
    except (ValueError, TypeError):
        raise UserError("field 'expert_counts' must be [layers][experts] numbers", where) from None
    if c.ndim != 2 or not np.isfinite(c).all() or (c < 0).any() or (c != np.round(c)).any():
        raise UserError("field 'expert_counts' must be [layers][experts] non-negative integers", where)
    base = _base(rec, where)
    rows = []
    for layer in range(c.shape[0]):
        row = c[layer].astype(np.int64)
        total = int(row.sum())
        if total == 0:
            continue
        if total % k:
            raise UserError(f"layer {layer}: {total} routed slots is not a multiple of top_k {k}", where)
        n_tokens = total // k
        if int(row.max()) > n_tokens:
            raise UserError(f"layer {layer}: an expert serves {int(row.max())} of {n_tokens} tokens", where)
        dealt = np.repeat(np.arange(row.shape[0]), row)  # consecutive copies land on distinct tokens
        for t in range(n_tokens):
            rows.append({**base, "layer": layer, "experts": dealt[t::n_tokens].tolist()})
    return rows


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    return [
        Example.file("per-token", "record.jsonl",
                     '{"forward_pass_id": 0, "rank": 0, "forward_mode": "prefill", "topk_ids": [[[-1, -1]], '
                     '[[0, 3]], [[2, 1]]]}\n{"forward_pass_id": 1, "rank": 0, "topk_ids": [[[-1, -1]], [[1, 2]], '
                     '[[3, 0]]]}\n', top_k=2),
        Example.file("per-pass", "record.json",
                     '{"records": [{"forward_pass_id": 0, "rank": 0, "expert_counts": [[1, 1, 2, 0]]}, '
                     '{"forward_pass_id": 1, "rank": 0, "expert_counts": [[0, 1, 1, 0]]}]}', top_k=2),
    ]
