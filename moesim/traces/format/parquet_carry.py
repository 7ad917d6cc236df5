"""What a moesim Parquet chunk hands on to the next, and the canonical-layout test (parquet_chunk).

A pass longer than the reader's split size is cut where a cell ends, and a cell longer than it
between two of its tokens' runs (moesim/traces/format/parquet_cuts.py). The chunk that goes on with a pass
needs its phase and token table, and the pass's cells read so far are checked for the canonical
layout against their own ends until the pass's last token is known; the chunk that goes on with a
cell needs the tokens the cell already had (a token's runs may not come back) and where its runs
stopped (the canonical layout goes on from there with runs of the same length).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class TokenTable:
    """An open pass's tokens so far: the request and position its first row gave each token index
    (int32: the range checks run before the token checks), and whether any row had it.

    It grows in place, by a quarter when a chunk needs more, and goes from chunk to chunk without
    a copy: a pass of millions of tokens costs ~9 bytes per token once, not a copy per chunk."""

    def __init__(self) -> None:
        self.n = 0  # tokens known: 1 + the largest token index seen
        self._request = np.zeros(0, dtype=np.int32)
        self._position = np.zeros(0, dtype=np.int32)
        self._seen = np.zeros(0, dtype=bool)

    @property
    def request(self) -> np.ndarray:
        return self._request[:self.n]

    @property
    def position(self) -> np.ndarray:
        return self._position[:self.n]

    @property
    def seen(self) -> np.ndarray:
        return self._seen[:self.n]

    def grow(self, n: int) -> None:
        """Make room for token indexes below n (new ones not seen yet)."""
        if n > self._seen.shape[0]:
            capacity = max(n, self._seen.shape[0] * 5 // 4)
            for name in ("_request", "_position", "_seen"):
                old = getattr(self, name)
                new = np.zeros(capacity, dtype=old.dtype)
                new[:self.n] = old[:self.n]
                setattr(self, name, new)
        self.n = max(self.n, n)

    @classmethod
    def of(cls, request: np.ndarray, position: np.ndarray, seen: np.ndarray) -> TokenTable:
        table = cls()
        table.grow(int(seen.shape[0]))
        table.request[:] = request
        table.position[:] = position
        table.seen[:] = seen
        return table


@dataclass
class CellCarry:
    """A cell cut between two tokens' runs: what the chunk that continues it checks against.

    Made once the cut chunk's token-split check passed; `end` and `run_length` once its run checks
    did (-1 before: the file has an error then, and the layout does not matter)."""

    seen: np.ndarray  # bool per token index: the tokens with a run in the cell so far
    end: int = -1  # the token after the cell's last run so far
    run_length: int = -1  # the cell's runs' length (all equal in the canonical layout)


@dataclass
class PassCarry:
    """A pass cut at a cell boundary: what the chunk that continues it needs (a long pass is read
    a group of whole cells at a time, so memory follows the chunk, not the pass)."""

    phase: int
    n_cells: int = 0  # the pass's cells in earlier chunks
    # the pass's tokens so far; None when the chunk stopped at an earlier-ordered error (later
    # chunks skip the token checks then)
    tokens: TokenTable | None = None
    cell_ends: list[np.ndarray] = field(default_factory=list)  # see Piece.closed_cell_ends
    cell: CellCarry | None = None  # the pass's last cell, when the chunk was cut inside it


def canonical_runs(run_starts: np.ndarray, acc_cell: np.ndarray, acc_token: np.ndarray, n_cells: int,
                   pass_tokens_of_cell: np.ndarray) -> bool:
    """True if every cell's token runs are its pass's last tokens in order, of equal length (the layout
    a Trace stores without access_token). Works on runs, not accesses: a top_k-th of the work."""
    n_a = int(acc_token.shape[0])
    if n_a == 0:
        return True
    run_cell = acc_cell[run_starts]
    lengths = np.diff(np.append(run_starts, n_a))
    runs_per_cell = np.bincount(run_cell, minlength=n_cells)
    first_run = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(runs_per_cell, out=first_run[1:])
    first_token = pass_tokens_of_cell - runs_per_cell  # a short cell holds its pass's last tokens
    expected = first_token[run_cell] + np.arange(run_starts.size) - first_run[run_cell]
    return bool((acc_token[run_starts] == expected).all() and (lengths == lengths[first_run[run_cell]]).all())
