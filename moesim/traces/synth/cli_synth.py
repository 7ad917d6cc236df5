"""`moesim traces synth | fit | stats`: synthetic traces, fitting them to real ones, trace statistics."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.errors import UserError
from moesim.traces.format.cli_input import add_trace_input_flags


def register_traces(sub: argparse._SubParsersAction) -> None:
    from moesim.traces.synth.synth_config import PRESETS, help_table

    settings = "\n".join(f"  {name:<15} {help_} (default {default})" for name, default, help_ in help_table())
    p = sub.add_parser(
        "synth",
        help="generate a synthetic routing trace",
        description="Generate a seeded synthetic routing trace (the model: moesim/traces/synth/synthetic.py; the README section 'Synthetic traces and statistics').",
        epilog=f"settings for --set KEY=VALUE:\n{settings}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    base = p.add_mutually_exclusive_group()
    base.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset (default olmoe)")
    base.add_argument("--from-fit", metavar="PARAMS.yaml", help="start from a `moesim traces fit --out` file")
    p.add_argument("--accesses", metavar="N", help="draw requests until the trace has at least N accesses (10M, 500k)")
    p.add_argument("--requests", type=int, metavar="N", help="number of requests (when --accesses is not given)")
    p.add_argument("--seed", type=int, help="seed (default: the preset's or file's, else 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    p.add_argument("--out", required=True, metavar="TRACE.parquet", help="where to write the trace")
    add_json_flag(p)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("fit", help="fit synthetic-trace settings to a trace and report the match")
    p.add_argument("trace", help="trace file, or a bundled trace (qwen, gemma, switch-base-8)")
    p.add_argument("--out", metavar="PARAMS.yaml", help="write the fitted settings (for synth --from-fit)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit's simulations and of the settings")
    add_trace_input_flags(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("stats", help="statistics of a trace: popularity, reuse, working sets, predictors")
    p.add_argument("trace", help="trace file, or a bundled trace (qwen, gemma, switch-base-8)")
    p.add_argument("--phase", choices=("all", "prefill", "decode"), default="all",
                   help="accesses the per-layer and whole-trace counts cover (predictors always use decode)")
    p.add_argument("--k", type=int, help="k of the top-k coverage (default: the trace's top_k)")
    p.add_argument("--per-layer", action="store_true", help="also print one row per layer")
    add_trace_input_flags(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_stats)


# ---- loading -----------------------------------------------------------------------------------
def load_trace_arg(arg: str, args: Any = None):
    """A trace from a path (any format load_trace detects, with the trace-input flags of `args`),
    `bundled:NAME`, or a bare bundled name; the trace doctor's warnings go to stderr."""
    from moesim.traces.format.cli_input import load_cli_trace
    from moesim.traces.format.io import BUNDLED_PREFIX
    from moesim.traces.importers.log_read import has_wildcard

    args = args if args is not None else argparse.Namespace()
    if arg.startswith(BUNDLED_PREFIX) or Path(arg).exists() or has_wildcard(arg):
        return load_cli_trace(args, arg)
    from moesim.traces.format.bundled import bundled_names

    if arg in bundled_names():
        return load_cli_trace(args, BUNDLED_PREFIX + arg)
    raise UserError(f"no such trace file, and no bundled trace of that name ({', '.join(bundled_names())})", arg)


def _read_fit_file(path: str):
    import yaml

    from moesim.traces.synth.synth_config import SynthConfig

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read: {exc.strerror}", path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
    return SynthConfig.from_dict(data, where=path)


# ---- synth -------------------------------------------------------------------------------------
def cmd_synth(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from moesim.traces.synth.synth_config import parse_count, preset
    from moesim.traces.synth.synthetic import generate

    from moesim.atomic_io import check_output

    check_output(args.out, "--out")  # before generating: a bad output path fails at once
    config = _read_fit_file(args.from_fit) if args.from_fit else preset(args.preset or "olmoe")
    overrides: dict[str, Any] = {}
    if args.accesses is not None:
        try:
            overrides["accesses"] = parse_count(args.accesses)
        except UserError as exc:
            raise UserError(exc.message, "--accesses") from None
    if args.requests is not None:
        overrides["n_requests"], overrides["accesses"] = args.requests, 0
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = dataclasses.replace(config, **overrides).with_settings(args.set)

    from moesim.traces.format.io import save_trace

    start = time.perf_counter()
    trace = generate(config)
    seconds = time.perf_counter() - start
    save_trace(trace, args.out)
    report = {
        "out": str(args.out),
        "accesses": trace.n_accesses,
        "passes": trace.n_passes,
        "tokens": trace.n_tokens,
        "bytes_per_access": trace.nbytes() / max(trace.n_accesses, 1),
        "content_hash": trace.content_hash(),
        "config": config.to_dict(),
    }
    emit(args, report, lambda r: _render_synth(r, seconds))
    return 0


def _render_synth(r: dict[str, Any], seconds: float) -> str:
    cfg = r["config"]
    return (
        f"wrote {r['out']}: {r['accesses']:,} accesses, {r['passes']:,} passes, {r['tokens']:,} tokens "
        f"({cfg['n_layers']} layers x {cfg['n_experts']} experts, top-{cfg['top_k']}, seed {cfg['seed']}) "
        f"in {seconds:.2f} s; {r['bytes_per_access']:.2f} B/access in memory\n"
        f"sha256 {r['content_hash']}"
    )


# ---- fit ---------------------------------------------------------------------------------------
def cmd_fit(args: argparse.Namespace) -> int:
    from moesim.atomic_io import write_text_atomic
    from moesim.traces.synth.fit import config_yaml, fit_with_report

    trace = load_trace_arg(args.trace, args)
    result = fit_with_report(trace, seed=args.seed)
    if args.out:
        header = {
            "moesim traces fit of": args.trace,
            "trace sha256": trace.content_hash(),
            "match (real vs fit)": "see `moesim traces fit --json`",
        }
        write_text_atomic(args.out, config_yaml(result.config, header))
    table = result.table()
    report = {
        "trace": args.trace,
        "config": result.config.to_dict(),
        "match": _records(table),
        "simulations": result.simulations,
        "rms_miss": result.error,
        "out": args.out,
    }
    emit(args, report, lambda r: _render_fit(r, table))
    return 0


def _records(table) -> list[dict[str, Any]]:
    return _no_nan(table.to_dict(orient="records"))


def _no_nan(value: Any) -> Any:
    """NaN (a statistic with nothing to measure) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def _render_fit(r: dict[str, Any], table) -> str:
    cfg = r["config"]
    zipf, active = cfg["zipf"], cfg["request_active"]
    lines = [
        f"fitted {r['trace']} with {r['simulations']} simulations (rms miss {r['rms_miss']:.4f})",
        f"  zipf            mean {sum(zipf) / len(zipf):.3f}  range {min(zipf):.3f}..{max(zipf):.3f}",
        f"  request_active  mean {sum(active) / len(active):.3f}  range {min(active):.3f}..{max(active):.3f}",
        f"  reuse           {cfg['reuse']:.4f}",
        f"  cross_layer     {cfg['cross_layer']:.4f}",
        f"  requests        {cfg['n_requests']}  prefill {cfg['prefill']}  decode {cfg['decode']}  "
        f"batch {cfg['batch_size']}",
        "",
        table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
    ]
    if r["out"]:
        lines.append(f"\nwrote {r['out']} (use: moesim traces synth --from-fit {r['out']} --out T.parquet)")
    return "\n".join(lines)


# ---- stats -------------------------------------------------------------------------------------
def cmd_stats(args: argparse.Namespace) -> int:
    from moesim.traces.stats.summary import compute_stats

    if args.k is not None and args.k <= 0:
        raise UserError(f"k must be positive, got {args.k}", "--k")
    trace = load_trace_arg(args.trace, args)
    result = compute_stats(trace, phase=args.phase, k=args.k)
    report = _no_nan(result.to_dict(per_layer=args.per_layer))
    report["trace"] = args.trace
    emit(args, report, lambda r: _render_stats(r, result.per_layer if args.per_layer else None))
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f} %"


def _render_stats(r: dict[str, Any], per_layer) -> str:
    from moesim.units import format_bytes

    s = r["summary"]
    lines = [
        f"{r['trace']}: {s['n_layers']} layers x {s['n_experts']} experts, top-k {s['top_k']} "
        f"(phase: {s['phase']})",
        f"  accesses {s['accesses']:,}   passes prefill {s['passes']['prefill']:,} decode {s['passes']['decode']:,}"
        f"   tokens prefill {s['tokens']['prefill']:,} decode {s['tokens']['decode']:,}   requests {s['requests']:,}",
        f"  routed bytes {format_bytes(s['routed_bytes'])}   distinct objects {s['distinct_objects']:,}   "
        f"bytes touched {format_bytes(s['bytes_touched'])} ({_pct(s['touched_share'])} of {format_bytes(s['bank_bytes'])})",
        f"  objects per pass: mean {s['working_set_per_pass_mean']:.1f}, max {s['working_set_per_pass_max']:,}",
    ]
    layers = r["layers"]
    for key, label in (("distinct_experts", "distinct experts per layer"), ("entropy_bits", "entropy (bits)")):
        if key in layers:
            v = layers[key]
            lines.append(f"  {label:<27} mean {v['mean']:.2f}  min {v['min']:.2f}  max {v['max']:.2f}")
    cov = next((key for key in layers if key.endswith("_coverage")), None)
    if cov:
        v = layers[cov]
        lines.append(f"  {cov.replace('_', ' '):<27} mean {_pct(v['mean'])}  min {_pct(v['min'])}  max {_pct(v['max'])}")
    p = r["predictors"]
    if p:
        lines += [
            "predictors (share of a decode step's top-k guessed with k experts per layer):",
            f"  temporal: previous token's k        {_pct(p['temporal_prev_token'])}",
            f"  static: the run's k hottest         {_pct(p['static_run_hottest'])}",
            f"  static: learned from the prompt     {_pct(p['static_prompt_hottest'])}",
            f"  random: k / n_experts               {_pct(p['random'])}",
            f"  cross-layer transition (per request) {_pct(p['cross_layer_transition'])}"
            f"  vs frequency {_pct(p['cross_layer_frequency'])}",
            "  lag profile: " + "  ".join(f"{g}:{_pct(v)}" for g, v in p["lag_profile"].items()),
        ]
    else:
        lines.append("predictors: n/a (the trace has no fixed top_k)")
    if per_layer is not None:
        lines += ["", per_layer.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    return "\n".join(lines)
