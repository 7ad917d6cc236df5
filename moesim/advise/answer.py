"""The answer `moesim advise` gives: plain dicts (JSON-ready) built from the search outcomes.

    answer = build_answer(workload, outcomes, objective, budget_s, elapsed_s)
    answer["machines"][i]["best"]["tpot"]   # the best configuration for TPOT on machine i

Every row carries the configuration (one label per dimension), predicted TPOT / TTFT / tokens/s,
VRAM and DRAM it uses, bytes moved and energy per output token, and its distance to the time
bound. The baseline (LRU, no prefetch, stall, largest cache) is given beside every answer.
"""

from __future__ import annotations

import math
from typing import Any

from moesim.advise.engines import engine_changes, engine_options
from moesim.advise.search import OBJECTIVES, Evaluation, MachineOutcome
from moesim.advise.workload import Workload

OBJECTIVE_LABELS = {"tpot": "TPOT", "ttft": "TTFT", "throughput": "tokens/s", "energy": "energy per token"}
LATE_SHARE_WARNING = 0.10  # warn when more than this share of issued prefetches arrived late


def run_row(ev: Evaluation) -> dict[str, Any]:
    s = ev.summary
    b = s.get("bounds") or {}
    tokens_per_s = s.get("tokens_per_s")
    prefetch = s.get("prefetch") or {}
    return {
        "config": ev.candidate.labels(),
        "index": ev.candidate.index,
        "tpot_s": _finite(s["tpot_s"]["mean"]),
        "ttft_s": _finite(s["ttft_s"]["mean"]),
        "tokens_per_s": _finite(tokens_per_s),
        "vram_bytes": int(ev.vram_bytes),
        "dram_bytes": int(ev.dram_bytes),
        "bytes_per_token": _finite(ev.metrics["bytes_per_token"]),  # whole run, cold start included
        "decode_bytes_per_token": _finite(ev.metrics.get("decode_bytes_per_token")),
        "energy_per_token_j": _finite(ev.metrics["energy"]),
        "hit_rate": _finite(s.get("hit_rate")),
        "late_prefetch": int(s.get("late_prefetch") or 0),
        "prefetch_issued": int(prefetch.get("issued") or 0),
        "lossy": bool(s.get("lossy")),
        "tpot_bound_s": _finite(b.get("tpot_bound_s")) if b.get("valid", True) else None,
        "ttft_bound_s": _finite(b.get("ttft_bound_s")) if b.get("valid", True) else None,
        "tpot_over_bound": _finite(b.get("tpot_over_bound")) if b.get("valid", True) else None,
        "ttft_over_bound": _finite(b.get("ttft_over_bound")) if b.get("valid", True) else None,
        "model_source": s.get("model_source"),
        "seconds": round(ev.seconds, 3),
    }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def machine_answer(outcome: MachineOutcome, workload: Workload) -> dict[str, Any]:
    m = outcome.machine
    base = run_row(outcome.baseline) if outcome.baseline is not None else None
    best: dict[str, Any] = {}
    for objective in OBJECTIVES:
        ev = outcome.best(objective)
        if ev is None:
            continue
        row = run_row(ev)
        row["engine_options"] = [o.__dict__ for o in engine_options(ev.candidate, m, workload)]
        row["engine_changes"] = engine_changes(ev.candidate)  # what no engine does yet, said beside the answer
        if outcome.baseline is not None:
            b = outcome.baseline.metrics[objective]
            row["gain_over_baseline"] = (b / ev.metrics[objective]) if ev.metrics[objective] > 0 else None
        row["searched_for"] = objective == outcome.objective
        best[objective] = row
    warnings = list(m.notes) + _warnings(outcome)
    return {
        "profile": m.name,
        "vram_free_bytes": m.vram_free,
        "dram_free_bytes": m.dram_free,
        "cache_max_bytes": m.cache_max,
        "baseline": base,
        "best": best,
        "searched": {"configurations": outcome.total, "timed": len(outcome.evaluations),
                     "pruned_by_bound": len(outcome.pruned), "not_reached": len(outcome.not_reached),
                     "seconds": round(outcome.seconds, 2)},
        "warnings": warnings,
        "notes": list(outcome.notes),
        "runs": [run_row(ev) | {"profile": m.name} for ev in outcome.evaluations],
    }


def _warnings(outcome: MachineOutcome) -> list[str]:
    out = []
    best = outcome.best(outcome.objective)
    if best is not None:
        row = run_row(best)
        if row["prefetch_issued"] and row["late_prefetch"] > LATE_SHARE_WARNING * row["prefetch_issued"]:
            out.append(f"late prefetches: {row['late_prefetch']} of {row['prefetch_issued']} issued arrived after "
                       "their layer started (counted as stalls, not hits)")
        if row["model_source"] and "assumed" in str(row["model_source"]):
            out.append(f"placeholder sizes: {row['model_source']}")
    if outcome.not_reached:
        out.append(f"budget reached: {len(outcome.not_reached)} configurations not timed; a larger --budget "
                   "may find a better one")
    return out


def build_answer(workload: Workload, outcomes: list[MachineOutcome], objective: str, budget_s: float,
                 elapsed_s: float) -> dict[str, Any]:
    machines = [machine_answer(o, workload) for o in outcomes]
    return {
        "format": "moesim.advise/1",
        "model": workload.model,
        "trace": workload.trace_label,
        "synthetic_trace": workload.synthetic,
        "requests": {"prompt": workload.prompt, "decode": workload.decode, "batch": workload.batch},
        "memory": {"dense_bytes": workload.dense_bytes, "kv_bytes": workload.kv_bytes,
                   "expert_bytes": workload.expert_bytes},
        "objective": objective,
        "budget_s": budget_s,
        "elapsed_s": round(elapsed_s, 2),
        "warnings": list(workload.warnings),
        "machines": machines,
    }
