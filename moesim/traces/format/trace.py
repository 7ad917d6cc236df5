"""The in-memory trace: columnar numpy arrays grouped by pass and cell.

Vocabulary (docs/trace-format.md, ../shared/DESIGN.md):
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
from typing import Any, Iterator

import numpy as np

from moesim.errors import UserError
from moesim.limits import BYTES_PER_OBJECT, check_memory
from moesim.units import MAX_BYTES, show

PREFILL = 0
DECODE = 1
PHASE_NAMES = {PREFILL: "prefill", DECODE: "decode"}

KIND_MOE = "moe"
KIND_TOL = "tol"  # token-indexed lookup rows (MemoryLLM-style), objects are (layer, row)


@dataclass
class TraceMeta:
    """What the arrays do not say: sizes, model, provenance.

    `object_bytes` is per layer (index = trace layer 0..n_layers-1); a trace's own sizes win over the
    model catalog. `layer_ids` maps trace layers to the model's real layer numbers (e.g. FLAME's MoE
    layers 2..9 are trace layers 0..7). `provenance` records where the routing came from and under
    which licence; `extra` carries importer-specific facts (e.g. a run's cache size).
    """

    n_layers: int
    n_experts: int
    top_k: int | None
    object_bytes: list[int]
    kind: str = KIND_MOE
    model: str | None = None
    dense_bytes: list[int] | None = None
    layer_ids: list[int] | None = None
    shared_experts: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            "n_experts": self.n_experts,
            "top_k": self.top_k,
            "object_bytes": [int(b) for b in self.object_bytes],
            "kind": self.kind,
            "model": self.model,
            "dense_bytes": None if self.dense_bytes is None else [int(b) for b in self.dense_bytes],
            "layer_ids": self.layer_ids,
            "shared_experts": self.shared_experts,
            "provenance": self.provenance,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TraceMeta":
        return cls(
            n_layers=int(data["n_layers"]),
            n_experts=int(data["n_experts"]),
            top_k=None if data.get("top_k") is None else int(data["top_k"]),
            object_bytes=[int(b) for b in data["object_bytes"]],
            kind=data.get("kind", KIND_MOE),
            model=data.get("model"),
            dense_bytes=None if data.get("dense_bytes") is None else [int(b) for b in data["dense_bytes"]],
            layer_ids=data.get("layer_ids"),
            shared_experts=int(data.get("shared_experts", 0)),
            provenance=dict(data.get("provenance") or {}),
            extra=dict(data.get("extra") or {}),
        )


def expert_dtype(n_experts: int) -> np.dtype:
    return np.dtype(np.int16) if n_experts <= np.iinfo(np.int16).max else np.dtype(np.int32)


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
            arr = np.ascontiguousarray(getattr(self, name))
            h.update(name.encode())
            h.update(str(arr.dtype).encode())
            h.update(arr.tobytes())
        if self.weight is not None:
            h.update(b"weight" + np.ascontiguousarray(self.weight).tobytes())
        for name in sorted(self.annotations):
            h.update(name.encode() + np.ascontiguousarray(self.annotations[name]).tobytes())
        for name in sorted(self.predictions):
            h.update(name.encode() + np.ascontiguousarray(self.predictions[name]).tobytes())
        if self.access_token is not None:
            h.update(b"access_token" + np.ascontiguousarray(self.access_token, dtype=np.int32).tobytes())
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

    # ---- validation --------------------------------------------------------------------------
    def validate(self, where: str = "trace") -> None:
        """Check every structural invariant; raise UserError naming the first violation."""
        m = self.meta
        if m.kind not in (KIND_MOE, KIND_TOL):
            raise UserError(f"metadata: kind {show(m.kind)} is not {KIND_MOE!r} or {KIND_TOL!r}", where)
        if m.n_layers <= 0 or m.n_experts <= 0:
            raise UserError(f"n_layers and n_experts must be positive (got {m.n_layers}, {m.n_experts})", where)
        if len(m.object_bytes) != m.n_layers:
            raise UserError(f"object_bytes has {len(m.object_bytes)} entries for {m.n_layers} layers", where)
        if any(int(b) <= 0 for b in m.object_bytes):
            raise UserError("object_bytes must be positive for every layer", where)
        if any(int(b) > MAX_BYTES for b in m.object_bytes):
            raise UserError("object_bytes: an expert of more than 1 EiB is not a real size", where)
        if m.dense_bytes is not None and any(not 0 <= int(b) <= MAX_BYTES for b in m.dense_bytes):
            raise UserError("dense_bytes must be between 0 and 1 EiB for every layer", where)
        check_memory(m.n_layers * m.n_experts * BYTES_PER_OBJECT,
                     f"n_layers x n_experts = {m.n_layers:,} x {m.n_experts:,} objects", where)
        if m.top_k is not None and m.top_k <= 0:
            raise UserError(f"top_k must be positive (got {m.top_k})", where)
        n_p, n_c, n_a = self.n_passes, self.n_cells, self.n_accesses
        _check_offsets(self.pass_cell_offsets, n_p, n_c, "pass_cell_offsets", where)
        _check_offsets(self.pass_token_offsets, n_p, self.n_tokens, "pass_token_offsets", where)
        _check_offsets(self.cell_offsets, n_c, n_a, "cell_offsets", where)
        if self.token_position.shape[0] != self.n_tokens:
            raise UserError("token_position and token_request differ in length", where)
        if self.cell_tokens.shape[0] != n_c:
            raise UserError("cell_tokens must have one entry per cell", where)
        _check_cell_tokens(self, where)
        if n_p and not np.isin(self.pass_phase, (PREFILL, DECODE)).all():
            bad = int(np.flatnonzero(~np.isin(self.pass_phase, (PREFILL, DECODE)))[0])
            raise UserError(f"pass {bad}: phase must be 0 (prefill) or 1 (decode)", where)
        if n_c:
            bad_layer = np.flatnonzero((self.cell_layer < 0) | (self.cell_layer >= m.n_layers))
            if bad_layer.size:
                c = int(bad_layer[0])
                raise UserError(f"cell {c}: layer {int(self.cell_layer[c])} outside 0..{m.n_layers - 1}", where)
        if n_a:
            bad = np.flatnonzero((self.expert < 0) | (self.expert >= m.n_experts))
            if bad.size:
                i = int(bad[0])
                raise UserError(f"access {i}: expert id {int(self.expert[i])} outside 0..{m.n_experts - 1}", where)
        if self.weight is not None and self.weight.shape[0] != n_a:
            raise UserError("weight must have one entry per access", where)
        if self.weight is not None and n_a:
            bad = np.flatnonzero(~(self.weight >= 0))  # negative or NaN: a gate weight is a probability
            if bad.size:
                i = int(bad[0])
                raise UserError(f"access {i}: gate weight {float(self.weight[i])} is negative or not a number", where)
        for name, arr in self.annotations.items():
            if arr.shape[0] != n_a:
                raise UserError(f"annotation {name!r} must have one entry per access", where)
        for name, arr in self.predictions.items():
            if arr.ndim != 2 or arr.shape[0] != n_c:
                raise UserError(f"prediction {name!r} must be a [cells, n] array", where)
        if m.top_k is not None and n_c:
            expected = self.cell_tokens.astype(np.int64) * m.top_k
            sizes = np.diff(self.cell_offsets)
            bad = np.flatnonzero(sizes != expected)
            if bad.size:
                c = int(bad[0])
                raise UserError(
                    f"cell {c} (pass {int(self.cell_pass()[c])}, layer {int(self.cell_layer[c])}): "
                    f"{int(sizes[c])} accesses for {int(self.cell_tokens[c])} tokens at top-{m.top_k}",
                    where,
                )
            _check_no_duplicate_experts(self, where)
        if self.access_token is not None:
            _check_access_token(self, where)


def _token_dtype(trace: Trace) -> np.dtype:
    most = int(np.diff(trace.pass_token_offsets).max(initial=0))
    return np.dtype(np.int16) if most <= np.iinfo(np.int16).max else np.dtype(np.int32)


def _check_cell_tokens(trace: Trace, where: str) -> None:
    """A cell counts between 0 and its pass's tokens; a cell with accesses has at least one token."""
    if not trace.n_cells:
        return
    pass_tokens = np.diff(trace.pass_token_offsets)[trace.cell_pass()]
    sizes = np.diff(trace.cell_offsets)
    bad = np.flatnonzero((trace.cell_tokens < 0) | (trace.cell_tokens > pass_tokens)
                         | ((sizes > 0) & (trace.cell_tokens == 0)))
    if bad.size:
        c = int(bad[0])
        raise UserError(
            f"cell {c} (layer {int(trace.cell_layer[c])}): {int(trace.cell_tokens[c])} tokens with "
            f"{int(sizes[c])} accesses in a pass of {int(pass_tokens[c])} tokens",
            where,
        )


def _check_access_token(trace: Trace, where: str) -> None:
    """Each token of a cell is one contiguous run of accesses; runs count cell_tokens; ids fit the pass."""
    tok = np.asarray(trace.access_token)
    n_a = trace.n_accesses
    if tok.shape != (n_a,):
        raise UserError("access_token must have one entry per access", where)
    if not n_a:
        return
    if not np.issubdtype(tok.dtype, np.integer):
        raise UserError("access_token must be integers", where)
    cell = trace.access_cell()
    limit = np.diff(trace.pass_token_offsets)[trace.cell_pass()][cell]
    bad = np.flatnonzero((tok < 0) | (tok >= limit))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"access {i}: token {int(tok[i])} outside its pass's 0..{int(limit[i]) - 1}", where)
    starts = np.ones(n_a, dtype=bool)
    starts[1:] = (cell[1:] != cell[:-1]) | (tok[1:] != tok[:-1])
    runs = np.bincount(cell[starts], minlength=trace.n_cells)
    keys = cell[starts].astype(np.int64) * (int(limit.max()) + 1) + tok[starts]
    if np.unique(keys).size != keys.size:
        order = np.argsort(keys, kind="stable")
        dup = order[1:][keys[order][1:] == keys[order][:-1]][0]
        c = int(cell[starts][dup])
        raise UserError(f"cell {c}: the accesses of token {int(tok[starts][dup])} are not contiguous", where)
    bad_cell = np.flatnonzero(runs != trace.cell_tokens)
    if bad_cell.size:
        c = int(bad_cell[0])
        raise UserError(f"cell {c}: access_token names {int(runs[c])} tokens, cell_tokens says "
                        f"{int(trace.cell_tokens[c])}", where)
    k = trace.meta.top_k
    if k:
        lengths = np.diff(np.append(np.flatnonzero(starts), n_a))
        bad = np.flatnonzero(lengths != k)
        if bad.size:
            c = int(cell[np.flatnonzero(starts)[bad[0]]])
            raise UserError(f"cell {c}: a token has {int(lengths[bad[0]])} accesses at top-{k}", where)


def _check_offsets(offsets: np.ndarray, n: int, total: int, name: str, where: str) -> None:
    if offsets.shape[0] != n + 1:
        raise UserError(f"{name} must have {n + 1} entries, has {offsets.shape[0]}", where)
    if offsets[0] != 0 or offsets[-1] != total:
        raise UserError(f"{name} must run from 0 to {total}", where)
    if n and np.any(np.diff(offsets) < 0):
        raise UserError(f"{name} must be non-decreasing", where)


def _check_no_duplicate_experts(trace: Trace, where: str) -> None:
    """With a fixed top-k, a token routes to k distinct experts."""
    k = trace.meta.top_k
    if not k or k == 1 or trace.n_accesses == 0:
        return
    groups = trace.expert.reshape(-1, k)
    ordered = np.sort(groups, axis=1)
    dup = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if dup.size:
        g = int(dup[0])
        access = g * k
        cell = int(np.searchsorted(trace.cell_offsets, access, side="right") - 1)
        raise UserError(
            f"cell {cell} (layer {int(trace.cell_layer[cell])}): a token routes to expert "
            f"{int(groups[g][np.argmax(ordered[g, 1:] == ordered[g, :-1])])} twice",
            where,
        )


def build_trace(
    meta: TraceMeta,
    passes: list[dict[str, Any]],
) -> Trace:
    """Build a Trace from a list of passes (small traces, tests, importers of modest size).

    Each pass is {"phase": 0|1, "tokens": [(request, position), ...] (optional),
    "cells": [(layer, [[e, e, ...] per token], [[w, ...] per token] or None), ...]}.
    Large importers should fill the arrays directly.
    """
    pass_phase: list[int] = []
    pass_cell_offsets = [0]
    pass_token_offsets = [0]
    token_request: list[int] = []
    token_position: list[int] = []
    cell_layer: list[int] = []
    cell_offsets = [0]
    cell_tokens: list[int] = []
    experts: list[int] = []
    weights: list[float] = []
    access_token: list[int] = []
    uneven = False  # some cell's tokens route to different numbers of experts
    has_weights = None
    for p, spec in enumerate(passes):
        pass_phase.append(int(spec.get("phase", DECODE)))
        cells = spec["cells"]
        n_tok = max((len(c[1]) for c in cells), default=0)
        tokens = spec.get("tokens") or [(0, p if spec.get("phase", DECODE) == DECODE else i) for i in range(n_tok)]
        for req, pos in tokens:
            token_request.append(int(req))
            token_position.append(int(pos))
        pass_token_offsets.append(len(token_request))
        for cell in cells:
            layer, per_token = cell[0], cell[1]
            per_token_w = cell[2] if len(cell) > 2 else None
            if has_weights is None:
                has_weights = per_token_w is not None
            cell_layer.append(int(layer))
            cell_tokens.append(len(per_token))
            if len({len(row) for row in per_token}) > 1:
                uneven = True
            first_token = len(tokens) - len(per_token)  # a cell with fewer tokens holds the pass's last ones
            for t, row in enumerate(per_token):
                experts.extend(int(e) for e in row)
                access_token.extend([first_token + t] * len(row))
                if has_weights:
                    if per_token_w is None:
                        raise ValueError("either every cell has weights or none does")
                    weights.extend(float(w) for w in per_token_w[t])
            cell_offsets.append(len(experts))
        pass_cell_offsets.append(len(cell_layer))
    trace = Trace(
        meta=meta,
        pass_phase=np.asarray(pass_phase, dtype=np.int8),
        pass_cell_offsets=np.asarray(pass_cell_offsets, dtype=np.int64),
        pass_token_offsets=np.asarray(pass_token_offsets, dtype=np.int64),
        token_request=np.asarray(token_request, dtype=np.int32),
        token_position=np.asarray(token_position, dtype=np.int32),
        cell_layer=np.asarray(cell_layer, dtype=np.int16),
        cell_offsets=np.asarray(cell_offsets, dtype=np.int64),
        cell_tokens=np.asarray(cell_tokens, dtype=np.int32),
        expert=np.asarray(experts, dtype=expert_dtype(meta.n_experts)),
        weight=np.asarray(weights, dtype=np.float16) if has_weights else None,
        access_token=np.asarray(access_token, dtype=np.int32) if uneven else None,
    )
    trace.normalize_access_token()
    return trace


def simple_trace(
    cells_per_pass: list[list[list[int]]],
    n_layers: int,
    n_experts: int,
    object_bytes: int | list[int] = 1,
    top_k: int | None = None,
    phases: list[int] | None = None,
) -> Trace:
    """A single-request trace for hand-computed tests.

    `cells_per_pass[p][l]` lists the experts layer l routes to in pass p (one token per cell unless
    top_k is given, in which case the list is split into tokens of top_k experts each).
    """
    sizes = [object_bytes] * n_layers if isinstance(object_bytes, int) else list(object_bytes)
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=sizes, model="hand")
    passes = []
    for p, layers in enumerate(cells_per_pass):
        phase = phases[p] if phases else DECODE
        cells = []
        for layer, experts in enumerate(layers):
            if experts is None:
                continue
            k = top_k or max(len(experts), 1)
            per_token = [experts[i : i + k] for i in range(0, len(experts), k)] if experts else []
            cells.append((layer, per_token))
        n_tok = max((len(c[1]) for c in cells), default=0)
        tokens = [(0, p if phase == DECODE else i) for i in range(n_tok)]
        passes.append({"phase": phase, "cells": cells, "tokens": tokens})
    return build_trace(meta, passes)
