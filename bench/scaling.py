"""Count-replay cost against trace length, and peak memory (`python -m bench.scaling`).

Workload: bench.count_replay's OLMoE-like decode trace at 1 M, 10 M and 50 M routed accesses;
LRU, 5 % capacity, global scope, event mode, the engine `auto` picks (the compiled kernel).

- Cost: one subprocess generates every size, then times them interleaved, `rounds` times; in a
  round each size replays about the same number of accesses (50 x 1 M, 5 x 10 M, 1 x 50 M), so
  every size sees the same machine. Each size keeps its best round. The rate is accesses per
  second of process CPU time (wall time on a shared machine also counts other people's work);
  wall-clock rates are reported beside it.
- Memory: one fresh subprocess per size generates its trace and runs one count replay; its peak
  resident set (VmHWM on Linux) is what a user's process needs: interpreter, trace, replay.
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
ROUNDS = 4
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


def _config(trace: Any) -> Any:
    from bench.count_replay import EXPERT_BYTES
    from moesim.sim.count_replay import ReplayConfig

    return ReplayConfig(policy="lru", capacity_bytes=int(0.05 * trace.n_objects) * EXPERT_BYTES)


def memory_child(n_accesses: int) -> dict[str, Any]:
    """In a fresh process: generate, replay once, report the peak resident set."""
    from bench.count_replay import olmoe_like_trace
    from moesim.sim.count_replay import count_replay

    trace = olmoe_like_trace(n_accesses)
    rss_after_generation = _status_bytes("VmRSS") or 0
    result = count_replay(trace, _config(trace))
    return {"accesses": trace.n_accesses, "engine": result.engine, "trace_bytes": trace.nbytes(),
            "rss_after_generation_bytes": rss_after_generation, "peak_rss_bytes": peak_rss_bytes()}


def timing_child(sizes: tuple[int, ...], rounds: int) -> dict[str, Any]:
    """In one process: every size, timed interleaved; best round per size."""
    from bench.count_replay import olmoe_like_trace
    from moesim.sim.count_replay import count_replay

    traces = [olmoe_like_trace(n) for n in sizes]
    engine = count_replay(olmoe_like_trace(10_000), _config(traces[0])).engine  # load the kernel first
    largest = max(t.n_accesses for t in traces)
    best_cpu = [float("inf")] * len(traces)
    best_wall = [float("inf")] * len(traces)
    for _ in range(rounds):
        for i, trace in enumerate(traces):
            repeats = max(1, round(largest / trace.n_accesses))
            config = _config(trace)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                count_replay(trace, config)
            best_cpu[i] = min(best_cpu[i], (time.process_time() - cpu) / repeats)
            best_wall[i] = min(best_wall[i], (time.perf_counter() - wall) / repeats)
    return {"engine": engine, "runs": [
        {"accesses": t.n_accesses, "replay_cpu_s": round(c, 4), "replay_s": round(w, 4),
         "accesses_per_cpu_s": round(t.n_accesses / c), "accesses_per_s": round(t.n_accesses / w)}
        for t, c, w in zip(traces, best_cpu, best_wall)]}


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.scaling", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.scaling {' '.join(args)} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes: tuple[int, ...] = SIZES, rounds: int = ROUNDS) -> dict[str, Any]:
    timing = _child("--timing", ",".join(str(n) for n in sizes), "--rounds", str(rounds))
    memory = [_child("--memory", str(n)) for n in sizes]
    runs = [{**t, **m} for t, m in zip(timing["runs"], memory)]
    rates = [r["accesses_per_cpu_s"] for r in runs]
    wall = [r["accesses_per_s"] for r in runs]
    spread = max(rates) / min(rates)
    largest = runs[-1]
    budget = BYTES_PER_ACCESS * largest["accesses"] + FIXED_BYTES
    mb = 1e6
    table = [f"{'accesses':>12} {'engine':>7} {'M acc/CPU s':>12} {'M acc/s wall':>13} {'replay s':>9} {'trace MB':>9} "
             f"{'peak RSS MB':>12} {'budget MB':>10}"]
    for r in runs:
        table.append(f"{r['accesses']:12d} {r['engine']:>7} {r['accesses_per_cpu_s'] / 1e6:12.2f} "
                     f"{r['accesses_per_s'] / 1e6:13.2f} {r['replay_s']:9.3f} {r['trace_bytes'] / mb:9.1f} "
                     f"{r['peak_rss_bytes'] / mb:12.1f} {(BYTES_PER_ACCESS * r['accesses'] + FIXED_BYTES) / mb:10.1f}")
    return {
        "workload": "bench.count_replay's OLMoE-like decode trace, LRU, 5 % capacity, global scope, event mode; "
                    f"timing interleaved over {rounds} rounds in one process, memory in one process per size",
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
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved timing rounds")
    parser.add_argument("--timing", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else [])
    if args.timing is not None:
        return timing_child(tuple(int(s) for s in args.timing.split(",")), args.rounds)
    if args.memory is not None:
        return memory_child(args.memory)
    return run(tuple(int(s) for s in args.sizes.split(",")), args.rounds)


if __name__ == "__main__":
    out = main(sys.argv[1:])
    if "--timing" in sys.argv or "--memory" in sys.argv:
        print(json.dumps(out))
        sys.exit(0)
    print("\n".join(out.pop("table")))
    print(json.dumps(out, indent=2))
    sys.exit(0 if all(t["pass"] for t in out["targets"].values()) else 1)
