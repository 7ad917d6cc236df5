"""FLAME-MoE dense router-score CSVs (Hugging Face dataset CMU-FLAME/FLAME-MoE-Traces).

Layout: a folder with one Layer_L subfolder per MoE layer L, each holding one score CSV (the
*_stats.csv/.txt files beside it are summaries and are skipped) with header
layer_id, token_id, expert_0 .. expert_{E-1}. Each row is a token; its non-zero scores are the
un-renormalised softmax scores of the experts it routed to.

Mapping: trace layers are the Layer_L folders in ascending L (meta.layer_ids keeps the real L; the
layer_id column is always 0 in the published files and is ignored). A token's experts are its
non-zero scores ordered by score, highest first (ties by expert id); the scores become the gate
weights; top_k is the number of non-zeros, which must be the same on every row. Rows are
sequences of `seq_len` consecutive tokens (row = sequence * seq_len + position; 512 for the
published sample, 4 sequences); each sequence is one request served by one prefill pass
(teacher-forced pretraining text: no decode). Sizes are not in the files: they come from the model
catalog entry named by the file prefix (flame-moe-290m), or --option expert_bytes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.assemble import Routes, assemble
from moesim.traces.importers.common import (float_column, integer_column, object_bytes, provenance, read_csv_text,
                                            sha256_of)
from moesim.traces.importers.options import Options
from moesim.traces.format.trace_meta import PREFILL, TraceMeta

NAME = "flame"
SUMMARY = "FLAME-MoE router-score folder (Layer_L/*.csv, dense scores, non-zeros = routed experts)"
OPTIONS = {
    "seq_len": "tokens per sequence; rows are sequence-major (default 512, the published sample's layout)",
    "expert_bytes": "bytes per expert: one size or one per layer (e.g. '4 MiB'); default from the model catalog",
}
LAYER_DIR = re.compile(r"^Layer_(\d+)$")
EXPERT_COLUMN = re.compile(r"^expert_(\d+)$")
RUN = re.compile(r"^(?P<model>.+?)_runid(?P<run>\d+)_epoch(?P<iter>\d+)_")
DEFAULT_SEQ_LEN = 512


def sniff(path: Path) -> bool:
    try:
        return path.is_dir() and any(LAYER_DIR.match(p.name) and p.is_dir() for p in path.iterdir())
    except OSError:
        return False


def load(path: Path, options: Options) -> Any:
    where = str(path)
    seq_len = options.int("seq_len", DEFAULT_SEQ_LEN, minimum=1)
    layer_dirs = sorted(((int(m.group(1)), p) for p in path.iterdir()
                         if p.is_dir() and (m := LAYER_DIR.match(p.name))), key=lambda x: x[0])
    if not layer_dirs:
        raise UserError("no Layer_<n> subfolders", where)
    files = [_score_file(d) for _, d in layer_dirs]
    tops, weights = [], []
    n_experts = n_rows = top_k = None
    for file in files:
        top, w, e = _read_layer(file)
        fw = str(file)
        if n_experts is None:
            n_experts, n_rows, top_k = e, top.shape[0], top.shape[1]
        elif e != n_experts or top.shape[0] != n_rows or top.shape[1] != top_k:
            raise UserError(f"{top.shape[0]} tokens x {e} experts at top-{top.shape[1]}, but the first layer has "
                            f"{n_rows} x {n_experts} at top-{top_k}", fw)
        tops.append(top)
        weights.append(w)
    assert n_rows is not None and top_k is not None and n_experts is not None
    if n_rows % seq_len:
        raise UserError(f"{n_rows} tokens do not split into sequences of {seq_len} (--option seq_len)", where)
    n_layers = len(files)
    routes = _routes(np.stack(tops), np.stack(weights), seq_len)
    extra: dict[str, Any] = {}
    run = RUN.match(files[0].name)
    sizes, size_note = object_bytes(options, run.group("model") if run else None, n_layers, n_experts, extra)
    meta = TraceMeta(
        n_layers=n_layers,
        n_experts=n_experts,
        top_k=top_k,
        object_bytes=sizes,
        model=run.group("model") if run else None,
        layer_ids=[layer for layer, _ in layer_dirs],
        provenance=provenance("FLAME-MoE router scores", path, sha256_of(files, root=path),
                              run_id=int(run.group("run")) if run else None,
                              iteration=int(run.group("iter")) if run else None,
                              sequences=n_rows // seq_len, seq_len=seq_len, object_bytes_from=size_note),
        extra=extra,
    )
    return assemble(routes, meta, where, line_word="token")


def _score_file(folder: Path) -> Path:
    files = sorted(p for p in folder.glob("*.csv") if not p.name.endswith("_stats.csv"))
    if len(files) != 1:
        raise UserError(f"expected one score CSV (besides *_stats.csv), found {len(files)}", str(folder))
    return files[0]


def _read_layer(file: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(experts [tokens, k] by descending score, their scores, n_experts) of one layer's CSV."""
    where = str(file)
    frame = read_csv_text(file, 0, where)
    if "token_id" not in frame.columns:
        raise UserError("missing column 'token_id'", where)
    columns = {int(m.group(1)): c for c in frame.columns if (m := EXPERT_COLUMN.match(c))}
    n_experts = len(columns)
    if not n_experts or sorted(columns) != list(range(n_experts)):
        raise UserError("the expert_<i> columns must be expert_0 .. expert_<E-1>", where)
    if n_experts > np.iinfo(np.int32).max or len(frame) == 0:
        raise UserError("no token rows, or too many experts", where)
    token_id = integer_column(frame, "token_id", where, 2)
    order = np.argsort(token_id, kind="stable")
    if not np.array_equal(token_id[order], np.arange(len(frame))):
        i = int(order[np.flatnonzero(token_id[order] != np.arange(len(frame)))[0]])
        raise UserError(f"field 'token_id': {token_id[i]} breaks the numbering 0..{len(frame) - 1}",
                        f"{where}: line {i + 2}")
    scores = np.stack([float_column(frame, columns[e], where, 2) for e in range(n_experts)], axis=1)[order]
    negative = np.argwhere(scores < 0)
    if negative.size:
        t, e = (int(v) for v in negative[0])
        raise UserError(f"field 'expert_{e}': negative score {scores[t, e]}", f"{where}: line {int(order[t]) + 2}")
    k_per_row = np.count_nonzero(scores, axis=1)
    if k_per_row[0] == 0 or (k_per_row != k_per_row[0]).any():
        t = 0 if k_per_row[0] == 0 else int(np.flatnonzero(k_per_row != k_per_row[0])[0])
        raise UserError(f"{int(k_per_row[t])} non-zero scores; every token needs the same number "
                        f"({int(k_per_row[0])} on token 0)", f"{where}: line {int(order[t]) + 2}")
    k = int(k_per_row[0])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(scores, top, axis=1), n_experts


def _routes(top: np.ndarray, weight: np.ndarray, seq_len: int) -> Routes:
    """Rows sequence by sequence, layer-major inside a sequence's prefill pass."""
    n_layers, n_tokens, k = top.shape
    n_seq = n_tokens // seq_len
    seq = np.repeat(np.arange(n_seq), n_layers * seq_len)
    layer = np.tile(np.repeat(np.arange(n_layers), seq_len), n_seq)
    pos = np.tile(np.arange(seq_len), n_seq * n_layers)
    token = seq * seq_len + pos
    new_pass = np.zeros(token.size, dtype=bool)
    new_pass[:: n_layers * seq_len] = True
    return Routes(
        line=token,
        new_pass=new_pass,
        phase=np.full(token.size, PREFILL, dtype=np.int64),
        request=seq,
        position=pos,
        layer=layer,
        expert_offsets=np.arange(token.size + 1, dtype=np.int64) * k,
        expert=top[layer, token].reshape(-1).astype(np.int64),
        weight=weight[layer, token].reshape(-1),
    )


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    layer_csv = b"layer_id,token_id,expert_0,expert_1,expert_2\n0,0,0.1,0.0,0.5\n0,1,0.0,0.2,0.3\n"
    return [Example("folder", {f"Layer_{n}/toy_runid1_epoch1_layer{n}.csv": layer_csv for n in (2, 3)}, "",
                    {"seq_len": 1})]
