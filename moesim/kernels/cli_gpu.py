"""GPU commands: `moesim calibrate` and `moesim validate`.

Each command adds itself through a `_register_<name>(subparsers)` function listed in COMMANDS.
Nothing here imports torch or triton at module level: `moesim --help` works on a core install,
and a command run without CUDA exits 1 with one line ("no CUDA device: ... needs a GPU").
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable

from moesim.cli import add_json_flag, emit
from moesim.errors import UserError
from moesim.units import parse_quantity


def load_base_profile(name_or_path: str) -> Any:
    """The base profile (catalog name or YAML path) whose unmeasured values a calibration keeps."""
    try:
        from moesim.hw_profiles.loader import load_profile
    except ImportError:
        raise UserError("reading a base profile needs moesim.hw_profiles.loader, which this install lacks",
                        "--base") from None
    return load_profile(name_or_path)


def _shapes_for(model: str | None) -> tuple[Any, int]:
    from moesim.kernels.calibrate import DEFAULT_SHAPES, DEFAULT_TOP_K
    from moesim.kernels.shapes import ExpertShapes

    if model is None:
        return DEFAULT_SHAPES, DEFAULT_TOP_K
    try:
        from moesim.traces.models.catalog import load_model
    except ImportError:
        raise UserError("--model needs the model catalog (moesim.traces.models.catalog), which this install lacks",
                        "--model") from None
    spec = load_model(model)
    return ExpertShapes.from_model_spec(spec, n_layers=1), int(spec.top_k)


def _device_index(text: str) -> int | None:
    """None for "cpu"; the CUDA index for "N", "cuda" or "cuda:N"; UserError otherwise."""
    text = str(text).strip().lower()
    if text == "cpu":
        return None
    if text == "cuda":
        return 0
    try:
        return int(text.split(":", 1)[1] if text.startswith("cuda:") else text)
    except ValueError:
        raise UserError(f"expects cpu, cuda, cuda:N or N, got {text!r}", "--device") from None


def _run_calibrate(args: argparse.Namespace) -> int:
    from moesim.kernels.device import require_cuda

    out = Path(args.out)
    if out.is_dir():
        raise UserError("is a directory; give the profile file to write, e.g. my-gpu.yaml", str(out))
    index = _device_index(args.device)
    if index is None:
        return _run_calibrate_cpu(args, out)
    if not args.base:
        raise UserError("a GPU calibration needs --base (the catalog profile whose unmeasured values it keeps)",
                        "--base")
    require_cuda("calibrate", index)
    args.device = index
    base = load_base_profile(args.base)
    shapes, top_k = _shapes_for(args.model)
    from moesim.kernels.calibrate import CalibrateConfig, calibrate, write_outputs

    overrides: dict[str, Any] = {"device_index": args.device, "shapes": shapes, "top_k": top_k}
    if args.trials is not None:
        if args.trials < 1:
            raise UserError(f"must be at least 1, got {args.trials}", "--trials")
        overrides["trials"] = args.trials
    if args.max_size is not None:
        overrides["max_size"] = int(parse_quantity(args.max_size, "bytes", "--max-size"))
    config = CalibrateConfig.quick(**overrides) if args.quick else CalibrateConfig(**overrides)
    if config.max_size < 2 * config.min_size:
        raise UserError(f"must be at least {2 * config.min_size} bytes", "--max-size")
    if max(config.kernel_active) > shapes.n_experts:
        config = dataclasses.replace(config, kernel_active=tuple(
            a for a in config.kernel_active if a <= shapes.n_experts))
    result = calibrate(config)
    paths = write_outputs(result, base, out, args.name or out.stem)
    summary = {
        **paths,
        "env": result.env.to_dict(),
        "measured": {m.path: {"value": m.value, "kind": m.kind, "detail": m.detail} for m in result.measured},
    }
    emit(args, summary, _render_calibrate)
    return 0


def _run_calibrate_cpu(args: argparse.Namespace, out: Path) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("calibrate --device cpu needs torch (pip install 'moesim[gpu]')") from None
    from moesim.kernels.calibrate import write_outputs
    from moesim.kernels.cpu_calibrate import CpuCalibrateConfig, base_cpu_profile, calibrate_cpu

    overrides: dict[str, Any] = {}
    if args.trials is not None:
        if args.trials < 1:
            raise UserError(f"must be at least 1, got {args.trials}", "--trials")
        overrides["trials"] = args.trials
    if args.read_dir is not None:
        if not Path(args.read_dir).is_dir():
            raise UserError("is not a directory", "--read-dir")
        overrides["directory"] = args.read_dir
    if args.max_size is not None:
        overrides["file_bytes"] = int(parse_quantity(args.max_size, "bytes", "--max-size"))
    config = CpuCalibrateConfig.tiny(**overrides) if args.quick else CpuCalibrateConfig(**overrides)
    base = load_base_profile(args.base) if args.base else base_cpu_profile()
    result = calibrate_cpu(config)
    paths = write_outputs(result, base, out, args.name or out.stem)
    summary = {**paths, "env": result.env.to_dict(),
               "measured": {m.path: {"value": m.value, "kind": m.kind, "detail": m.detail} for m in result.measured},
               "note": result.report.get("note", "")}
    emit(args, summary, _render_calibrate)
    return 0


def _render_calibrate(summary: dict[str, Any]) -> str:
    from moesim.units import BASE_UNITS, format_quantity

    lines = [f"profile: {summary['profile']}", f"report:  {summary['report']}", f"raw:     {summary['raw']}"]
    for path, entry in summary["measured"].items():
        kind = entry["kind"]  # the unit kind each Measured value carries
        value = format_quantity(entry["value"], kind, 4) if kind in BASE_UNITS else str(entry["value"])
        lines.append(f"  {path:32s} {value}")
    if summary.get("note"):
        lines.append(f"note: {summary['note']}")
    return "\n".join(lines)


def _register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="measure this GPU (copies, expert kernel, overlap, launch, HBM) and write a profile",
        description="Run microbenchmarks on the CUDA device and write a hardware profile YAML whose measured "
                    "values carry their provenance; other values come from --base. Writes <out>.calibration.json "
                    "(fits, residuals, derates, kernel table) and <out>.calibration.csv (raw timings) beside it.")
    p.add_argument("--base", help="profile (catalog name or YAML) to copy unmeasured values from, e.g. h100-sxm "
                                  "(required on a GPU; on --device cpu a CPU skeleton is the default)")
    p.add_argument("--out", required=True, help="profile YAML to write")
    p.add_argument("--name", help="profile name (default: the output file's stem)")
    p.add_argument("--model", help="catalog model whose expert shape the kernel benchmark uses "
                                   "(default: OLMoE-1B-7B's 2048 x 1024, 64 experts, top-8)")
    p.add_argument("--device", default="0", help="CUDA device index (default 0), or cpu: this machine's CPU as "
                                                  "the device (DRAM cache, experts in a file read with O_DIRECT)")
    p.add_argument("--quick", action="store_true", help="fewer sizes, trials and histogram points (cpu: seconds)")
    p.add_argument("--read-dir", help="cpu: directory for the file-read benchmark (default: the temp directory)")
    p.add_argument("--trials", type=int, help="repetitions per point (default 5, quick 3)")
    p.add_argument("--max-size", help="largest copy in the sweep, e.g. 256MiB (default 1GiB, quick 256MiB); "
                                             "cpu: size of the file-read test file")
    add_json_flag(p)
    p.set_defaults(func=_run_calibrate)


def _run_validate(args: argparse.Namespace) -> int:
    import sys

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", "--out")
    try:
        import torch
    except ImportError:
        raise UserError("validate needs torch (pip install 'moesim[gpu]')") from None
    from moesim.kernels.executor import resolve_device, shapes_for_trace
    from moesim.kernels.shapes import ExpertShapes
    from moesim.kernels.validate import ValidateConfig, run_validation
    from moesim.kernels.validate_report import write_validation
    from moesim.policies.registry import parse_spec, parse_spec_list
    from moesim.sim.capacity import parse_capacity_list
    from moesim.sim.cli_replay import load_trace_arg
    from moesim.sim.cli_timing import resolve_profile

    if not args.device.startswith("cpu") and not torch.cuda.is_available():
        raise UserError("no CUDA device: validate needs a GPU (pass --device cpu to check the counts without one)")
    device = str(resolve_device(args.device, "validate"))
    if device == "cpu":
        torch.set_num_threads(1)  # tiny CPU checks: thread-pool wake-ups would cost more than the math
    trace = load_trace_arg(args.trace, args)
    profile = resolve_profile(args.profile, args.profile_set)
    on_cpu = device == "cpu"
    if args.dtype is None:
        args.dtype = "fp32" if on_cpu else "bf16"
    if args.prefetch is None:  # the CPU executor reads synchronously: prefetch would not overlap there
        args.prefetch = "none" if on_cpu else "none,oracle"
    backend = args.backend
    if backend == "auto" and on_cpu:
        backend = "cpu"  # the operator `calibrate --device cpu` timed
    policies = tuple(spec.label() for spec in parse_spec_list(args.policies, "eviction"))
    prefetches = tuple(spec.label() for spec in parse_spec_list(args.prefetch, "prefetch"))
    if not policies or not prefetches:
        raise UserError("give at least one policy and one prefetch policy", "--policies/--prefetch")
    parse_spec(args.miss, "miss")
    if args.repeat < 1:
        raise UserError(f"must be at least 1, got {args.repeat}", "--repeat")
    shapes = None
    harness_model = trace.meta.extra.get("harness_model") if isinstance(trace.meta.extra, dict) else None
    if args.expert_shape is None and harness_model:  # a trace the reference harness recorded names its shapes
        args.expert_shape = f"{harness_model['hidden']}x{harness_model['inter']}"
        if args.dtype != harness_model.get("dtype", args.dtype):
            raise UserError(f"the trace's harness model has {harness_model['dtype']} weights, --dtype says "
                            f"{args.dtype}", "--dtype")
    if args.expert_shape:
        try:
            hidden, inter = (int(v) for v in args.expert_shape.lower().split("x"))
            shapes = ExpertShapes(hidden, inter, trace.meta.n_layers, trace.meta.n_experts, args.dtype)
        except ValueError:
            raise UserError(f"expects HIDDENxINTER with positive integers, e.g. 64x32; got {args.expert_shape!r}",
                            "--expert-shape") from None
    else:
        shapes_for_trace(trace, args.model, args.dtype)  # fail before running anything
    config = ValidateConfig(
        policies=policies, capacities=tuple(parse_capacity_list(args.capacity, trace)), prefetches=prefetches,
        scope=args.scope, miss=args.miss, model=args.model, dtype=args.dtype, device=device, seed=args.seed,
        backend=backend, telemetry=not args.no_telemetry, shapes_override=shapes, profile_source=args.profile,
        repeats=args.repeat, routing_sync=args.routing_sync)

    def progress(text: str) -> None:
        print(f"validate: {text}", file=sys.stderr, flush=True)

    validation = run_validation(trace, profile, config, progress=progress)
    paths = write_validation(validation, out)
    report = {**validation.summary, "outputs": paths,
              "table": validation.runs[["label", "capacity", "identical", "step_mape", "step_mpe"]].to_dict("records")}
    emit(args, report, _render_validate)
    if validation.mismatches:
        raise UserError(f"decisions differ between the executor and the simulator in {len(validation.mismatches)} "
                        f"run(s); first: {validation.mismatches[0]} (report: {paths['report']})")
    return 0


def _render_validate(report: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:+.1f}%"

    lines = [f"{'run':36s} {'capacity':>9s} {'counts':>9s} {'MAPE':>8s} {'MPE':>8s}"]
    for row in report["table"]:
        lines.append(f"{row['label']:36s} {row['capacity']:>9s} {'identical' if row['identical'] else 'DIFFER':>9s} "
                     f"{pct(row['step_mape']):>8s} {pct(row['step_mpe']):>8s}")
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    lines.append(f"rankings preserved: {report.get('rankings_preserved')}; min Kendall tau: "
                 f"{report.get('kendall_tau_min')}")
    lines.append(f"report: {report['outputs']['report']}")
    return "\n".join(lines)


def _register_validate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate", help="run policies on the GPU executor and in the simulator; compare counts, step times, ranking",
        description="Replay a trace on this CUDA device (real copies and expert kernels, driven by the simulator's "
                    "planner) and in the simulator with the same (calibrated) profile, for every policy x capacity x "
                    "prefetch. Hit, miss and byte counts must be identical (exit 1 otherwise); step-latency MAPE, "
                    "bias, p50/p99 errors, the policy ranking, H2D throughput and NVML bytes are reported. Writes "
                    "runs/steps/rankings Parquet, summary.json and report.html to --out.")
    p.add_argument("--trace", required=True, help='trace file, or "bundled:NAME"')
    from moesim.traces.format.cli_input import add_trace_input_flags

    add_trace_input_flags(p)
    p.add_argument("--profile", required=True, help="hardware profile (a calibrated YAML from `moesim calibrate`, "
                                                    "or a catalog name)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="profile_set",
                   help="override a profile field (repeatable)")
    p.add_argument("--policies", default="lru,lfu,belady", help="comma list of eviction policy specs (default: "
                                                               "three whose decisions differ)")
    p.add_argument("--capacity", default="5%,25%", help='comma list of capacities ("5%%", "4000MiB", "51slots")')
    p.add_argument("--prefetch", help="comma list of prefetch policy specs (default none,oracle; cpu: none)")
    p.add_argument("--scope", choices=("global", "layer"), default="global", help="cache scope")
    p.add_argument("--miss", default="stall", help="miss handling: stall (default) or cpu")
    p.add_argument("--model", help="catalog model for expert shapes, FLOPs and dense sizes (default: the trace's)")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="expert weight dtype (default bf16; cpu: fp32)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with a `calibrate --device cpu` profile and "
                                                     "no prefetch, step times are measured on the CPU; otherwise "
                                                     "counts only)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, activations and randomised policies")
    p.add_argument("--backend", choices=("auto", "triton", "torch", "cpu"), default="auto",
                   help="expert kernel: the Triton grouped kernel, the torch reference, or the calibrated CPU "
                        "operator (auto: triton on CUDA, cpu on the CPU)")
    p.add_argument("--expert-shape", metavar="HIDDENxINTER",
                   help="override the model's expert shape (tiny shapes for CPU runs; moved bytes then differ "
                        "from the trace's)")
    p.add_argument("--repeat", type=int, default=1, help="rounds over the whole grid (interleaved); step times "
                                                          "are medians over rounds, the spread is reported")
    p.add_argument("--no-telemetry", action="store_true", help="do not sample NVML")
    p.add_argument("--routing-sync", action="store_true",
                   help="model the device-to-host routing read on both sides: the executor runs a router and reads "
                        "its top-k on the host before each cell's copies; the simulator adds two launches and the "
                        "d2h latency before each gate")
    p.add_argument("--out", required=True, help="directory for the Parquet tables, summary.json and report.html")
    add_json_flag(p)
    p.set_defaults(func=_run_validate)


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_register_calibrate, _register_validate)


def register(subparsers: argparse._SubParsersAction) -> None:
    for add in COMMANDS:
        add(subparsers)
