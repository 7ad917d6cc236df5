"""`make bench`: run every benchmark in bench/ and print one PASS/FAIL line per target.

Each benchmark module has `main() -> dict` whose "targets" entry maps a target's name to
{"value": ..., "goal": ..., "pass": bool}; everything else in the dict is printed as context.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time

BENCHMARKS = (
    "bench.trace_memory",
    "bench.count_replay",
    "bench.timed_replay",
    "bench.scaling",
)


def main() -> int:
    print(f"moesim benchmarks on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    failures = 0
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        print(f"\n== {name}")
        result = module.main()
        for key, value in result.items():
            if key != "targets":
                print(f"  {key}: {json.dumps(value, default=str)}")
        for target, info in result.get("targets", {}).items():
            verdict = "PASS" if info["pass"] else "FAIL"
            failures += not info["pass"]
            print(f"{verdict} {target}: {info['value']} (goal {info['goal']})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
