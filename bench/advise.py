"""Benchmark: `moesim advise` answers within its budget on the issue's question.

    python -m bench.advise [--budget 60s]

Command: moesim advise --model qwen3-30b-a3b --profile rtx4090 --profile phone-oneplus-15r
--vram-free 20GiB --dram-free 48GiB (README, first section). Reports wall time (what a person
waits; on a shared machine it also measures the others), process CPU time, configurations timed
and pruned per machine. Target: wall time <= the budget (60 s by default).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from typing import Any

from moesim.cli import main as cli_main
from moesim.units import parse_quantity

COMMAND = ["advise", "--model", "qwen3-30b-a3b", "--profile", "rtx4090", "--profile", "phone-oneplus-15r",
           "--vram-free", "20GiB", "--dram-free", "48GiB", "--json"]


def main(budget: str = "60s") -> dict[str, Any]:
    out = io.StringIO()
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out):
        code = cli_main(COMMAND + ["--budget", budget])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    answer = json.loads(out.getvalue()) if code == 0 else {"machines": []}
    goal = parse_quantity(budget, "time", "--budget")
    return {
        "command": "moesim " + " ".join(COMMAND + ["--budget", budget]),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "searched": {m["profile"]: m["searched"] for m in answer["machines"]},
        "targets": {"advise_wall_s": {"value": round(wall, 2), "goal": f"<= {goal:g} s",
                                      "pass": code == 0 and wall <= goal,
                                      "noise": f"one run; {cpu:.1f} s of it on this process's CPU"}},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60s")
    print(json.dumps(main(parser.parse_args().budget), indent=2))
