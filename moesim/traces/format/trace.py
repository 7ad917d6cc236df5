"""The in-memory trace: columnar numpy arrays grouped by pass and cell.

Vocabulary (docs/trace-format.md):
- a *pass* is one model invocation (a prefill, a decode step, a batched decode step);
- a *cell* is one (pass, layer): the multiset of experts the pass's tokens routed to at that layer;
- an *access* is one routed (token, layer, expert) entry; a cell's accesses are stored token by token
  (the k experts of token 0, then of token 1, ...), in the order the source recorded them;
- an *object* is what is cached and moved: object id = layer * n_experts + expert.

Memory: 2 bytes per access for int16 expert ids (int32 only past 32767 experts/rows per layer),
2 more for optional float16 gate weights, plus 4-byte cell offsets and a 2-byte layer per cell.
Per-token tables (request, position) are per pass-token, which is top_k x n_layers smaller.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace_checks import validate_trace
from moesim.traces.format.trace_meta import TraceMeta


@dataclass
class Trace:
    """A routing trace in execution order.

    Arrays (n_p passes, n_c cells, n_t pass-tokens, n_a accesses):
      pass_phase[n_p] int8          PREFILL or DECODE
      pass_cell_offsets[n_p+1]      cells of pass p are pass_cell_offsets[p]:pass_cell_offsets[p+1]
      pass_token_offsets[n_p+1]     tokens of pass p in token_request/token_position
      token_request[n_t] int32      request (sequence) id of each pass-token
      token_position[n_t] int32     position of that token in its sequence
      cell_layer[n_c] int16         trace layer of each cell
      cell_offsets[n_c+1]           accesses of cell c are cell_offsets[c]:cell_offsets[c+1]
      cell_tokens[n_c] int32        tokens routed in the cell (accesses are grouped per token)
      expert[n_a] int16/int32       expert (or row) id within the layer
      weight[n_a] float16 or None   gate weight applied to that expert for that token
      annotations                   optional per-access columns, e.g. "engine_residency" (int8)
      predictions                   optional per-cell predictions, name -> int array [n_c, n]
                                    (e.g. "lookahead_1": experts layer l+1's gate picks from layer l's state)
      access_token[n_a] or None     pass-token index (within the pass) of the token each access belongs
                                    to; None means the canonical layout: a cell's accesses split evenly
                                    into its cell_tokens tokens, which are the pass's *last* cell_tokens
                                    tokens (all of them in a full cell; the final prompt token when
                                    llama.cpp prunes a prefill's last layer). Set only where that does not
                                    hold; `access_tokens()` gives the index always.
    """

    meta: TraceMeta
    pass_phase: np.ndarray
    pass_cell_offsets: np.ndarray
    pass_token_offsets: np.ndarray
    token_request: np.ndarray
    token_position: np.ndarray
    cell_layer: np.ndarray
    cell_offsets: np.ndarray
    cell_tokens: np.ndarray
    expert: np.ndarray
    weight: np.ndarray | None = None
    annotations: dict[str, np.ndarray] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    access_token: np.ndarray | None = None

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def n_passes(self) -> int:
        return int(self.pass_phase.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cell_layer.shape[0])

    @property
    def n_accesses(self) -> int:
        return int(self.expert.shape[0])

    @property
    def n_objects(self) -> int:
        return self.meta.n_layers * self.meta.n_experts

    @property
    def n_tokens(self) -> int:
        return int(self.token_request.shape[0])

    # ---- derived views -----------------------------------------------------------------------
    def cell_pass(self) -> np.ndarray:
        """Pass index of every cell (int32)."""
        counts = np.diff(self.pass_cell_offsets)
        return np.repeat(np.arange(self.n_passes, dtype=np.int32), counts)

    def access_cell(self) -> np.ndarray:
        """Cell index of every access (int32)."""
        return np.repeat(np.arange(self.n_cells, dtype=np.int32), np.diff(self.cell_offsets))

    def object_ids(self) -> np.ndarray:
        """Object id of every access: layer * n_experts + expert (int32 or int64 if needed)."""
        layer = np.repeat(self.cell_layer, np.diff(self.cell_offsets))
        dtype = np.int32 if self.n_objects < np.iinfo(np.int32).max else np.int64
        return layer.astype(dtype) * self.meta.n_experts + self.expert.astype(dtype)

    def object_bytes_array(self) -> np.ndarray:
        """Size in bytes of every object id (int64, length n_objects)."""
        per_layer = np.asarray(self.meta.object_bytes, dtype=np.int64)
        return np.repeat(per_layer, self.meta.n_experts)

    def object_layer_array(self) -> np.ndarray:
        return np.repeat(np.arange(self.meta.n_layers, dtype=np.int32), self.meta.n_experts)

    def total_object_bytes(self) -> int:
        """Bytes of all routed objects (the denominator of a capacity given in %)."""
        return int(np.sum(np.asarray(self.meta.object_bytes, dtype=np.int64)) * self.meta.n_experts)

    def pass_requests(self, p: int) -> np.ndarray:
        """Distinct request ids served by pass p, in order of first appearance."""
        tokens = self.token_request[self.pass_token_offsets[p] : self.pass_token_offsets[p + 1]]
        _, first = np.unique(tokens, return_index=True)
        return tokens[np.sort(first)]

    def canonical_access_tokens(self) -> np.ndarray | None:
        """The token index of every access under the canonical layout, or None if a cell's accesses
        cannot be split evenly over its tokens (then `access_token` must say)."""
        sizes = np.diff(self.cell_offsets).astype(np.int64)
        tokens = self.cell_tokens.astype(np.int64)
        empty = sizes == 0
        ok = np.where(tokens > 0, (sizes > 0) & (sizes % np.maximum(tokens, 1) == 0), empty)
        if not ok.all():
            return None
        per_token = np.where(tokens > 0, sizes // np.maximum(tokens, 1), 1)
        first = np.diff(self.pass_token_offsets)[self.cell_pass()] - tokens  # a short cell holds the last tokens
        within = np.arange(self.n_accesses, dtype=np.int64) - np.repeat(self.cell_offsets[:-1].astype(np.int64), sizes)
        return (np.repeat(first, sizes) + within // np.repeat(per_token, sizes)).astype(_token_dtype(self))

    def access_tokens(self) -> np.ndarray:
        """Pass-token index of every access: the stored `access_token`, else the canonical layout.

        Raises UserError if neither exists (a cell whose accesses do not split evenly over its tokens).
        """
        if self.access_token is not None:
            return self.access_token
        canonical = self.canonical_access_tokens()
        if canonical is None:
            raise UserError("a cell's accesses do not split evenly over its tokens and access_token is not set")
        return canonical

    def normalize_access_token(self) -> None:
        """Drop `access_token` when it equals the canonical layout (keeps memory compact), else store it
        in the smallest integer type that holds it."""
        if self.access_token is None:
            return
        canonical = self.canonical_access_tokens()
        if canonical is not None and np.array_equal(canonical, self.access_token):
            self.access_token = None
        else:
            self.access_token = np.asarray(self.access_token).astype(_token_dtype(self))

    def iter_cells(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield (cell index, layer, expert ids of its accesses) in execution order."""
        offsets = self.cell_offsets
        for c in range(self.n_cells):
            yield c, int(self.cell_layer[c]), self.expert[offsets[c] : offsets[c + 1]]

    def content_hash(self) -> str:
        """SHA-256 over the arrays and metadata: results carry it so they name the trace they came from."""
        h = hashlib.sha256()
        import json

        h.update(json.dumps(self.meta.to_dict(), sort_keys=True).encode())
        for name in (
            "pass_phase",
            "pass_cell_offsets",
            "pass_token_offsets",
            "token_request",
            "token_position",
            "cell_layer",
            "cell_offsets",
            "cell_tokens",
            "expert",
        ):
            arr = getattr(self, name)
            h.update(name.encode())
            h.update(str(arr.dtype).encode())
            h.update(_raw(arr))
        if self.weight is not None:
            h.update(b"weight")
            h.update(_raw(self.weight))
        for name in sorted(self.annotations):
            h.update(name.encode())
            h.update(_raw(self.annotations[name]))
        for name in sorted(self.predictions):
            h.update(name.encode())
            h.update(_raw(self.predictions[name]))
        if self.access_token is not None:
            h.update(b"access_token")
            h.update(_raw(np.asarray(self.access_token, dtype=np.int32)))
        return h.hexdigest()

    def nbytes(self) -> int:
        """Bytes held by the arrays (for the memory-budget benchmark)."""
        total = 0
        for value in self.__dict__.values():
            if isinstance(value, np.ndarray):
                total += value.nbytes
        for d in (self.annotations, self.predictions):
            total += sum(a.nbytes for a in d.values())
        return total

    def validate(self, where: str = "trace") -> None:
        """Check every structural invariant; raise UserError naming the first violation (trace_checks.py)."""
        validate_trace(self, where)


def _raw(arr: np.ndarray) -> np.ndarray:
    """The array's bytes as a uint8 view (what `tobytes()` gives, without the copy a hash of a large
    trace would otherwise make)."""
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _token_dtype(trace: Trace) -> np.dtype:
    most = int(np.diff(trace.pass_token_offsets).max(initial=0))
    return np.dtype(np.int16) if most <= np.iinfo(np.int16).max else np.dtype(np.int32)
