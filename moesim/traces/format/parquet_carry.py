"""What a moesim Parquet chunk hands on to the next, and the canonical-layout test (parquet_chunk).

A pass longer than the reader's split size is cut where a cell ends (moesim/traces/format/parquet_read.py);
the chunk that goes on with it needs the pass's phase and token table, and the pass's cells read
so far are checked for the canonical layout against their own ends until the pass's last token is
known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PassCarry:
    """A pass cut at a cell boundary: what the chunk that continues it needs (a long pass is read
    a group of whole cells at a time, so memory follows the chunk, not the pass)."""

    phase: int
    n_cells: int = 0  # the pass's cells in earlier chunks
    # per token index seen so far: the request/position its first row gave, and whether any row
    # had it; None when the chunk stopped at an earlier-ordered error (later chunks skip these checks)
    request: np.ndarray | None = None
    position: np.ndarray | None = None
    seen: np.ndarray | None = None
    cell_ends: list[np.ndarray] = field(default_factory=list)  # see Piece.closed_cell_ends


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
