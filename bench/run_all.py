"""`make bench`: run every benchmark in bench/ and print one PASS/FAIL line per target.

Each benchmark module has `main() -> dict` whose "targets" entry maps a target's name to
{"value": ..., "goal": ..., "pass": bool, "noise": "..."} (noise: the spread of the rounds the
value was taken from, printed beside it); an optional "table" (lines of text) is printed as it
is, and everything else in the dict is printed as context.
`python -m bench.run_all bench.count_replay bench.scaling` runs only the benchmarks named.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time

BENCHMARKS = (
    "bench.trace_memory",
    "bench.count_replay",
    "bench.timed_replay",
    "bench.scaling",
    "bench.hardening_memory",
    "bench.advise",
)


def machine() -> str:
    """nproc, CPU model and RAM (Linux /proc; other systems give what platform knows)."""
    model, mem = platform.processor() or platform.machine(), "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
            mem = f"{kib / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} CPUs ({model}), {mem} RAM"


def main(names: list[str] | None = None) -> int:
    """Run `names` (module names from BENCHMARKS; all of them when empty) and return the exit status."""
    unknown = sorted(set(names or ()) - set(BENCHMARKS))
    if unknown:
        print(f"bench.run_all: unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 1
    print(f"moesim benchmarks on {platform.node()}: {machine()}, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}")
    failures = 0
    for name in [b for b in BENCHMARKS if not names or b in names]:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        print(f"\n== {name}")
        argv, sys.argv = sys.argv, [name]  # a benchmark that parses its own options must not see the names
        try:
            result = module.main()
        finally:
            sys.argv = argv
        for line in result.get("table", []):
            print(f"  {line}")
        for key, value in result.items():
            if key not in ("targets", "table"):
                print(f"  {key}: {json.dumps(value, default=str)}")
        for target, info in result.get("targets", {}).items():
            verdict = "PASS" if info["pass"] else "FAIL"
            failures += not info["pass"]
            noise = f"; noise: {info['noise']}" if "noise" in info else ""
            print(f"{verdict} {target}: {info['value']} (goal {info['goal']}{noise})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
