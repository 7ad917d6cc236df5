"""A small byte-level BPE tokenizer, so token-indexed workloads can be built from text with no downloads.

Ids 0..255 are the UTF-8 bytes; ids 256.. are byte-pair merges learned from a text (most frequent
adjacent pair first, ties to the smaller (left, right) pair, so training is deterministic). As in
GPT-2-style tokenizers, text is first cut into pieces (an optional space plus a word, a run of
punctuation, or a run of whitespace) and merges never cross a piece boundary, which keeps the learned
vocabulary word-like and its id frequencies Zipf-like. With no merges it is a plain byte tokenizer.

It is for workloads, not for running models: nothing here matches any model's real vocabulary.
Training costs O(merges x text length) numpy work (about a second for 1,000 merges on 20 kB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from moesim.errors import UserError

N_BYTES = 256
_PIECE = re.compile(r" ?\w+| ?[^\w\s]+|\s+", re.UNICODE)


@dataclass(frozen=True)
class ByteTokenizer:
    """Byte-level BPE: `merges[i]` = (left id, right id) that become id 256 + i."""

    merges: tuple[tuple[int, int], ...] = ()

    @property
    def vocab_size(self) -> int:
        return N_BYTES + len(self.merges)

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "ByteTokenizer":
        """Learn merges from `text` until the vocabulary has `vocab_size` ids (or no pair repeats)."""
        return cls._train(text, vocab_size)[0]

    @classmethod
    def train_and_encode(cls, text: str, vocab_size: int) -> tuple["ByteTokenizer", np.ndarray]:
        """Train on `text` and return its ids too (what encode(text) would give, without a second pass)."""
        return cls._train(text, vocab_size)

    @classmethod
    def _train(cls, text: str, vocab_size: int) -> tuple["ByteTokenizer", np.ndarray]:
        if vocab_size < N_BYTES:
            raise UserError(f"a byte-level vocabulary needs at least {N_BYTES} ids (got {vocab_size})", "vocab")
        ids, piece = _bytes_and_pieces(text)
        merges: list[tuple[int, int]] = []
        while N_BYTES + len(merges) < vocab_size and ids.size > 1:
            same_piece = piece[1:] == piece[:-1]
            if not same_piece.any():
                break
            width = N_BYTES + len(merges)
            codes = ids[:-1].astype(np.int64) * width + ids[1:]
            codes = codes[same_piece]
            values, counts = np.unique(codes, return_counts=True)
            best = int(np.argmax(counts))  # first maximum = smallest pair code
            if counts[best] < 2:
                break
            pair = (int(values[best] // width), int(values[best] % width))
            ids, piece = _merge(ids, piece, pair, width)
            merges.append(pair)
        return cls(tuple(merges)), ids

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` (int32): its bytes, then every merge applied in training order."""
        ids, piece = _bytes_and_pieces(text)
        for i, pair in enumerate(self.merges):
            if ids.size < 2:
                break
            ids, piece = _merge(ids, piece, pair, N_BYTES + i)
        return ids

    def decode(self, ids: np.ndarray | list[int]) -> str:
        table: list[bytes] = [bytes([b]) for b in range(N_BYTES)]
        for left, right in self.merges:
            table.append(table[left] + table[right])
        out = bytearray()
        for t in ids:
            t = int(t)
            if not 0 <= t < len(table):
                raise UserError(f"token id {t} outside 0..{len(table) - 1}", "decode")
            out += table[t]
        return out.decode("utf-8", errors="replace")


def _bytes_and_pieces(text: str) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of `text` (int32) and, for every byte, the index of the piece it belongs to."""
    chunks = [m.group(0).encode("utf-8") for m in _PIECE.finditer(text)]
    data = b"".join(chunks)
    if len(data) != len(text.encode("utf-8")):  # the pattern covers every character; guard anyway
        raise AssertionError("pre-tokenizer lost characters")
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    piece = np.repeat(np.arange(len(chunks), dtype=np.int32), lengths)
    return ids, piece


def _merge(ids: np.ndarray, piece: np.ndarray, pair: tuple[int, int], new_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace every non-overlapping occurrence of `pair` (left to right, inside a piece) by `new_id`."""
    left, right = pair
    hits = np.flatnonzero((ids[:-1] == left) & (ids[1:] == right) & (piece[:-1] == piece[1:]))
    if hits.size == 0:
        return ids, piece
    if left == right:  # "aaa": only the first of two overlapping matches may merge
        keep = []
        last = -2
        for i in hits.tolist():
            if i > last + 1:
                keep.append(i)
                last = i
        hits = np.asarray(keep, dtype=np.int64)
    ids = ids.copy()
    ids[hits] = new_id
    drop = np.ones(ids.size, dtype=bool)
    drop[hits + 1] = False
    return ids[drop], piece[drop]
