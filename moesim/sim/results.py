"""Count-replay results as JSON-ready records (what `moesim replay|compare --json` prints).

Every record carries the full resolved configuration (policy with every parameter, capacity in
bytes per partition, scope, replay mode, seed), the moesim version and the trace's content hash,
so a number can always be traced back to what produced it. Result files are run files, written by
moesim/reports/run_results.py (docs/metrics.md, "Result files").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import moesim
from moesim.sim import metrics
from moesim.sim.count_replay import CountResult

def resolved_config(result: CountResult, capacity_text: str | None = None) -> dict[str, Any]:
    """What ran, with every default filled in."""
    spec = result.spec
    cfg = result.config
    entry = spec.entry
    return {
        "policy": {
            "name": spec.name,
            "label": spec.label(),
            "kind": spec.kind,
            "params": dataclasses.asdict(spec.params) if dataclasses.is_dataclass(spec.params) else {},
            "alias_of": entry.alias_of,
            "offline": bool(getattr(entry.cls, "offline", False)),
        },
        "capacity": capacity_text if capacity_text is not None else f"{int(cfg.capacity_bytes)}B",
        "capacity_bytes": int(cfg.capacity_bytes),
        "partition_capacity_bytes": list(result.capacities or []),
        "scope": cfg.scope,
        "mode": cfg.mode,
        "seed": int(cfg.seed),
    }


def run_metadata(trace: Any, trace_source: str | None = None) -> dict[str, Any]:
    """Version and trace identity shared by every run on one trace."""
    return {
        "moesim_version": moesim.__version__,
        "trace": {
            "source": trace_source,
            "hash": trace.content_hash(),
            "model": trace.meta.model,
            "passes": trace.n_passes,
            "routed_accesses": trace.n_accesses,
            "layers": trace.meta.n_layers,
            "experts": trace.meta.n_experts,
            "total_object_bytes": trace.total_object_bytes(),
        },
    }


def result_record(result: CountResult, capacity_text: str | None = None) -> dict[str, Any]:
    """One run: its resolved config and its summary counts (metrics.summary)."""
    return {"config": resolved_config(result, capacity_text), "summary": metrics.summary(result)}
