"""`moesim replay` and `moesim compare`: replay a trace against eviction policies and capacities.

Both commands go through `run_replay(args)`, which resolves the trace, the policies and the
capacities once into one RunSpec per run and runs each with `moesim.sim.run.run` (the front door
the sweeps, the Python API and `validate` use too): with `--profile` (and no `--count-only`) every
run goes through the timing engine and reports TTFT/TPOT, stalls, bytes and energy beside the
counts; otherwise the count replay reports hits and misses only.
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
from moesim.sim.cli_timing import add_timing_arguments
from moesim.sim.count_replay import CountResult
from moesim.sim.fast import ENGINES
from moesim.sim.requests import MODES
from moesim.sim.run import RunSpec, run
from moesim.traces.format.cli_input import add_trace_input_flags
from moesim.units import format_bytes

BOUND_POLICY = "belady"


def load_trace_arg(text: str, args: argparse.Namespace | None = None) -> Any:
    """The trace named by --trace: a path, or "bundled:NAME", read with the trace-input flags of
    `args` (--format, --map, --option, --pass-by, ...; moesim.traces.format.cli_input); the trace doctor's
    warnings go to stderr."""
    from moesim.traces.format.cli_input import load_cli_trace

    return load_cli_trace(args if args is not None else argparse.Namespace(), text)


@dataclass(frozen=True)
class ReplayInputs:
    """What a replay command resolved from its arguments before building its runs."""

    trace: Any
    trace_source: str
    capacities: list[Capacity]
    layer_weights: list[float] | None


def _inputs(args: argparse.Namespace) -> ReplayInputs:
    trace = load_trace_arg(args.trace, args)
    return ReplayInputs(trace, args.trace, parse_capacity_list(args.capacity, trace), parse_weights(args.layer_weights))


def _layer_capacity(args: argparse.Namespace, inputs: ReplayInputs, capacity_bytes: int) -> tuple[int, ...] | None:
    """With --scope layer and --layer-weights: bytes per layer (None: the core splits evenly)."""
    if args.scope != "layer":
        return None
    weights = layer_capacities(capacity_bytes, inputs.layer_weights, inputs.trace.meta.n_layers)
    return None if weights is None else tuple(weights)


def _count_specs(args: argparse.Namespace, inputs: ReplayInputs, specs: list[PolicySpec]) -> list[RunSpec]:
    return [RunSpec.build(inputs.trace, spec, cap.bytes, capacity=cap.text, scope=args.scope, mode=args.replay,
                          seed=args.seed, layer_capacity=_layer_capacity(args, inputs, cap.bytes),
                          engine=getattr(args, "engine", None))
            for spec in specs for cap in inputs.capacities]


def check_model_shape(trace: Any, model: str, where: str = "--model") -> None:
    """Refuse a model whose shape is not the trace's: its FLOPs and dense sizes would time a different
    network than the one the trace routed through. A top-k override (engines run Qwen3 at k=6) and a
    log of some of the model's layers (meta.layer_ids) are the same network and pass."""
    from moesim.traces.models.model_files import load_model_any

    spec = load_model_any(model, where).spec
    meta = trace.meta
    sparse = bool(meta.layer_ids) and max(meta.layer_ids) < spec.n_layers  # a log of some layers only
    layers_fit = meta.n_layers in (spec.n_moe_layers, spec.n_layers) or sparse
    if spec.n_routed_experts != meta.n_experts or not layers_fit:
        raise UserError(f"{spec.name} has {spec.n_moe_layers} MoE layers x {spec.n_routed_experts} experts; the "
                        f"trace has {meta.n_layers} x {meta.n_experts}: its FLOPs and sizes would time another "
                        "model (leave --model out to use the trace's own)", where)


def is_timed(args: argparse.Namespace) -> bool:
    """Timing runs when a hardware profile is named and --count-only is not given."""
    return bool(getattr(args, "profile", None)) and not args.count_only


def _timed_specs(args: argparse.Namespace, inputs: ReplayInputs, specs: list[PolicySpec]) -> list[RunSpec]:
    """Every (policy, capacity, placement) for the timing engine; the same runs as the count replay."""
    from moesim.sim.cli_timing import resolve_profile, run_spec_from_args

    if args.replay != "event":
        raise UserError("the timing engine replays cells event-atomically; drop --replay sequential "
                        "or add --count-only", "--replay")
    from moesim.traces.importers.doctor import refuse_placeholder_sizes

    refuse_placeholder_sizes(inputs.trace, "a timed run (--profile)", "--profile")
    profile = resolve_profile(args.profile, tuple(args.profile_set or ()))
    # --placement may list several (compare where experts run): one run each
    placements = [p.strip() for p in (getattr(args, "placement", None) or "gpu").split(",") if p.strip()] or ["gpu"]
    return [run_spec_from_args(args, inputs.trace, cap.bytes, eviction=spec, profile=profile, capacity=cap.text,
                               placement=placement, layer_capacity=_layer_capacity(args, inputs, cap.bytes),
                               engine=getattr(args, "engine", None))
            for spec in specs for cap in inputs.capacities for placement in placements]


def run_replay(args: argparse.Namespace, specs: list[PolicySpec]) -> tuple[ReplayInputs, list[tuple[Any, str]]]:
    """Resolve the arguments into RunSpecs, then run each (the count replay or the timed one)."""
    if args.layer_weights is not None and args.scope != "layer":
        raise UserError("--layer-weights needs --scope layer", "replay")
    if not is_timed(args) and (args.prefetch != "none" or args.miss != "stall"
                                or (getattr(args, "placement", None) or "gpu") != "gpu"):
        raise UserError("--prefetch, --miss and --placement need the timing engine: add --profile NAME", "replay")
    if getattr(args, "profile_set", None) and not getattr(args, "profile", None):
        raise UserError("--set changes a field of a hardware profile: add --profile NAME", "--set")
    if getattr(args, "model", None) and not is_timed(args):
        raise UserError("--model sets FLOPs and dense sizes for timing: add --profile NAME (without "
                        "--count-only)", "--model")
    inputs = _inputs(args)
    if getattr(args, "model", None):
        check_model_shape(inputs.trace, args.model)
    if is_timed(args):
        run_specs = _timed_specs(args, inputs, specs)
    else:
        if getattr(args, "trace_events", None):
            raise UserError("needs the timing engine: add --profile NAME", "--trace-events")
        run_specs = _count_specs(args, inputs, specs)
    results = [run(spec) for spec in run_specs]
    runs = [(result, spec.capacity) for result, spec in zip(results, run_specs)]
    if is_timed(args):
        _export_trace_events(args, runs)
    if args.out:  # one run file for every run (moesim/reports/run_results.py), as a sweep writes
        from moesim.reports.run_results import save_runs

        save_runs(args.out, list(zip(run_specs, results)), inputs.trace_source)
    return inputs, runs


def _export_trace_events(args: argparse.Namespace, runs: list[tuple[Any, str]]) -> None:
    """--trace-events FILE: the one timed run's timeline as Chrome trace-event JSON."""
    path = getattr(args, "trace_events", None)
    if not path:
        return
    if len(runs) != 1:
        raise UserError(f"exports one run; this command made {len(runs)} (give one policy and one capacity)",
                        "--trace-events")
    from moesim.sim.trace_events import write_trace_events

    write_trace_events(runs[0][0], path)


def _report(inputs: ReplayInputs, runs: list[tuple[Any, str]], bound: str | None = None) -> dict[str, Any]:
    from moesim.sim.results import result_record, run_metadata

    data = run_metadata(inputs.trace, inputs.trace_source)
    if runs and not isinstance(runs[0][0], CountResult):
        data["timed"] = True
        data["runs"] = [dict(r.summary, capacity=text) for r, text in runs]
        return data
    data["runs"] = [result_record(r, text) for r, text in runs]
    for record, (result, _) in zip(data["runs"], runs):
        # which engine counted (not in saved results: both engines give identical files)
        record["engine"] = getattr(result, "engine", "reference")
        if getattr(result, "engine_note", None):
            record["engine_note"] = result.engine_note  # why auto ran the reference engine
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
    notes = dict.fromkeys(run["engine_note"] for run in data["runs"] if run.get("engine_note"))
    lines.extend(f"reference engine: {note}" for note in notes)
    return "\n".join(lines)


def render_timed(data: dict[str, Any]) -> str:
    """Runs ranked by TPOT with the bounds as rows (moesim.sim.cli_timing.timed_table)."""
    from moesim.sim.cli_timing import timed_table

    table = timed_table(data["runs"])
    trace = data["trace"]
    head = (f"trace {trace['source']} ({trace['model']}, {trace['passes']} passes, "
            f"{trace['routed_accesses']} routed accesses); profile {data['runs'][0].get('profile')}")
    shown = table[["label", "capacity_bytes", "tpot_s", "ttft_s", "hit_rate", "misses", "collision", "stall_s",
                   "bytes_moved", "energy_j", "tpot_over_bound"]].copy()
    shown["capacity_bytes"] = shown["capacity_bytes"].map(lambda b: format_bytes(b) if b == b else "-")
    for col in ("tpot_s", "ttft_s", "stall_s"):
        shown[col] = shown[col].map(lambda t: "-" if t != t or t is None else f"{t * 1e3:.2f} ms")
    shown["hit_rate"] = shown["hit_rate"].map(lambda r: "-" if r != r or r is None else f"{100 * r:.2f} %")
    shown["bytes_moved"] = shown["bytes_moved"].map(lambda b: "-" if b != b or b is None else format_bytes(b))
    shown = shown.rename(columns={"capacity_bytes": "capacity", "tpot_s": "TPOT", "ttft_s": "TTFT",
                                  "stall_s": "stall", "tpot_over_bound": "TPOT/bound"})
    return head + "\n" + shown.to_string(index=False, na_rep="-")


def render_replay(data: dict[str, Any]) -> str:
    if data.get("timed"):
        return render_timed(data)
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
    inputs, runs = run_replay(args, [parse_spec(args.policy, "eviction")])
    emit(args, _report(inputs, runs), render_replay)
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
    inputs, runs = run_replay(args, specs)
    data = _report(inputs, runs, bound)
    emit(args, data, render_timed if data.get("timed") else render_table)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True, help='trace file, or "bundled:NAME"')
    add_trace_input_flags(parser)
    parser.add_argument("--capacity", required=True,
                        help='cache capacity: "5%%" of routed expert bytes, "4000MiB", "51slots" (objects of the '
                             'largest size), or a comma list for a miss-ratio curve')
    parser.add_argument("--scope", choices=SCOPES, default="global", help="one cache across layers, or one per layer")
    parser.add_argument("--layer-weights", default=None,
                        help="with --scope layer: split each capacity over layers in these proportions (comma list)")
    parser.add_argument("--replay", choices=MODES, default="event",
                        help="event: a layer's experts are requested together (default); sequential: one by one")
    parser.add_argument("--seed", type=int, default=0, help="seed for randomised policies")
    parser.add_argument("--count-only", action="store_true",
                        help="count hits and misses only (no timing, even with --profile)")
    parser.add_argument("--out", default=None,
                        help="write every run's tables to this Parquet run file (the format sweeps write)")
    parser.add_argument("--trace-events", default=None, metavar="FILE",
                        help="with a profile: write the timed run's timeline as Chrome trace-event JSON (Perfetto)")
    add_timing_arguments(parser)
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="replay engine: fast (compiled; every eviction policy that declares a compiled form, "
                             "`moesim policies show NAME` says which; timed runs: the same but belady, with "
                             "--miss stall and no DRAM cache tier), "
                             "reference (Python; every policy) or auto (fast where it applies; the default, "
                             "or $MOESIM_ENGINE); both give identical results")
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
