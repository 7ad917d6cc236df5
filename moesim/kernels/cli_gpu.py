"""GPU commands: `moesim calibrate` (and `moesim validate`, which registers here too).

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
        from moesim.traces.catalog import load_model
    except ImportError:
        raise UserError("--model needs the model catalog (moesim.traces.catalog), which this install lacks",
                        "--model") from None
    spec = load_model(model)
    return ExpertShapes.from_model_spec(spec, n_layers=1), int(spec.top_k)


def _run_calibrate(args: argparse.Namespace) -> int:
    from moesim.kernels.device import require_cuda

    require_cuda("calibrate", args.device)
    out = Path(args.out)
    if out.is_dir():
        raise UserError("is a directory; give the profile file to write, e.g. my-gpu.yaml", str(out))
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
        "measured": {m.path: {"value": m.value, "detail": m.detail} for m in result.measured},
    }
    emit(args, summary, _render_calibrate)
    return 0


def _render_calibrate(summary: dict[str, Any]) -> str:
    from moesim.kernels.profile_yaml import format_quantity

    kinds = {"bandwidth": "bandwidth", "pageable_bandwidth": "bandwidth", "memory_bandwidth": "bandwidth",
             "latency": "time", "launch_overhead": "time", "capacity": "bytes"}
    lines = [f"profile: {summary['profile']}", f"report:  {summary['report']}", f"raw:     {summary['raw']}"]
    for path, entry in summary["measured"].items():
        kind = kinds.get(path.rsplit(".", 1)[-1])
        value = format_quantity(entry["value"], kind, 4) if kind else str(entry["value"])
        lines.append(f"  {path:32s} {value}")
    return "\n".join(lines)


def _register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="measure this GPU (copies, expert kernel, overlap, launch, HBM) and write a profile",
        description="Run microbenchmarks on the CUDA device and write a hardware profile YAML whose measured "
                    "values carry their provenance; other values come from --base. Writes <out>.calibration.json "
                    "(fits, residuals, derates, kernel table) and <out>.calibration.csv (raw timings) beside it.")
    p.add_argument("--base", required=True, help="profile (catalog name or YAML) to copy unmeasured values from, "
                                                 "e.g. h100-sxm")
    p.add_argument("--out", required=True, help="profile YAML to write")
    p.add_argument("--name", help="profile name (default: the output file's stem)")
    p.add_argument("--model", help="catalog model whose expert shape the kernel benchmark uses "
                                   "(default: OLMoE-1B-7B's 2048 x 1024, 64 experts, top-8)")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--quick", action="store_true", help="fewer sizes, trials and histogram points")
    p.add_argument("--trials", type=int, help="repetitions per point (default 5, quick 3)")
    p.add_argument("--max-size", help="largest copy in the sweep, e.g. 256MiB (default 1GiB, quick 256MiB)")
    add_json_flag(p)
    p.set_defaults(func=_run_calibrate)


# `validate` adds its _register_validate here.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_register_calibrate,)


def register(subparsers: argparse._SubParsersAction) -> None:
    for add in COMMANDS:
        add(subparsers)
