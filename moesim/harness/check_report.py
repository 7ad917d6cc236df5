"""The README of one check directory (scripts/gpu_check.sh): what ran, on what, and the numbers it gave.

    python -m moesim.harness.check_report results/gpu/2026-12-08-h100-sxm

Reads what the check wrote (env.json, profile.calibration.json, harness/summary.json,
validate/harness-trace/summary.json and report.md, test-gpu.log, timings.tsv) and writes README.md
beside them: the environment, the commands, the harness table (counts harness vs moesim, per-step
MAPE, MPE and run-to-run spread per capacity), the validate verdict and its per-run table, and
what is missing. Nothing is computed that the files do not say.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from moesim.atomic_io import write_text_atomic


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f} %"


def render(out: Path) -> str:
    env = _load(out / "env.json") or {}
    cal = _load(out / "profile.calibration.json") or {}
    harness = _load(out / "harness" / "summary.json")
    validate = _load(out / "validate" / "harness-trace" / "summary.json")
    lines = [f"# Check {out.name}", "",
             f"Written by scripts/gpu_check.sh on {env.get('date', '?')} ({env.get('device', '?')}: "
             f"{env.get('device_name', '?')}); load average at start {env.get('load_start', '?')}, at end "
             f"{env.get('load_end', '?')}.", ""]
    if env.get("note"):
        lines += [f"Note: {env['note']}", ""]
    timings = out / "timings.tsv"
    if timings.is_file():
        lines += ["| step | seconds | exit |", "|---|---|---|"]
        for row in timings.read_text().splitlines():
            parts = row.split("\t")
            if len(parts) == 3:
                lines.append(f"| {parts[0]} | {parts[1]} | {parts[2]} |")
        lines.append("")
    lines += ["## Commands", "", "```", *(env.get("commands") or []), "```", ""]
    if cal:
        lines += ["## Calibration", "", f"{cal.get('note', '')}", ""]
        fr = cal.get("file_reads")
        if fr:
            lines.append(f"File reads: {fr.get('mode')} {fr.get('note') or ''}".rstrip())
            lines.append("")
    if harness:
        lines += ["## Reference harness vs moesim (LRU)", "",
                  f"Model {harness['preset']} ({harness['model']['n_layers']} layers x {harness['model']['n_experts']} "
                  f"experts, top-{harness['model']['top_k']}, {harness['model']['hidden']}x{harness['model']['inter']} "
                  f"{harness['model']['dtype']}), {harness['repeats']} repeats, reads {harness['read_mode']}.", "",
                  "| slots | counts | hits | misses | bytes | step MAPE | MPE | decode MAPE | run-to-run spread "
                  "(median step) | total spread | real total s | sim total s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in harness["rows"]:
            lines.append(f"| {r['capacity_slots']} | {'identical' if r['counts_identical'] else 'DIFFER'} | "
                         f"{r['harness_hits']} | {r['harness_misses']} | {r['harness_bytes']} | {_pct(r['step_mape'])} | "
                         f"{_pct(r['step_mpe'])} | {_pct(r['decode_step_mape'])} | {_pct(r['step_spread_median'])} | "
                         f"{_pct(r['total_spread'])} | {r['real_total_s']:.3f} | {r['sim_total_s']:.3f} |")
        lines.append("")
    if validate:
        lines += ["## moesim validate on the harness's trace (executor vs simulator)", "",
                  f"All counts identical: {validate.get('all_identical')}; timings meaningful: "
                  f"{validate.get('timings_meaningful')}; step MAPE mean {_pct(validate['step_mape'].get('mean'))}, "
                  f"max {_pct(validate['step_mape'].get('max'))}; ranking preserved (ties are ties, gaps within the "
                  f"spread undecided): {validate.get('rankings_preserved')}; disagreements "
                  f"{validate.get('ranking_disagreements')}, undecided pairs {validate.get('ranking_undecided_pairs')}.",
                  ""]
        if validate.get("note"):
            lines += [f"Note: {validate['note']}", ""]
        md = out / "validate" / "harness-trace" / "report.md"
        if md.is_file():
            lines += [md.read_text().strip(), ""]
    log = out / "test-gpu.log"
    if log.is_file():
        tail = log.read_text().strip().splitlines()[-3:]
        lines += ["## make test-gpu", "", "```", *tail, "```", ""]
    elif env.get("device") != "cpu":
        lines += ["## make test-gpu", "", "No `test-gpu` target in the Makefile at the time of this check.", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m moesim.harness.check_report CHECK_DIR", file=sys.stderr)
        return 1
    out = Path(args[0])
    write_text_atomic(out / "README.md", render(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
