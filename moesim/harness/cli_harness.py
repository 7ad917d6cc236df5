"""`moesim harness`: run the independent reference harness and compare moesim's prediction of it.

    moesim harness --device cpu --profile cpu.yaml --capacity 10%,25% --repeat 3 --out results/cpu/x/harness

Writes to --out: trace.parquet (the routing the harness produced; the same at every capacity, as
the cache does not change the model's arithmetic), runs.parquet (one row per capacity: counts
harness vs moesim, step MAPE/MPE, run-to-run spread, time split), steps.parquet (per capacity and
pass: median measured step, min/max over repeats, simulated step), summary.json. Repeats run
interleaved over capacities (round by round), so slow drift of a shared machine spreads over all.
Exit 1 when counts differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from moesim.cli import add_json_flag, emit
from moesim.errors import UserError
from moesim.units import parse_quantity

PRESETS = {
    "olmoe-mini": dict(n_layers=4, n_experts=64, top_k=8, hidden=768, inter=384, n_heads=6),
    "tiny": dict(n_layers=2, n_experts=8, top_k=2, hidden=64, inter=32, n_heads=4, vocab=64),
}


def parse_slots(text: str, n_objects: int, where: str = "--capacity") -> list[int]:
    """"10%,25%,40slots" -> cache slots (whole experts); a percentage is of all experts, rounded down."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            if part.endswith("%"):
                value = float(part[:-1])
                if not 0 <= value <= 100:
                    raise ValueError
                out.append(int(n_objects * value / 100.0))
            elif part.endswith("slots"):
                out.append(int(part[: -len("slots")]))
            else:
                raise ValueError
        except ValueError:
            raise UserError(f"expects N% (of all experts) or Nslots, got {part!r}", where) from None
        if out[-1] < 0:
            raise UserError(f"must not be negative, got {part!r}", where)
    if not out:
        raise UserError("no capacity given", where)
    return out


def _run(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        raise UserError("the harness needs torch (pip install 'moesim[gpu]')") from None
    import pandas as pd

    from moesim.atomic_io import write_text_atomic
    from moesim.harness.model import HarnessModel
    from moesim.harness.predict import compare
    from moesim.harness.run import Workload, run_harness
    from moesim.sim.cli_timing import resolve_profile
    from moesim.traces.format.io import save_trace

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", "--out")
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise UserError(f"no such device here: {args.device!r} (cpu, or cuda with a GPU)", "--device")
    if args.repeat < 1:
        raise UserError(f"must be at least 1, got {args.repeat}", "--repeat")
    for name in ("requests", "decode"):
        if getattr(args, name) < 1:
            raise UserError(f"must be at least 1, got {getattr(args, name)}", f"--{name}")
    if args.prompt < 1:
        raise UserError(f"must be at least 1, got {args.prompt}", "--prompt")
    throttle = float(parse_quantity(args.throttle, "bandwidth", "--throttle")) if args.throttle else None
    profile = resolve_profile(args.profile, args.profile_set)
    model = HarnessModel(**PRESETS[args.preset], dtype=args.dtype, seed=args.seed)
    slots = parse_slots(args.capacity, model.n_layers * model.n_experts)
    workload = Workload(n_requests=args.requests, prompt_len=args.prompt, decode_steps=args.decode, seed=args.seed)
    store = Path(args.store) if args.store else out / "store"
    runs: dict[int, list[Any]] = {s: [] for s in slots}
    for round_ in range(args.repeat):
        for s in slots:
            print(f"harness: {s} slots, round {round_ + 1}/{args.repeat}", file=sys.stderr, flush=True)
            runs[s].append(run_harness(model, workload, s, str(store), device=args.device, throttle_Bps=throttle,
                                       direct=not args.buffered, threads=args.threads))
    rows, steps = [], []
    for s in slots:
        row, st = compare(runs[s], profile)
        rows.append(row)
        steps.append(st)
    first = runs[slots[0]][0]
    if len({r[0].trace.content_hash() for r in runs.values()}) != 1:
        raise UserError("the harness routed differently at different capacities: its arithmetic is not "
                        "deterministic on this device")
    out.mkdir(parents=True, exist_ok=True)
    save_trace(first.trace, out / "trace.parquet")
    table = pd.DataFrame(rows)
    table.to_parquet(out / "runs.parquet", index=False)
    pd.concat(steps, ignore_index=True).to_parquet(out / "steps.parquet", index=False)
    summary = {
        "format": "moesim.harness/1", "device": args.device, "preset": args.preset, "model": model.to_dict(),
        "workload": vars(workload), "profile": profile.name, "profile_source": args.profile,
        "throttle_Bps": throttle, "read_mode": first.read_mode, "read_note": first.read_note,
        "repeats": args.repeat, "threads": args.threads,
        "all_counts_identical": bool(table["counts_identical"].all()),
        "rows": json.loads(table.to_json(orient="records")),
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    emit(args, summary, _render)
    if not summary["all_counts_identical"]:
        bad = table[~table["counts_identical"]].iloc[0]
        raise UserError(f"harness and moesim counts differ at {bad['capacity_slots']} slots: "
                        f"{bad['count_differences']}")
    return 0


def _render(summary: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = [f"{'slots':>6s} {'counts':>9s} {'hits':>6s} {'misses':>6s} {'MAPE':>7s} {'MPE':>7s} "
             f"{'decode MAPE':>11s} {'spread':>7s}"]
    for r in summary["rows"]:
        lines.append(f"{r['capacity_slots']:>6d} {'identical' if r['counts_identical'] else 'DIFFER':>9s} "
                     f"{r['harness_hits']:>6d} {r['harness_misses']:>6d} {pct(r['step_mape']):>7s} "
                     f"{pct(r['step_mpe']):>7s} {pct(r['decode_step_mape']):>11s} {pct(r['step_spread_median']):>7s}")
    lines.append(f"reads: {summary['read_mode']} {summary['read_note']}".rstrip())
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "harness", help="run the independent reference harness (plain PyTorch offload) and compare moesim's "
                        "prediction of it",
        description="Decode with a plain-PyTorch MoE model whose expert offload (expert file or pinned host copy, "
                    "an OrderedDict LRU, fetches) is written without moesim's planner; record its routing as a trace "
                    "and its step times; predict the run with moesim (LRU, same capacity) from the trace and --profile; "
                    "report counts (must be equal) and per-step error.")
    p.add_argument("--profile", required=True, help="calibrated profile (moesim calibrate --device cpu / GPU)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="profile_set",
                   help="override a profile field (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu (experts in a file, DRAM cache) or cuda")
    p.add_argument("--preset", choices=sorted(PRESETS), default="olmoe-mini",
                   help="model shape: olmoe-mini (4 layers x 64 experts, top-8, 768x384) or tiny (tests)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="weight dtype (CPU: fp32)")
    p.add_argument("--capacity", default="10%,25%", help='cache sizes: "N%%" of all experts or "Nslots"')
    p.add_argument("--requests", type=int, default=2, help="requests, each a prefill and decode steps")
    p.add_argument("--prompt", type=int, default=8, help="prompt tokens per request")
    p.add_argument("--decode", type=int, default=24, help="decode steps per request")
    p.add_argument("--repeat", type=int, default=3, help="rounds (interleaved over capacities); spread reported")
    p.add_argument("--throttle", help="pace every fetch to an emulated link speed, e.g. 5GB/s (SpecMD's setup)")
    p.add_argument("--store", help="directory of the expert file, built once and reused (default: OUT/store)")
    p.add_argument("--buffered", action="store_true", help="buffered reads instead of O_DIRECT")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as calibrate uses)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and prompts")
    p.add_argument("--out", required=True, help="directory for trace, runs/steps Parquet and summary.json")
    add_json_flag(p)
    p.set_defaults(func=_run)
