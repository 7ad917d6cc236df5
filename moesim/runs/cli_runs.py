"""`moesim check-run` and `moesim fit-profile`: moesim against measured runs of a real engine.

    moesim fit-profile RUN --trace bundled:qwen --profile phone-oneplus-15r --out fitted.yaml
    moesim check-run RUN --trace bundled:gemma --profile fitted.yaml --out report/
    moesim check-run RUN --trace from-run --like bundled:gemma --top-k 8 --lanes 4 --cache-mib 2000 ...

RUN is the engine's per-step CSV (or .metrics) with its .log beside it, or a generic per-step
CSV/JSONL with --columns. What the files do not say (cache budget, lanes, overlap, k) comes from the
options; options also override the files.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    from moesim.cli import add_json_flag

    check = subparsers.add_parser("check-run", help="predict a measured run and compare step by step")
    _run_arguments(check)
    check.add_argument("--like", default=None, help="with --trace from-run: a trace of the same model (layer sizes)")
    check.add_argument("--out", default=None, help="folder for the report (steps.csv, summary.json, report.html)")
    add_json_flag(check)
    check.set_defaults(func=cmd_check_run)

    fit = subparsers.add_parser("fit-profile", help="fit a profile's free figures to one measured run")
    _run_arguments(fit)
    fit.add_argument("--out", required=True, help="profile YAML to write (never overwrites an existing file)")
    fit.add_argument("--free", default=None, help="comma list of figures to fit (default: all of "
                     "memory_bandwidth, peak_flops, launch_overhead, ssd_bandwidth, ssd_bandwidth_qd1, ssd_latency, "
                     "token_overhead, mgmt_per_byte)")
    fit.add_argument("--storage-depth-ratio", type=float, default=None, metavar="R",
                     help="keep the storage curve's deepest-queue throughput at R x its one-read throughput (a shape "
                          "known from elsewhere, e.g. the engine's own lane measurements) and fit only the latter")
    add_json_flag(fit)
    fit.set_defaults(func=cmd_fit_profile)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="per-step measurements: the engine's CSV / .metrics, or a CSV/JSONL with --columns")
    p.add_argument("--trace", required=True, help="the run's routing trace (path or bundled:NAME), or 'from-run'")
    p.add_argument("--profile", required=True, help="hardware profile name or YAML path")
    p.add_argument("--set", action="append", default=[], dest="profile_set", metavar="FIELD=VALUE",
                   help="override a profile field (repeatable)")
    p.add_argument("--columns", default=None, help="column map for a generic file, e.g. step=i,wall_ms=lat,read_bytes=b")
    p.add_argument("--cache-mib", type=float, default=None, help="expert-cache budget in MiB (0 = no cache)")
    p.add_argument("--lanes", type=int, default=None, help="reads in flight (the engine's --io-threads)")
    p.add_argument("--overlap", choices=("yes", "no"), default=None, help="reads overlapped with compute")
    p.add_argument("--top-k", type=int, default=None, help="experts per token the run used")
    p.add_argument("--n-prompt", type=int, default=None, help="prompt tokens")
    p.add_argument("--prefill-s", type=float, default=None, help="measured prefill seconds")
    p.add_argument("--slices", type=int, default=None,
                   help="weight tensor slices per expert read (O_DIRECT padding; default from the model's arch)")


def load_inputs(args: argparse.Namespace) -> tuple[Any, Any, str, str, int]:  # noqa: C901
    """The run (options merged), the trace to replay, its name and kind, and the slices per expert."""
    from moesim.runs.padding import slices_for
    from moesim.runs.readers import read_run
    from moesim.traces.format.io import load_trace

    run = read_run(args.run, args.columns)
    run.config = run.config.merged(cache_mib=args.cache_mib, lanes=args.lanes,
                                   overlap=None if args.overlap is None else args.overlap == "yes",
                                   top_k=args.top_k, n_prompt=args.n_prompt, prefill_s=args.prefill_s)
    if args.trace == "from-run":
        like_name = getattr(args, "like", None)
        if not like_name:
            raise UserError("--trace from-run needs --like TRACE (a trace of the same model, for its layer sizes)",
                            "--like")
        like = load_trace(like_name)
        slices = args.slices or slices_for(run.config.model or _arch(like))
        trace = timing_trace_for(run, like, slices)
        return run, trace, f"from-run (layer sizes of {like_name})", "timing-only from the run", slices
    trace = load_trace(args.trace)
    slices = args.slices or slices_for(run.config.model or _arch(trace))
    kind = "the run's own" if "engine_residency" in trace.annotations and _same_length(run, trace) else \
        "same model and k"
    return run, trace, args.trace, kind, slices


def _arch(trace: Any) -> str | None:
    text = (json.dumps(trace.meta.provenance) + " " + str(trace.meta.model)).lower()
    names = {"gemma4": ("gemma4", "gemma-4"), "qwen3moe": ("qwen3moe", "qwen3-30b", "qwen3-235b")}
    for arch, spellings in names.items():
        if any(s in text for s in spellings):
            return arch
    return None


def _same_length(run: Any, trace: Any) -> bool:
    from moesim.traces.format.trace_meta import DECODE

    return int((trace.pass_phase == DECODE).sum()) == run.n_steps


def timing_trace_for(run: Any, like: Any, slices: int) -> Any:
    from moesim.runs.hits import estimate_prefill_lookups, per_step_hits
    from moesim.runs.timing_trace import timing_trace

    cfg = run.config
    k = cfg.top_k
    if not k or cfg.n_prompt is None:
        raise UserError("a timing-only trace needs the run's k and prompt length: pass --top-k / --n-prompt", run.source)
    per_step = k * like.meta.n_layers
    hit_pct = run.hit_pct_cumulative
    if cfg.cache_mib == 0 or hit_pct is None or (hit_pct < 0).all():
        hits = np.zeros(run.n_steps)
        prefill = min(cfg.n_prompt * k, like.meta.n_experts) * like.meta.n_layers
    else:
        prefill = estimate_prefill_lookups(hit_pct.to_numpy(), per_step, cfg.n_prompt * per_step)
        hits = per_step_hits(hit_pct.to_numpy(), per_step, prefill)
    misses = np.clip(np.round(per_step - hits), 0, per_step).astype(np.int64)
    return timing_trace(like, k, cfg.n_prompt, prefill, misses, run.steps["read_bytes"].to_numpy(dtype=float), slices,
                        run.name)


def cmd_check_run(args: argparse.Namespace) -> int:
    from moesim.cli import emit
    from moesim.runs.check import check_run
    from moesim.runs.engine_map import bookkeeping_per_byte, engine_setup

    run, trace, name, kind, slices = load_inputs(args)
    setup = engine_setup(run.config, args.profile, tuple(args.profile_set), where=run.source,
                         arch=run.config.model or _arch(trace))
    mgmt = bookkeeping_per_byte(args.profile)  # a fit-profile output carries it in its header; 0 once the clock adds it
    result = check_run(run, trace, name, kind, setup, slices, arch=run.config.model or _arch(trace), mgmt_per_byte=mgmt)
    if args.out:
        write_report(result, Path(args.out))
    emit(args, result.to_dict(), render_check)
    return 0


def render_check(d: dict[str, Any]) -> str:
    s = d["summary"]
    t = s["tpot_s"]
    lines = [f"run {d['run']}  trace {d['trace']} ({d['trace_kind']})  profile {d['setup']['profile']}",
             f"TPOT mean   measured {t['measured']['mean'] * 1e3:8.1f} ms  predicted {t['predicted']['mean'] * 1e3:8.1f} ms"
             f"  error {_pct(t['error']['mean'])}",
             f"TPOT median measured {t['measured']['median'] * 1e3:8.1f} ms  predicted {t['predicted']['median'] * 1e3:8.1f} ms"
             f"  error {_pct(t['error']['median'])}",
             f"TPOT p90    measured {t['measured']['p90'] * 1e3:8.1f} ms  predicted {t['predicted']['p90'] * 1e3:8.1f} ms"
             f"  error {_pct(t['error']['p90'])}",
             f"per-step |error| mean {_pct(s['per_step_error']['mean_abs'])}, median {_pct(s['per_step_error']['median_abs'])}"]
    tt = s["ttft_s"]
    if tt["measured_prefill"]:
        lines.append(f"TTFT predicted {tt['predicted']:.2f} s vs measured prefill {tt['measured_prefill']:.2f} s  "
                     f"error {_pct(tt['error'])}")
    if "bytes" in s:
        b = s["bytes"]
        lines.append(f"bytes/step (simulator misses + padding): {b['steps_exact']}/{s['steps']} exact, "
                     f"max diff {b['max_abs_diff']:.0f} B ({b['max_rel_diff'] * 100:.3f} %)")
    if "bytes_engine_misses" in s:
        b = s["bytes_engine_misses"]
        lines.append(f"bytes/step (engine's recorded misses + padding): {b['steps_exact']}/{s['steps']} exact, "
                     f"max diff {b['max_abs_diff']:.0f} B")
        if "steps_exact_with_slice_offsets" in b:
            lines.append(f"bytes/step (same, slice offsets identified from the run's bytes): "
                         f"{b['steps_exact_with_slice_offsets']}/{s['steps']} exact")
    if "hits" in s:
        h = s["hits"]
        extra = f", {h['steps_equal_to_residency']} equal to the engine's residency" if "steps_equal_to_residency" in h else ""
        lines.append(f"hits/step: {h.get('steps_within_rounding', '-')}/{s['steps']} within rounding of the run's "
                     f"cumulative % (prefill lookups {h.get('prefill_lookups')}){extra}")
    for note in d["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} %"


def write_report(result: Any, out: Path) -> None:
    from moesim.atomic_io import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "steps.csv", result.steps.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(out / "summary.json", json.dumps(result.to_dict(), indent=2, sort_keys=True, default=float) + "\n")
    write_text_atomic(out / "report.html", _html(result))


def _html(result: Any) -> str:
    from moesim.reports.plots import new_figure, png_bytes

    steps = result.steps
    fig = new_figure(8.0, 4.5)
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(steps["step"], steps["wall_s_measured"] * 1e3, label="measured", lw=1)
    ax.plot(steps["step"], steps["wall_s_predicted"] * 1e3, label="predicted (simulator)", lw=1)
    ax.set_ylabel("ms / step")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(2, 1, 2)
    ax2.plot(steps["step"], steps["read_bytes_measured"] / 2**20, label="measured", lw=1)
    ax2.plot(steps["step"], steps["read_bytes_predicted"] / 2**20, label="predicted", lw=1, ls="--")
    ax2.set_ylabel("MiB read / step")
    ax2.set_xlabel("decode step")
    png = base64.b64encode(png_bytes(fig)).decode()
    text = render_check(result.to_dict())
    return ("<!doctype html><meta charset='utf-8'><title>moesim check-run</title>"
            f"<h1>check-run: {html.escape(result.run)}</h1><pre>{html.escape(text)}</pre>"
            f"<img src='data:image/png;base64,{png}'>"
            f"<h2>Per step</h2>{steps.to_html(index=False, float_format=lambda x: f'{x:.6g}')}")


def cmd_fit_profile(args: argparse.Namespace) -> int:
    from moesim.cli import emit
    from moesim.runs.engine_map import engine_setup
    from moesim.runs.fit import fit_run
    from moesim.runs.profile_out import fitted_profile_text
    from moesim.runs.step_model import ALL_FIGURES, SimulatorModel, profile_figures

    out = Path(args.out)
    if out.exists():
        raise UserError("exists; fit-profile never overwrites a file (choose another --out)", str(out))
    run, trace, name, kind, _ = load_inputs(args)
    setup = engine_setup(run.config, args.profile, tuple(args.profile_set), where=run.source,
                         arch=run.config.model or _arch(trace))
    free = tuple(f.strip() for f in args.free.split(",")) if args.free else ALL_FIGURES
    bad = [f for f in free if f not in ALL_FIGURES]
    if bad:
        raise UserError(f"unknown figure {bad[0]!r} (known: {', '.join(ALL_FIGURES)})", "--free")
    model = SimulatorModel(trace, setup.profile, setup.timed)
    ratio = args.storage_depth_ratio
    if ratio is not None and not (ratio > 0 and np.isfinite(ratio)):
        raise UserError(f"must be a positive number, got {ratio}", "--storage-depth-ratio")
    ties = {"ssd_bandwidth": ("ssd_bandwidth_qd1", ratio)} if ratio is not None else None
    result = fit_run(run, model, profile_figures(setup.profile), free, ties=ties)
    command = "moesim fit-profile " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["fit-profile"] \
        else f"moesim fit-profile {args.run} --trace {args.trace} --profile {args.profile}"
    text = fitted_profile_text(setup.profile, result, run, name, command)
    from moesim.atomic_io import write_text_atomic

    write_text_atomic(out, text)
    data = result.to_dict() | {"run": run.name, "trace": name, "profile_written": str(out)}
    emit(args, data, render_fit)
    return 0


def render_fit(d: dict[str, Any]) -> str:
    from moesim.runs.fit import UNITS

    lines = [f"fitted on run {d['run']} (trace {d['trace']}), {d['n_obs']} residuals:"]
    for name, f in d["fitted"].items():
        rel = f"{f['sigma'] / f['value'] * 100:.1f} %" if f["value"] else "-"
        lines.append(f"  {name:17s} {f['value']:.4g} {UNITS[name]:7s} +- {f['sigma']:.2g} ({rel})")
    for name, f in d.get("derived", {}).items():
        lines.append(f"  {name:17s} {f['value']:.4g} {f['unit']:7s} set by rule: {f['rule']}")
    for name, why in d["not_identified"].items():
        lines.append(f"  not identified: {name}: {why}")
    for block, b in d["blocks"].items():
        lines.append(f"  residual {block:8s} rms {b['rms_s'] * 1e3:8.2f} ms over {b['n']} (mean measured "
                     f"{b['mean_measured_s'] * 1e3:.1f} ms)")
    for note in d["notes"]:
        lines.append(f"  note: {note}")
    lines.append(f"wrote {d['profile_written']}")
    return "\n".join(lines)
