"""A trace's vocabulary and metadata: phases, kinds, TraceMeta (sizes, model, provenance), id dtypes.

Vocabulary in docs/trace-format.md; the arrays these describe are moesim/traces/format/trace.py's Trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
