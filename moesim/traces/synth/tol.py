"""Token-indexed memory (ToL) workloads: MemoryLLM-style per-layer lookup tables indexed by token id.

MemoryLLM (Jaiswal et al., arXiv 2602.00398) trains its feed-forward blocks on context-free token
embeddings, so each layer's FFN output for a token can be precomputed once per vocabulary entry: a
token-wise lookup table (ToL) with one row per token id per layer, kept in storage and moved to the
accelerator on demand. For a cache simulator that is an MoE trace in disguise: at every layer a
token "routes" to exactly one object, the row of its own id. So a ToL trace is a moesim Trace with
meta.kind = "tol", n_experts = vocabulary size, top_k = 1, object = (layer, row), object_bytes = the
row size (MemoryLLM-1B: hidden 2048 in fp16 = 4 KiB per row, 24 layers x ~128k rows = 12.6 GB), no
gate weights. It replays with the same cache core and policies as any MoE trace.

Requests: each token sequence is one request: its first `prefill` tokens form one prefill pass, the
next `decode` tokens one decode pass each (the sequence's own tokens stand in for the generated ones).
With `batch` B, requests are served in groups of B: one prefill pass holding the group's prompts,
then decode pass j holding token j of every request of the group that still has one.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.synth.byte_tokenizer import ByteTokenizer
from moesim.traces.format.trace_meta import DECODE, KIND_TOL, PREFILL, TraceMeta, expert_dtype
from moesim.traces.format.trace import Trace

CORPUS_FILE = "tol_corpus.txt"
CORPUS_VOCAB = 1024


@dataclass(frozen=True)
class TolShape:
    """What a ToL workload looks like; sizes in bytes."""

    n_layers: int
    row_bytes: int
    prefill: int = 32
    decode: int = 64
    batch: int = 1

    def check(self) -> None:
        if self.n_layers < 1:
            raise UserError(f"must be at least 1 (got {self.n_layers})", "--layers")
        if self.row_bytes < 1:
            raise UserError(f"must be at least 1 byte (got {self.row_bytes})", "--row-bytes")
        if self.prefill < 1:
            raise UserError(f"must be at least 1 (got {self.prefill})", "--prefill")
        if self.decode < 0:
            raise UserError(f"must be 0 or more (got {self.decode})", "--decode")
        if self.batch < 1:
            raise UserError(f"must be at least 1 (got {self.batch})", "--batch")


# ---- token sources ---------------------------------------------------------------------------------
def zipf_sequences(n_requests: int, length: int, vocab: int, s: float, seed: int = 0) -> list[np.ndarray]:
    """Independent Zipf(s) token draws: P(rank r) ~ r^-s over the vocabulary.

    Ranks map to ids through a seeded permutation, so the hot rows are not simply ids 0, 1, 2...
    """
    if vocab < 1:
        raise UserError(f"must be at least 1 (got {vocab})", "--vocab")
    if not np.isfinite(s) or s < 0:
        raise UserError(f"the Zipf exponent must be a finite number >= 0 (got {s})", "--zipf")
    if n_requests < 1 or length < 1:
        raise UserError("a Zipf workload needs at least one request of one token", "--requests")
    rng = np.random.default_rng(seed)
    weights = np.arange(1, vocab + 1, dtype=np.float64) ** -s
    rank_to_id = rng.permutation(vocab)
    ranks = rng.choice(vocab, size=(n_requests, length), p=weights / weights.sum())
    return [rank_to_id[row].astype(np.int32) for row in ranks]


@functools.lru_cache(maxsize=4)
def _bundled(vocab_size: int) -> tuple[ByteTokenizer, tuple[np.ndarray, ...]]:
    text = resources.files("moesim.traces.synth").joinpath("data", CORPUS_FILE).read_text(encoding="utf-8")
    return _text_sequences(text, vocab_size)


def corpus_sequences(vocab_size: int = CORPUS_VOCAB) -> tuple[ByteTokenizer, list[np.ndarray]]:
    """The bundled corpus (original prose written for moesim), one request per paragraph.

    The byte-level BPE is trained on the corpus itself, so `vocab_size` rows per layer exist.
    """
    tokenizer, seqs = _bundled(int(vocab_size))
    return tokenizer, [s.copy() for s in seqs]


def _text_sequences(text: str, vocab_size: int) -> tuple[ByteTokenizer, tuple[np.ndarray, ...]]:
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    tokenizer = ByteTokenizer.train("\n\n".join(paragraphs), vocab_size)
    return tokenizer, tuple(tokenizer.encode(p) for p in paragraphs)


def read_token_file(path: str | Path, vocab_size: int | None = None) -> tuple[list[np.ndarray], int | None]:
    """Token sequences from a file, one per request; returns (sequences, vocabulary size if known).

    - .jsonl: one JSON list of token ids per non-empty line;
    - .npy: a 1-D array (one sequence) or a 2-D array (one sequence per row) of non-negative integers;
    - anything else: UTF-8 text, paragraphs separated by blank lines, tokenised with the byte-level
      BPE trained on the file itself to `vocab_size` ids (default 1024).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file", str(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path), None
    if suffix == ".npy":
        return _read_npy(path), None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from None
    if not text.strip():
        raise UserError("holds no text", str(path))
    tokenizer, seqs = _text_sequences(text, vocab_size or CORPUS_VOCAB)
    return list(seqs), tokenizer.vocab_size


def _read_jsonl(path: Path) -> list[np.ndarray]:
    seqs = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UserError(f"not valid JSON ({exc.msg})", where) from None
        if not isinstance(value, list) or not value:
            raise UserError("expected a non-empty list of token ids", where)
        for i, tok in enumerate(value):
            if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
                raise UserError(f"token {i} is {tok!r}, not a non-negative integer", where)
        seqs.append(np.asarray(value, dtype=np.int64))
    if not seqs:
        raise UserError("holds no token sequences", str(path))
    return seqs


def _read_npy(path: Path) -> list[np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read as a numpy array: {exc}", str(path)) from None
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2) or arr.size == 0:
        raise UserError(f"expected a non-empty 1-D or 2-D integer array, got {arr.dtype} {arr.shape}", str(path))
    if (arr < 0).any():
        raise UserError(f"token ids must be non-negative (found {int(arr.min())})", str(path))
    return [np.asarray(row, dtype=np.int64) for row in (arr[None, :] if arr.ndim == 1 else arr)]


# ---- the trace ---------------------------------------------------------------------------------
def tol_trace(sequences: list[np.ndarray], vocab: int, shape: TolShape,
              provenance: dict[str, Any] | None = None, model: str = "tol") -> Trace:
    """A ToL trace: every token of every pass looks up row = its id at each of `shape.n_layers` layers."""
    shape.check()
    if not sequences:
        raise UserError("no token sequences", "tokens")
    if vocab < 1:
        raise UserError(f"must be at least 1 (got {vocab})", "--vocab")
    for r, seq in enumerate(sequences):
        if seq.size == 0:
            raise UserError("empty token sequence", f"request {r}")
        top = int(seq.max())
        if top >= vocab:
            raise UserError(f"token id {top} is outside the vocabulary of {vocab} rows", f"request {r}")
    # passes as (phase, request ids, positions); token ids are looked up from the positions
    phases: list[int] = []
    pass_req: list[np.ndarray] = []
    pass_pos: list[np.ndarray] = []
    for start in range(0, len(sequences), shape.batch):
        group = range(start, min(start + shape.batch, len(sequences)))
        n_pre = {r: min(shape.prefill, sequences[r].size) for r in group}
        phases.append(PREFILL)
        pass_req.append(np.concatenate([np.full(n_pre[r], r) for r in group]))
        pass_pos.append(np.concatenate([np.arange(n_pre[r]) for r in group]))
        for j in range(shape.decode):
            live = [r for r in group if n_pre[r] + j < sequences[r].size]
            if not live:
                break
            phases.append(DECODE)
            pass_req.append(np.asarray(live))
            pass_pos.append(np.asarray([n_pre[r] + j for r in live]))
    token_request = np.concatenate(pass_req).astype(np.int32)
    token_position = np.concatenate(pass_pos).astype(np.int32)
    starts = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum([s.size for s in sequences], out=starts[1:])
    flat = np.concatenate(sequences)
    token_id = flat[starts[token_request] + token_position]
    n_p, n_l = len(phases), shape.n_layers
    tokens_per_pass = np.array([r.size for r in pass_req], dtype=np.int64)
    pass_token_offsets = np.zeros(n_p + 1, dtype=np.int64)
    np.cumsum(tokens_per_pass, out=pass_token_offsets[1:])
    # every pass has one cell per layer, each holding all the pass's tokens, one row per token
    cell_pass = np.repeat(np.arange(n_p, dtype=np.int64), n_l)
    cell_tokens = tokens_per_pass[cell_pass]
    cell_offsets = np.zeros(n_p * n_l + 1, dtype=np.int64)
    np.cumsum(cell_tokens, out=cell_offsets[1:])
    access_cell = np.repeat(np.arange(n_p * n_l, dtype=np.int64), cell_tokens)
    within = np.arange(access_cell.size, dtype=np.int64) - cell_offsets[access_cell]
    expert = token_id[pass_token_offsets[cell_pass[access_cell]] + within]
    meta = TraceMeta(
        n_layers=n_l,
        n_experts=int(vocab),
        top_k=1,
        object_bytes=[int(shape.row_bytes)] * n_l,
        kind=KIND_TOL,
        model=model,
        provenance=dict(provenance or {}),
        extra={"row_bytes": int(shape.row_bytes), "prefill": shape.prefill, "decode": shape.decode,
               "batch": shape.batch, "requests": len(sequences)},
    )
    trace = Trace(
        meta=meta,
        pass_phase=np.asarray(phases, dtype=np.int8),
        pass_cell_offsets=np.arange(n_p + 1, dtype=np.int64) * n_l,
        pass_token_offsets=pass_token_offsets,
        token_request=token_request,
        token_position=token_position,
        cell_layer=np.tile(np.arange(n_l, dtype=np.int16), n_p),
        cell_offsets=cell_offsets,
        cell_tokens=cell_tokens.astype(np.int32),
        expert=expert.astype(expert_dtype(int(vocab))),
    )
    trace.validate("ToL trace")
    return trace
