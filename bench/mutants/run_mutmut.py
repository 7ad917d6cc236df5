"""`make mutants`: mutmut over the modules that decide results, a score per module in bench/MUTANTS.md.

Each target (a module and the tests that guard it) runs in its own temporary copy of the repository
(bench/mutants/repo_copy.py) with a [tool.mutmut] section written into the copy's pyproject.toml,
so the working tree is never touched and every module is scored against its own tests only.
Slow (minutes to an hour per module on 2 cores): it runs outside CI, where the curated probes
(bench/mutants/probes.py) stand in for it.

    python -m bench.mutants.run_mutmut                       # every target
    python -m bench.mutants.run_mutmut --only bounds,grouping  # some of them
    python -m bench.mutants.run_mutmut --only grouping --recheck  # re-run the saved survivors only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.mutants.repo_copy import REPO, copy_env, make_copy, remove_copy

OUT = REPO / "bench" / "MUTANTS.md"
RAW = REPO / "bench" / "mutants" / "results"  # per-target JSON (verdict and diff of each mutant)
NOTES = REPO / "bench" / "mutants" / "survivors.yaml"  # why each survivor lives: equivalent or open

KILLED = {1, 3}  # mutmut: a test failed (3: pytest internal error, counted as a kill)
SURVIVED = {0, 33}  # 33: no selected test runs the mutated function, so nothing can kill it
TIMEOUT = {36, -24, 24, 152, 255}


@dataclass(frozen=True)
class Target:
    name: str
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    deselect: tuple[str, ...] = ()  # slow tests of those files that check no result of the modules (CLI plumbing)


TARGETS = [
    Target("bounds", ("moesim/sim/bounds.py",),
           ("tests/sim/test_timing_bounds_hand.py", "tests/sim/test_timing_requests_hand.py",
            "tests/sim/test_timing_compute_bound.py")),
    # the cost model is the operator package (moesim/sim/compute/) since the clock rebuild: every module
    # there decides a time (formats' bytes and dequant ops, processors' peaks and kernel counts, shapes,
    # attention's context counts, operators, experts, the measured kernel table)
    Target("cost_model", ("moesim/sim/compute/*.py",),
           ("tests/sim/test_compute_operators.py", "tests/sim/test_compute_formulas.py",
            "tests/sim/test_compute_kernel_table.py", "tests/sim/test_compute_shapes.py",
            "tests/sim/test_compute_processors.py", "tests/sim/test_compute_timed.py", "tests/sim/test_timing_hand.py",
            "tests/sim/test_timing_compute_bound.py", "tests/sim/test_timing_miss_handling.py",
            "tests/sim/test_compute_batched.py"),
           ("tests/sim/test_compute_timed.py::test_compare_runs_each_listed_placement",
            "tests/sim/test_compute_timed.py::test_placement_cli_errors_are_one_line")),
    # importers' grouping: the pass rules (which rows make a pass, its phase), the assembly into cells
    # and the duplicate/repeat checks
    Target("grouping", ("moesim/traces/importers/pass_rules.py", "moesim/traces/importers/assemble.py",
                        "moesim/traces/format/grouping.py"),
           ("tests/traces/traceio/test_import_generic.py", "tests/traces/traceio/test_import_arrays.py",
            "tests/traces/traceio/test_format_errors.py", "tests/traces/test_grouping.py",
            "tests/traces/test_assemble.py", "tests/traces/traceio/test_import_router_logs.py",
            "tests/traces/traceio/test_import_layouts_property.py", "tests/traces/test_pass_rules.py")),
    Target("cache_core", ("moesim/sim/cache_core.py",),
           ("tests/sim/test_cache_core.py", "tests/policies/test_hand_cases.py", "tests/policies/test_contracts.py")),
    Target("policies", ("moesim/policies/eviction/*.py",),
           ("tests/policies/test_hand_cases.py", "tests/policies/test_contracts.py",
            "tests/policies/test_libcachesim_oracle.py")),
    Target("planner", ("moesim/sim/plan.py", "moesim/sim/plan_decisions.py", "moesim/sim/copy_ledger.py",
                       "moesim/sim/tier_caches.py"),
           ("tests/sim/test_timing_plan.py", "tests/sim/test_timing_hand.py", "tests/sim/test_timing_order.py")),
    Target("engine", ("moesim/sim/engine.py", "moesim/sim/read_slices.py"),
           ("tests/sim/test_timing_hand.py", "tests/sim/test_timing_order.py", "tests/sim/test_timing_requests_hand.py",
            "tests/sim/test_read_slices.py")),
    # where a multi-socket CPU's reads come from (a time: bytes over node and link bandwidths)
    Target("numa", ("moesim/sim/numa.py",), ("tests/sim/test_numa.py", "tests/sim/test_cpu_only.py")),
    Target("metrics", ("moesim/sim/metrics.py", "moesim/sim/timed_result.py"),
           ("tests/sim/test_timing_hand.py", "tests/sim/test_timing_requests_hand.py",
            "tests/sim/test_timing_compute_bound.py", "tests/sim/test_cli_replay.py")),
]


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def configure(root: Path, target: Target) -> None:
    tests = [t for t in target.tests if (root / t).exists()]
    deselect = [arg for node in target.deselect for arg in ("--deselect", node)]
    section = (
        "\n[tool.mutmut]\n"
        'source_paths = ["moesim"]\n'
        f"only_mutate = {_toml_list(list(target.modules))}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        f"pytest_add_cli_args = {_toml_list(['-p', 'no:cacheprovider', '-q', '-x'] + deselect)}\n"
        'also_copy = ["docs", "bench"]\n'
    )
    with open(root / "pyproject.toml", "a") as f:
        f.write(section)


def mutant_diffs(root: Path, module: str) -> dict[str, str]:
    """Diff of every mutant of `module` against the original function, read from mutmut's mutated copy
    (one `mutmut show` per mutant costs seconds each)."""
    import ast
    import difflib

    path = root / "mutants" / module
    text = path.read_text()
    lines = text.splitlines()
    funcs = {}
    for node in ast.walk(ast.parse(text)):  # module-level functions and methods
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs[node.name] = "\n".join(lines[node.lineno - 1 : node.end_lineno])
    prefix = module[: -len(".py")].replace("/", ".").removesuffix(".__init__") + "."  # mutmut drops __init__
    out = {}
    for name, body in funcs.items():
        base, sep, n = name.rpartition("__mutmut_")
        if not sep or n == "orig" or not n.isdigit():
            continue
        orig = funcs.get(base + "__mutmut_orig")
        if orig is None:
            continue
        diff = difflib.unified_diff(orig.replace(base + "__mutmut_orig", base).splitlines(),
                                    body.replace(name, base).splitlines(), lineterm="", n=0)
        out[prefix + name] = "\n".join(diff)
    return out


def collect(root: Path, target: Target) -> list[dict]:
    """Every mutant of the target's modules with its exit code and, for the ones not killed, its diff."""
    rows = []
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(root / "mutants"))[: -len(".meta")]
        data = json.loads(meta.read_text())
        diffs = mutant_diffs(root, module)
        for name, code in sorted(data.get("exit_code_by_key", {}).items()):
            row = {"module": module, "mutant": name, "exit_code": code}
            if code not in KILLED:
                row["diff"] = diffs.get(name, "")
            rows.append(row)
    return rows


def run_target(target: Target, max_children: int, timeout_s: float, names: list[str] | None = None) -> dict:
    """mutmut over the target in a fresh copy; `names`: only those mutants (a re-check of survivors)."""
    root = make_copy(REPO, prefix=f"moesim-mutmut-{target.name}-")
    try:
        configure(root, target)
        env = copy_env(root)
        env.pop("PYTHONPATH", None)  # mutmut puts its mutants/ folder first itself
        shared = root.parent / "shared"
        if shared.exists():
            env.setdefault("MOESIM_SHARED", str(shared.resolve()))
            env.setdefault("MOESIM_SHARED_TRACES", str(shared.resolve() / "traces"))
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children),
                                   *(names or [])],
                                  cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
            log = proc.stdout[-3000:] + proc.stderr[-3000:]
        except subprocess.TimeoutExpired:
            log = f"stopped after {timeout_s:.0f} s: unchecked mutants are reported as not checked"
        seconds = time.perf_counter() - start
        rows = collect(root, target)
        return {"target": target.name, "modules": list(target.modules), "tests": list(target.tests),
                "seconds": round(seconds), "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "mutants": rows, "log": log}
    finally:
        remove_copy(root)


def recheck(target: Target, max_children: int, timeout_s: float) -> dict:
    """The saved result with its survivors re-run against the current tests (killed ones become killed).

    Valid while the mutated modules are unchanged since the saved run (mutant names are stable then)."""
    saved = json.loads((RAW / f"{target.name}.json").read_text())
    names = [r["mutant"] for r in saved["mutants"] if r["exit_code"] in SURVIVED]
    if not names:
        return saved
    fresh = run_target(target, max_children, timeout_s, names)
    verdicts = {r["mutant"]: r for r in fresh["mutants"] if r["mutant"] in set(names) and r["exit_code"] is not None}
    saved["mutants"] = [verdicts.get(r["mutant"], r) for r in saved["mutants"]]
    saved["rechecked"] = {"recorded": fresh["recorded"], "seconds": fresh["seconds"], "survivors_before": len(names),
                          "tests": fresh["tests"]}
    saved["tests"] = fresh["tests"]
    return saved


def score(rows: list[dict]) -> dict[str, int]:
    killed = sum(r["exit_code"] in KILLED for r in rows)
    timeout = sum(r["exit_code"] in TIMEOUT for r in rows)
    survived = sum(r["exit_code"] in SURVIVED for r in rows)
    other = len(rows) - killed - timeout - survived
    return {"total": len(rows), "killed": killed, "timeout": timeout, "survived": survived, "other": other}


def load_notes() -> dict[str, dict[str, str]]:
    import yaml

    if not NOTES.exists():
        return {}
    return {str(k): v for k, v in (yaml.safe_load(NOTES.read_text()) or {}).items()}


def write_report(path: Path = OUT) -> str:
    """bench/MUTANTS.md from the saved per-target results and the survivors' notes."""
    notes = load_notes()
    lines = ["# Mutation testing (make mutants)", "",
             "mutmut 3 over the modules that decide results, each against its own tests only (the targets in",
             "bench/mutants/run_mutmut.py). Score = killed / (mutants - equivalent survivors); a timeout counts as",
             "killed. Survivors are listed with why they live (bench/mutants/survivors.yaml): *equivalent* (no",
             "input can tell) or *open* (a real hole, not yet closed). Raw verdicts and diffs:",
             "bench/mutants/results/<target>.json. Command: `make mutants` (or",
             "`PYTHONPATH=. python -m bench.mutants.run_mutmut --only NAME`). Raw = killed / mutants.",
             "Recorded with mutmut 3.8.1, `--max-children 2`, on the shared 2-core VM under other sessions' load",
             "(run times are wall clock). Targets marked *not run* were not run in this round. A mutant no selected",
             "test executes counts as a survivor. `--recheck` re-runs only a target's saved survivors against the",
             "current tests (valid while the mutated modules are unchanged; the run column says when).", "",
             "| target | modules | mutants | killed | survived (equivalent / open) | not checked | score | raw | run |",
             "|---|---|---|---|---|---|---|---|---|"]
    details: list[str] = []
    by_module: list[str] = []
    for target in TARGETS:
        raw = RAW / f"{target.name}.json"
        if not raw.exists():
            lines.append(f"| {target.name} | {', '.join(target.modules)} | - | - | - | - | not run | - | - |")
            continue
        result = json.loads(raw.read_text())
        rows = result["mutants"]
        s = score(rows)
        survivors = [r for r in rows if r["exit_code"] in SURVIVED]
        equivalent = [r for r in survivors if notes.get(r["mutant"], {}).get("verdict") == "equivalent"]
        open_ = len(survivors) - len(equivalent)
        denominator = s["total"] - len(equivalent) - s["other"]
        pct = f"{100.0 * (s['killed'] + s['timeout']) / denominator:.1f} %" if denominator else "-"
        raw_pct = f"{100.0 * (s['killed'] + s['timeout']) / s['total']:.1f} %" if s["total"] else "-"
        lines.append(f"| {target.name} | {', '.join(result['modules'])} | {s['total']} | {s['killed'] + s['timeout']} "
                     f"| {s['survived']} ({len(equivalent)} / {open_}) | {s['other']} | {pct} | {raw_pct} "
                     f"| {_when(result)} |")
        by_module += _module_rows(target.name, rows, notes)
        if survivors:
            details += ["", f"## {target.name}: survivors", ""]
            for r in survivors:
                note = notes.get(r["mutant"], {})
                verdict = note.get("verdict", "open")
                details.append(f"- `{r['mutant']}` ({verdict}): {note.get('why', 'not yet explained')}")
                diff = [ln for ln in r.get("diff", "").splitlines() if ln.startswith(("+", "-"))
                        and not ln.startswith(("+++", "---"))]
                if diff:
                    details += ["  ```diff"] + [f"  {ln}" for ln in diff[:6]] + ["  ```"]
    if by_module:
        lines += ["", "By module (the same verdicts, split by the file the mutant is in):", "",
                  "| target | module | mutants | killed | survived (equivalent / open) | score |", "|---|---|---|---|---|---|"]
        lines += by_module
    text = "\n".join(lines + details) + "\n"
    path.write_text(text)
    return text


def _when(result: dict) -> str:
    text = f"{result['seconds']} s" + (f", {result['recorded']}" if "recorded" in result else "")
    again = result.get("rechecked")
    if again:
        text += f"; its {again['survivors_before']} survivors re-run {again['recorded']} ({again['seconds']} s)"
    return text


def _module_rows(target: str, rows: list[dict], notes: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for module in sorted({r["module"] for r in rows}):
        mine = [r for r in rows if r["module"] == module]
        s = score(mine)
        equivalent = sum(r["exit_code"] in SURVIVED and notes.get(r["mutant"], {}).get("verdict") == "equivalent"
                         for r in mine)
        denominator = s["total"] - equivalent - s["other"]
        pct = f"{100.0 * (s['killed'] + s['timeout']) / denominator:.1f} %" if denominator else "-"
        out.append(f"| {target} | {module} | {s['total']} | {s['killed'] + s['timeout']} "
                   f"| {s['survived']} ({equivalent} / {s['survived'] - equivalent}) | {pct} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated target names: " + ", ".join(t.name for t in TARGETS))
    parser.add_argument("--max-children", type=int, default=max(os.cpu_count() or 1, 1))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per target")
    parser.add_argument("--report", action="store_true", help="only rewrite bench/MUTANTS.md from saved results")
    parser.add_argument("--recheck", action="store_true",
                        help="re-run only the saved survivors of each target against today's tests and update them")
    args = parser.parse_args(argv)
    if args.report:
        write_report()
        return 0
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {t.name for t in TARGETS}
    if unknown:
        print(f"--only: unknown target(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 1
    RAW.mkdir(parents=True, exist_ok=True)
    for target in TARGETS:
        if names and target.name not in names:
            continue
        if args.recheck:
            result = recheck(target, args.max_children, args.timeout)
        else:
            result = run_target(target, args.max_children, args.timeout)
        (RAW / f"{target.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        s = score(result["mutants"])
        print(f"{target.name}: {s['killed'] + s['timeout']}/{s['total']} killed ({s['survived']} survived, "
              f"{s['other']} other) in {result['seconds']} s", flush=True)
    print(write_report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
