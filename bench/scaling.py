"""Count-replay cost against trace length, and peak memory (`python -m bench.scaling`).

One fresh subprocess per size (1 M, 10 M, 50 M routed accesses by default) generates the
bench.count_replay workload (OLMoE-like decode, 5 % capacity, LRU, global scope, event mode),
loads the compiled kernel on a tiny trace, then times count_replay best-of-N and reports its
accesses/s and the process's peak resident set (getrusage ru_maxrss: generation, the trace
itself and the replay together, so the number is what a user's process needs; VmHWM on Linux).
Cost is measured as process CPU time (time.process_time): on a shared machine wall time also
counts other people's work, and a 20 ms run dodges it far more often than a 2 s one; wall-clock
rates are reported beside it.
Targets: CPU-time accesses/s at every size within 15 % of each other (max / min <= 1.15); peak
RSS of the largest run <= 4 bytes per access + 200 MB (MB = 10**6 bytes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

SIZES = (1_000_000, 10_000_000, 50_000_000)
ROUNDS = {1_000_000: 40, 10_000_000: 8, 50_000_000: 4}  # about 1-6 s of replay per size
SPREAD_GOAL = 1.15
BYTES_PER_ACCESS, FIXED_BYTES = 4, 200_000_000


def _status_bytes(field: str) -> int | None:
    """A byte count from /proc/self/status (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """This process's peak resident set since it started.

    VmHWM, not getrusage: ru_maxrss survives exec, so a child forked from a large parent (run_all
    after the timed-replay benchmark) would report the parent's peak as its own.
    """
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def child(n_accesses: int, rounds: int) -> dict[str, Any]:
    """Runs in the subprocess: generate, warm up, time, measure."""
    from bench.count_replay import EXPERT_BYTES, olmoe_like_trace
    from moesim.sim.count_replay import ReplayConfig, count_replay

    start = time.perf_counter()
    trace = olmoe_like_trace(n_accesses)
    generate_s = time.perf_counter() - start
    config = ReplayConfig(policy="lru", capacity_bytes=int(0.05 * trace.n_objects) * EXPERT_BYTES)
    engine = count_replay(olmoe_like_trace(10_000), config).engine  # load the kernel outside the timing
    rss_before = _status_bytes("VmRSS") or 0
    best = best_cpu = float("inf")
    hits = -1
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = count_replay(trace, config)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        best = min(best, time.perf_counter() - start)
        hits = int((result.outcomes == 0).sum())
        del result
    peak = peak_rss_bytes()
    return {
        "accesses": trace.n_accesses,
        "engine": engine,
        "generate_s": round(generate_s, 2),
        "replay_s": round(best, 4),
        "replay_cpu_s": round(best_cpu, 4),
        "accesses_per_s": round(trace.n_accesses / best),
        "accesses_per_cpu_s": round(trace.n_accesses / best_cpu),
        "hits": hits,
        "trace_bytes": trace.nbytes(),
        "rss_after_generation_bytes": rss_before,
        "peak_rss_bytes": peak,
    }


def run(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    runs = []
    for n in sizes:
        proc = subprocess.run([sys.executable, "-m", "bench.scaling", "--child", str(n),
                               "--rounds", str(ROUNDS.get(n, 3))], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"bench.scaling child for {n} accesses failed:\n{proc.stderr}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rates = [r["accesses_per_cpu_s"] for r in runs]
    spread = max(rates) / min(rates)
    wall = [r["accesses_per_s"] for r in runs]
    largest = runs[-1]
    budget = BYTES_PER_ACCESS * largest["accesses"] + FIXED_BYTES
    mb = 1e6
    table = [f"{'accesses':>12} {'engine':>7} {'M acc/CPU s':>12} {'M acc/s wall':>13} {'replay s':>9} {'trace MB':>9} "
             f"{'peak RSS MB':>12} {'budget MB':>10}"]
    for r in runs:
        table.append(f"{r['accesses']:12d} {r['engine']:>7} {r['accesses_per_cpu_s'] / 1e6:12.2f} "
                     f"{r['accesses_per_s'] / 1e6:13.2f} {r['replay_s']:9.3f} "
                     f"{r['trace_bytes'] / mb:9.1f} {r['peak_rss_bytes'] / mb:12.1f} "
                     f"{(BYTES_PER_ACCESS * r['accesses'] + FIXED_BYTES) / mb:10.1f}")
    return {
        "workload": "bench.count_replay's OLMoE-like decode trace, LRU, 5 % capacity, global scope, event mode; "
                    "one subprocess per size",
        "runs": runs,
        "wall_clock_spread": round(max(wall) / min(wall), 3),
        "table": table,
        "targets": {
            "count replay accesses per CPU second at 1 M / 10 M / 50 M (max / min)": {
                "value": round(spread, 3), "goal": f"<= {SPREAD_GOAL}", "pass": spread <= SPREAD_GOAL},
            f"peak RSS of the {largest['accesses'] // 1_000_000} M-access run (MB)": {
                "value": round(largest["peak_rss_bytes"] / mb, 1),
                "goal": f"<= {budget / mb:.0f} (4 B/access + 200 MB)",
                "pass": largest["peak_rss_bytes"] <= budget},
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="comma list of access counts")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])
    if args.child is not None:
        return child(args.child, args.rounds)
    return run(tuple(int(s) for s in args.sizes.split(",")))


if __name__ == "__main__":
    out = main(sys.argv[1:])
    if "--child" in sys.argv:
        print(json.dumps(out))
        sys.exit(0)
    print("\n".join(out.pop("table")))
    print(json.dumps(out, indent=2))
    sys.exit(0 if all(t["pass"] for t in out["targets"].values()) else 1)
