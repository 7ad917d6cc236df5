"""Timing options for `moesim replay` / `moesim compare` (wired in by moesim/sim/cli_replay.py).

    add_timing_arguments(parser)            --profile, --set, --prefetch, --miss, --model, --placement, ...
    run_spec_from_args(args, trace, bytes)  one timed run's RunSpec (moesim/sim/run.py)
    run_timed(args, trace, capacity_bytes)  one timed replay -> JSON-ready summary
    timed_table(summaries)                  compare: one row per run ranked by TPOT then TTFT, bounds as rows

The count-only options (--policy, --scope, --seed) belong to the replay command; run_timed reads
them from `args` when present.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.hw_profiles.profile import HardwareProfile
from moesim.traces.format.trace import Trace

TABLE_COLUMNS = ["rank_tpot", "rank_ttft", "label", "capacity_bytes", "tpot_s", "ttft_s", "total_s", "tokens_per_s",
                 "hit_rate", "misses", "collision", "stall_s", "bytes_moved", "energy_j", "lossy",
                 "misses_over_belady", "tpot_over_bound", "ttft_over_bound"]


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("timing (a hardware profile turns it on)")
    group.add_argument("--profile", default=None,
                       help="hardware profile name (e.g. h100-sxm, specmd-a100-5gbps) or YAML path")
    group.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="profile_set",
                       help="override a profile field, e.g. --set 'links.h2d.bandwidth=5 GB/s' (repeatable)")
    group.add_argument("--prefetch", default="none",
                       help="prefetch policy spec, e.g. none, oracle:lookahead=1 (default: none)")
    group.add_argument("--miss", default="stall", help="miss handling: stall, cpu, lowbit:bits=4, drop (default: stall)")
    group.add_argument("--overlap", default=None, choices=("layer", "expert"),
                       help="layer: a layer's experts wait for all its misses; expert: each expert runs as soon as "
                            "its bytes land (default: the profile's `overlap`)")
    group.add_argument("--io-lanes", type=int, default=None, metavar="N",
                       help="reads in flight from storage, e.g. an engine's --io-threads (default: the profile's "
                            "read_lanes)")
    group.add_argument("--storage-reads", default=None, choices=("direct", "buffered"),
                       help="direct (O_DIRECT, GPUDirect) or buffered through the OS page cache "
                            "(default: the profile's storage_reads)")
    group.add_argument("--model", default=None,
                       help="model for operator shapes and FLOPs: a catalog name (moesim models list), a model "
                            "YAML, a Hugging Face config.json or a GGUF file (default: the trace's own model)")
    group.add_argument("--placement", default="gpu",
                       help="where routed experts run: gpu, cpu-layers:N (llama.cpp --n-cpu-moe N: the first N "
                            "layers' experts on the CPU), cpu-all (KTransformers), cpu-only (everything on the "
                            "CPU); :numa=local|interleave|node on a multi-socket host; a comma list runs each "
                            "(default: gpu)")
    group.add_argument("--framework", default=None,
                       help="kernel counts per operator: fused, eager, cuda-graphs, llama.cpp (default: the profile's)")
    group.add_argument("--kernel-table", default=None, metavar="REPORT_JSON",
                       help="a `moesim calibrate` report whose measured expert-kernel times replace the roofline")


def resolve_profile(name: str | None, overrides: Sequence[str] = ()) -> HardwareProfile:
    """Load a profile by name or path with `--set` overrides (the profiles room's loader)."""
    if not name:
        raise UserError("timing needs a hardware profile: pass --profile NAME", "--profile")
    try:
        from moesim.hw_profiles.loader import load_profile
    except ModuleNotFoundError:
        raise UserError("hardware profiles are not installed (moesim.hw_profiles.loader)", "--profile") from None
    return load_profile(name, overrides=tuple(overrides))


def run_spec_from_args(args: argparse.Namespace, trace: Trace, capacity_bytes: int, eviction: str | Any = None,
                       profile: HardwareProfile | None = None, **rest: Any) -> Any:
    """The RunSpec (moesim/sim/run.py) of one timed run from parsed arguments; `rest` sets RunSpec
    fields the arguments do not (capacity text, placement, layer capacities, engine)."""
    from moesim.sim.run import RunOptions, RunSpec

    policy = eviction or getattr(args, "policy", None) or "lru"
    if isinstance(policy, str) and "," in policy:
        raise UserError(f"one eviction policy per timed run, got {policy!r}", "--policy")
    options = RunOptions(
        model=getattr(args, "model", None),
        framework=getattr(args, "framework", None),
        kernel_table=getattr(args, "kernel_table", None),
        overlap=getattr(args, "overlap", None),
        io_lanes=_lanes(getattr(args, "io_lanes", None)),
        storage_reads=getattr(args, "storage_reads", None),
    )
    fields: dict[str, Any] = dict(
        scope=getattr(args, "scope", None) or "global",
        seed=int(getattr(args, "seed", 0) or 0),
        placement=getattr(args, "placement", None) or "gpu",
        profile_name=args.profile or "",
        profile_overrides=tuple(getattr(args, "profile_set", None) or ()),
        options=options,
    )
    fields.update(rest)
    if not fields["profile_name"]:
        raise UserError("timing needs a hardware profile: pass --profile NAME", "--profile")
    if profile is None:
        profile = resolve_profile(fields["profile_name"], fields["profile_overrides"])
    return RunSpec.build(trace, policy, capacity_bytes, prefetch=getattr(args, "prefetch", "none") or "none",
                         miss=getattr(args, "miss", "stall") or "stall", profile=profile, **fields)


def _lanes(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise UserError(f"must be at least 1, got {value}", "--io-lanes")
    return value


def run_timed(args: argparse.Namespace, trace: Trace, capacity_bytes: int, eviction: str | None = None) -> dict[str, Any]:
    """One timed replay from parsed arguments; returns the JSON-ready summary (and writes --out)."""
    from moesim.reports.run_results import save_runs
    from moesim.sim.run import run

    spec = run_spec_from_args(args, trace, capacity_bytes, eviction)
    result = run(spec)
    out = getattr(args, "out", None)
    if out:
        save_runs(out, [(spec, result)], None)
    return result.summary


def timed_table(summaries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Runs ranked by mean TPOT, then mean TTFT (1 = fastest); each setting's bounds follow as rows.

    A bound row ("bound: Belady" for misses, "bound: time" for TPOT/TTFT/total) is added once per
    (profile, capacity, scope) seen among the runs; bound rows carry no rank.
    """
    rows = []
    bounds: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in summaries:
        cfg = s["config"]
        b = s.get("bounds") or {}
        held = b.get("valid", True) is not False  # cpu / drop / placements: the time bound is not claimed
        rows.append({
            "label": s.get("label", cfg["eviction"]["name"]),
            "capacity_bytes": cfg["capacity_bytes"],
            "tpot_s": s["tpot_s"]["mean"],
            "ttft_s": s["ttft_s"]["mean"],
            "total_s": s["time"]["total_s"],
            "tokens_per_s": s["tokens_per_s"],
            "hit_rate": s["hit_rate"],
            "misses": s["misses"],
            "collision": s["collision"],
            "stall_s": s["time"]["stall_s"],
            "bytes_moved": sum(link["bytes"] for link in s["links"].values()),
            "energy_j": s["energy_j"]["total"],
            "lossy": s["lossy"],
            "misses_over_belady": b.get("misses_over_belady"),
            "tpot_over_bound": b.get("tpot_over_bound") if held else None,
            "ttft_over_bound": b.get("ttft_over_bound") if held else None,
        })
        key = (s["profile"], cfg["capacity_bytes"], cfg["scope"])
        if b and key not in bounds:
            bounds[key] = {"capacity_bytes": cfg["capacity_bytes"], "belady_misses": b.get("belady_misses"),
                           "tpot_s": b.get("tpot_bound_s"), "ttft_s": b.get("ttft_bound_s"),
                           "total_s": b.get("time_bound_s")}
    runs = pd.DataFrame(rows, columns=[c for c in TABLE_COLUMNS if not c.startswith("rank")])
    if len(runs):
        tpot = runs["tpot_s"].astype(float).fillna(np.inf)
        ttft = runs["ttft_s"].astype(float).fillna(np.inf)
        runs = runs.assign(_tpot=tpot, _ttft=ttft).sort_values(["_tpot", "_ttft"], kind="stable")
        runs["rank_tpot"] = np.arange(1, len(runs) + 1)
        runs["rank_ttft"] = runs["_ttft"].rank(method="min").astype(int)
        runs = runs.drop(columns=["_tpot", "_ttft"])
    bound_rows = []
    for b in bounds.values():
        if b["belady_misses"] is not None:
            bound_rows.append({"label": "bound: Belady", "capacity_bytes": b["capacity_bytes"],
                               "misses": b["belady_misses"]})
        bound_rows.append({"label": "bound: time", "capacity_bytes": b["capacity_bytes"], "tpot_s": b["tpot_s"],
                           "ttft_s": b["ttft_s"], "total_s": b["total_s"]})
    table = pd.concat([runs, pd.DataFrame(bound_rows)], ignore_index=True) if bound_rows else runs
    return table.reindex(columns=TABLE_COLUMNS).reset_index(drop=True)
