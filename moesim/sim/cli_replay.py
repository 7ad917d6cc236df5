"""`moesim replay` and `moesim compare`: replay a trace against eviction policies and capacities.

Both commands go through `run_replay(args)`, which resolves the trace, the policies and the
capacities once and then dispatches on `args.count_only`: the count replay here, or the timed
path (the simpy engine with a hardware profile), which plugs in at `_timed_runs` alone.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.errors import UserError
from moesim.policies.registry import PolicySpec, parse_spec, parse_spec_list
from moesim.sim.cache_core import SCOPES
from moesim.sim.capacity import Capacity, layer_capacities, parse_capacity_list, parse_weights
from moesim.sim.count_replay import CountResult, ReplayConfig, count_replay
from moesim.sim.fast import ENGINES
from moesim.sim.requests import MODES
from moesim.units import format_bytes

BOUND_POLICY = "belady"


@dataclass(frozen=True)
class ReplayPlan:
    """Everything a replay command resolved from its arguments before running anything."""

    trace: Any
    trace_source: str
    specs: list[PolicySpec]
    capacities: list[Capacity]
    scope: str
    mode: str
    seed: int
    layer_weights: list[float] | None
    engine: str | None = None  # count-replay engine (moesim.sim.fast); None: $MOESIM_ENGINE or auto


def load_trace_arg(text: str) -> Any:
    """The trace named by --trace: a path, or "bundled:NAME" (moesim.traces.io.load_trace)."""
    from moesim.traces.io import load_trace

    return load_trace(text)


def _plan(args: argparse.Namespace, specs: list[PolicySpec]) -> ReplayPlan:
    trace = load_trace_arg(args.trace)
    return ReplayPlan(
        trace=trace,
        trace_source=args.trace,
        specs=specs,
        capacities=parse_capacity_list(args.capacity, trace),
        scope=args.scope,
        mode=args.replay,
        seed=args.seed,
        layer_weights=parse_weights(args.layer_weights),
        engine=getattr(args, "engine", None),
    )


def _count_runs(plan: ReplayPlan) -> list[tuple[CountResult, str]]:
    runs = []
    for spec in plan.specs:
        for cap in plan.capacities:
            config = ReplayConfig(
                policy=spec.label(),
                capacity_bytes=cap.bytes,
                scope=plan.scope,
                mode=plan.mode,
                seed=plan.seed,
                layer_capacity=(layer_capacities(cap.bytes, plan.layer_weights, plan.trace.meta.n_layers)
                                if plan.scope == "layer" else None),
            )
            runs.append((count_replay(plan.trace, config, spec=spec, engine=plan.engine), cap.text))
    return runs


def _timed_runs(plan: ReplayPlan, args: argparse.Namespace) -> list[Any]:
    """The timed replay (simpy engine + hardware profile) is wired in here."""
    raise UserError("timed replay needs the timing engine and a hardware profile, which this build does "
                    "not include; add --count-only for hit and miss counts", "replay")


def run_replay(args: argparse.Namespace, specs: list[PolicySpec]) -> tuple[ReplayPlan, list[tuple[CountResult, str]]]:
    """Resolve the arguments, then run the count replay or the timed one."""
    if args.layer_weights is not None and args.scope != "layer":
        raise UserError("--layer-weights needs --scope layer", "replay")
    plan = _plan(args, specs)
    if args.count_only:
        runs = _count_runs(plan)
    else:
        runs = _timed_runs(plan, args)
    if args.out:
        from moesim.sim.results import save_count_results

        save_count_results(runs, args.out, trace_source=plan.trace_source)
    return plan, runs


def _report(plan: ReplayPlan, runs: list[tuple[CountResult, str]], bound: str | None = None) -> dict[str, Any]:
    from moesim.sim.results import result_record, run_metadata

    data = run_metadata(plan.trace, plan.trace_source)
    data["runs"] = [result_record(r, text) for r, text in runs]
    for record, (result, _) in zip(data["runs"], runs):
        # which engine counted (not in saved results: both engines give identical files)
        record["engine"] = getattr(result, "engine", "reference")
    if bound is not None:
        data["bound_policy"] = bound
    return data


# ---- text output ---------------------------------------------------------------------------
_TABLE_COLUMNS = ("policy", "capacity", "requests", "hit rate", "misses", "compulsory", "capacity", "collision",
                  "bytes fetched")


def _row(run: dict[str, Any], bound: str | None) -> list[str]:
    cfg, s = run["config"], run["summary"]
    label = cfg["policy"]["label"] + (" (bound)" if bound is not None and cfg["policy"]["label"] == bound else "")
    rate = s["hit_rate"]
    return [
        label,
        f"{cfg['capacity']} ({format_bytes(cfg['capacity_bytes'])})",
        str(s["requests"]),
        "-" if rate is None else f"{100 * rate:.2f} %",
        str(s["misses"]),
        str(s["compulsory"]),
        str(s["capacity"]),
        str(s["collision"]),
        format_bytes(s["bytes_fetched"]),
    ]


def _engines(runs: list[dict[str, Any]]) -> str:
    """"fast", or "fast for lru, lfu; reference for arc" when the runs differ."""
    by_engine: dict[str, list[str]] = {}
    for run in runs:
        labels = by_engine.setdefault(run.get("engine", "reference"), [])
        label = run["config"]["policy"]["label"]
        if label not in labels:
            labels.append(label)
    if len(by_engine) <= 1:
        return next(iter(by_engine), "-")
    return "; ".join(f"{engine} for {', '.join(labels)}" for engine, labels in sorted(by_engine.items()))


def render_table(data: dict[str, Any]) -> str:
    bound = data.get("bound_policy")
    rows = [list(_TABLE_COLUMNS)] + [_row(run, bound) for run in data["runs"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_TABLE_COLUMNS))]
    lines = []
    trace = data["trace"]
    lines.append(f"trace {trace['source']} ({trace['model']}, {trace['passes']} passes, "
                 f"{trace['routed_accesses']} routed accesses, sha256 {trace['hash'][:12]})")
    first = data["runs"][0]["config"] if data["runs"] else {}
    lines.append(f"scope {first.get('scope')}, replay {first.get('mode')}, seed {first.get('seed')}, "
                 f"engine {_engines(data['runs'])}; misses: compulsory / capacity / collision")
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_replay(data: dict[str, Any]) -> str:
    lines = [render_table(data)]
    for run in data["runs"]:
        s = run["summary"]
        dec, pre = s["by_phase"]["decode"], s["by_phase"]["prefill"]
        lines.append(f"{run['config']['policy']['label']} @ {run['config']['capacity']}: "
                     f"decode {dec['hits']} hits / {dec['requests']} requests, "
                     f"prefill {pre['hits']} / {pre['requests']}, evictions {s['evictions']}, bypasses {s['bypasses']}")
    return "\n".join(lines)


# ---- commands ------------------------------------------------------------------------------
def _cmd_replay(args: argparse.Namespace) -> int:
    plan, runs = run_replay(args, [parse_spec(args.policy, "eviction")])
    emit(args, _report(plan, runs), render_replay)
    return 0


def compare_specs(text: str) -> tuple[list[PolicySpec], str]:
    """The policies to compare, with forced-admit Belady appended as the miss bound unless given.

    Forced-admit MIN bounds every policy that caches each miss; "belady-bypass" (which may stream
    a miss instead) is an ordinary row that can go below it.
    """
    specs = parse_spec_list(text, "eviction")
    if not specs:
        raise UserError("no policy given", "--policies")
    if not any(s.label() == BOUND_POLICY for s in specs):
        specs.append(parse_spec(BOUND_POLICY))
    return specs, BOUND_POLICY


def _cmd_compare(args: argparse.Namespace) -> int:
    specs, bound = compare_specs(args.policies)
    plan, runs = run_replay(args, specs)
    emit(args, _report(plan, runs, bound), render_table)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True, help='trace file, or "bundled:NAME"')
    parser.add_argument("--capacity", required=True,
                        help='cache capacity: "5%%" of routed expert bytes, "4000MiB", "51slots" (objects of the '
                             'largest size), or a comma list for a miss-ratio curve')
    parser.add_argument("--scope", choices=SCOPES, default="global", help="one cache across layers, or one per layer")
    parser.add_argument("--layer-weights", default=None,
                        help="with --scope layer: split each capacity over layers in these proportions (comma list)")
    parser.add_argument("--replay", choices=MODES, default="event",
                        help="event: a layer's experts are requested together (default); sequential: one by one")
    parser.add_argument("--seed", type=int, default=0, help="seed for randomised policies")
    parser.add_argument("--count-only", action="store_true", help="count hits and misses only (no timing)")
    parser.add_argument("--out", default=None, help="write per-layer and per-pass tables to this Parquet file")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="count-replay engine: fast (compiled; lru, fifo, static-hot, least-stale, lfu, belady), "
                             "reference (Python; every policy) or auto (fast where it applies; the default, "
                             "or $MOESIM_ENGINE); both give identical counts")
    add_json_flag(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    replay = subparsers.add_parser("replay", help="replay a trace against one eviction policy")
    replay.add_argument("--policy", default="lru", help='policy spec, e.g. "lru", "lfu:decay=0.9" (moesim policies list)')
    _common(replay)
    replay.set_defaults(func=_cmd_replay)

    compare = subparsers.add_parser("compare", help="compare eviction policies at several capacities (Belady = bound)")
    compare.add_argument("--policies", default="lru,least-stale,belady",
                         help="comma list of policy specs; belady is added as the miss bound")
    _common(compare)
    compare.set_defaults(func=_cmd_compare)
