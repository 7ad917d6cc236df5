"""What a chunk of a moesim Parquet file shares with the reader: the file's state, and the piece of
the Trace a chunk decodes to (moesim/traces/format/parquet_chunk.py makes them, parquet_assemble joins them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from moesim.traces.format.parquet_checks import FirstError
from moesim.traces.format.trace_meta import TraceMeta


@dataclass
class FileState:
    """What every chunk needs to know about the file, and what chunks tell the reader."""

    meta: TraceMeta
    where: str
    n_rows: int  # rows in the whole file (a token index must be below it)
    widths: dict[str, Any]  # prediction widths: from the metadata, else learned from the first cell
    errors: FirstError = field(default_factory=FirstError)
    any_weight: bool = False  # some access has a weight
    first_null_weight_row: int | None = None  # the first access without one


@dataclass
class Piece:
    """A chunk's passes, their tokens and cells, ready to concatenate with the other chunks'."""

    pass_phase: np.ndarray  # int8 per pass
    pass_cells: np.ndarray  # cells per pass
    pass_tokens: np.ndarray  # tokens per pass
    token_request: np.ndarray  # int32 per pass-token
    token_position: np.ndarray  # int32 per pass-token
    cell_layer: np.ndarray  # int16 per cell
    cell_sizes: np.ndarray  # accesses per cell
    cell_tokens: np.ndarray  # int32 per cell
    prediction_values: dict[str, np.ndarray]  # flat, cell-major: reshaped once the width is known
    access_token: np.ndarray | None  # the accesses' tokens, only where the layout is not canonical
    # Passes whose cells span chunks are emitted by the chunk that closes them (pass_* and token_*
    # cover closed passes only). Their cells in earlier chunks were checked against their own last
    # token: (closing pass index within this piece, cell end tokens) to compare with the pass's
    # final token count once known; the layout is canonical only if every end equals it.
    closed_cell_ends: list[tuple[int, np.ndarray]] = field(default_factory=list)
    cell_end: np.ndarray | None = None  # per cell of this piece: the token after its last run
    # the first cell goes on from the previous piece's last one (a chunk cut inside a cell): the
    # two are one cell of the trace, and this piece holds no prediction for it
    continues_cell: bool = False


@dataclass
class PieceAccesses:
    """A chunk's per-access arrays: the reader copies them into file-sized arrays and drops them."""

    expert: np.ndarray  # in the trace's expert dtype
    weight: np.ndarray | None  # float16; None where the chunk carries no weight
    annotations: dict[str, np.ndarray]
