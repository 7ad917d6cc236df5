"""Trace memory and throughput: a 10 M-access OLMoE-shaped synthetic trace, generated, saved, loaded.

Targets (DESIGN: a trace costs about 2 bytes per access plus per-cell tables):
  in-memory bytes per access  Trace.nbytes() / accesses <= 4 (the TraceMeta dict is not counted)
  loading's peak RSS delta    <= 4 bytes per access + 200 MB: the peak during `load_trace` over
                              the RSS just before it, in a fresh subprocess that has imported
                              moesim and nothing else (so the generator's peak does not hide it).
                              The 200 MB is the part that does not grow with the trace: one
                              Parquet row group being decoded, one chunk of rows, allocator arenas.
  saving's peak RSS delta     the same bound for `save_trace`, in a second fresh subprocess that
                              first loads the file (the delta is over the RSS after loading)
  generation time             10 M accesses in <= 5 s of process CPU time ("a few seconds"), the
                              better of two generations (wall time on a shared machine also
                              counts the neighbours); their spread and the wall time are printed
  round trip                  the loaded trace has the generated one's content hash, and saving
                              it again gives the same bytes
Context: generation's peak RSS delta (its temporaries), save/load throughput, file size, and
the time `compute_stats` takes on the trace.

Run: python -m bench.trace_memory [--accesses 10M]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ACCESSES = 10_000_000
BYTES_PER_ACCESS_GOAL = 4.0
PEAK_ALLOWANCE_BYTES = 200_000_000  # what loading or saving may use beyond 4 B per access
GENERATE_SECONDS_GOAL = 5.0

# Peak memory is read from /proc/self/status (VmHWM, the high-water mark of this process's own
# memory map) after resetting it to the current RSS via /proc/self/clear_refs. ru_maxrss would
# not do: Linux carries it across execve, so a subprocess would report its parent's peak.
_RSS_HELPERS = """
import os, resource

def rss_field(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(name)

def reset_peak():
    \"\"\"Start a new high-water mark at the current RSS; returns that RSS.\"\"\"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return rss_field("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def peak():
    try:
        return rss_field("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

_LOAD_SNIPPET = _RSS_HELPERS + """
import gc, json, sys, time
from moesim.traces.format.io import load_trace
gc.collect()
before = reset_peak()
start = time.perf_counter()
trace = load_trace(sys.argv[1])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_delta_bytes": peak() - before,
                  "nbytes": trace.nbytes(), "accesses": trace.n_accesses, "hash": trace.content_hash()}))
"""
_SAVE_SNIPPET = _RSS_HELPERS + """
import gc, hashlib, json, sys, time
from moesim.traces.format.io import load_trace, save_trace
trace = load_trace(sys.argv[1])
gc.collect()
before = reset_peak()
start = time.perf_counter()
save_trace(trace, sys.argv[2])
seconds = time.perf_counter() - start
with open(sys.argv[1], "rb") as a, open(sys.argv[2], "rb") as b:
    same = hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()
print(json.dumps({"seconds": seconds, "rss_delta_bytes": peak() - before, "same_bytes": same}))
"""
_rss: dict[str, Any] = {}
exec(_RSS_HELPERS, _rss)


def _target(value: float, goal: str, ok: bool) -> dict[str, Any]:
    return {"value": round(value, 3), "goal": goal, "pass": bool(ok), "noise": "one run (sizes and peaks, not times)"}


def main(accesses: int = ACCESSES) -> dict[str, Any]:
    import dataclasses

    from moesim.traces.format.io import save_trace
    from moesim.traces.stats.summary import compute_stats
    from moesim.traces.synth.synthetic import generate, preset

    config = dataclasses.replace(preset("olmoe"), accesses=accesses, seed=1)
    rss0 = _rss["reset_peak"]()
    start, cpu = time.perf_counter(), time.process_time()
    trace = generate(config)
    gen_wall_s, gen_cpu = time.perf_counter() - start, [time.process_time() - cpu]
    gen_rss = _rss["peak"]() - rss0
    cpu = time.process_time()
    generate(config)  # a second round, for the time only
    gen_cpu.append(time.process_time() - cpu)
    gen_s = min(gen_cpu)
    n = trace.n_accesses
    per_access = trace.nbytes() / n
    digest = trace.content_hash()

    start = time.perf_counter()
    compute_stats(trace)
    stats_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="moesim-bench-") as tmp:
        path = Path(tmp) / "olmoe-10M.parquet"
        start = time.perf_counter()
        save_trace(trace, path)
        save_s = time.perf_counter() - start
        file_bytes = path.stat().st_size
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                          env.get("PYTHONPATH")]))
        out = subprocess.run([sys.executable, "-c", _LOAD_SNIPPET, str(path)], capture_output=True,
                             text=True, env=env, check=True)
        loaded = json.loads(out.stdout.strip().splitlines()[-1])
        out = subprocess.run([sys.executable, "-c", _SAVE_SNIPPET, str(path), str(Path(tmp) / "again.parquet")],
                             capture_output=True, text=True, env=env, check=True)
        resaved = json.loads(out.stdout.strip().splitlines()[-1])

    peak_goal = BYTES_PER_ACCESS_GOAL * n + PEAK_ALLOWANCE_BYTES
    peak_goal_text = (f"<= {BYTES_PER_ACCESS_GOAL:g} B/access + {PEAK_ALLOWANCE_BYTES / 1e6:g} MB "
                      f"= {peak_goal / 1e6:.0f} MB")

    return {
        "trace": f"preset olmoe, seed 1: {trace.meta.n_layers} layers x {trace.meta.n_experts} experts, "
                 f"top-{trace.meta.top_k}, {n:,} accesses, {trace.n_passes:,} passes",
        "bytes_per_access_in_memory": round(per_access, 3),
        "generate_cpu_seconds": round(gen_s, 3),
        "generate_wall_seconds_first_round": round(gen_wall_s, 3),
        "generate_accesses_per_s": round(n / gen_s),
        "generate_peak_rss_delta_bytes_per_access": round(gen_rss / n, 2),
        "stats_seconds": round(stats_s, 3),
        "save_seconds": round(save_s, 3),
        "save_accesses_per_s": round(n / save_s),
        "file_bytes_per_access": round(file_bytes / n, 3),
        "load_seconds": round(loaded["seconds"], 3),
        "load_accesses_per_s": round(n / loaded["seconds"]),
        "load_peak_rss_delta_bytes_per_access": round(loaded["rss_delta_bytes"] / n, 2),
        "load_peak_rss_delta_mb": round(loaded["rss_delta_bytes"] / 1e6, 1),
        "resave_seconds": round(resaved["seconds"], 3),
        "save_peak_rss_delta_bytes_per_access": round(resaved["rss_delta_bytes"] / n, 2),
        "save_peak_rss_delta_mb": round(resaved["rss_delta_bytes"] / 1e6, 1),
        "round_trip_identical": loaded["hash"] == digest,
        "resave_same_bytes": resaved["same_bytes"],
        "targets": {
            "in-memory bytes per access": _target(per_access, f"<= {BYTES_PER_ACCESS_GOAL} B",
                                                  per_access <= BYTES_PER_ACCESS_GOAL),
            "generate 10M accesses (CPU s)": {
                **_target(gen_s * ACCESSES / n, f"<= {GENERATE_SECONDS_GOAL} s",
                          gen_s * ACCESSES / n <= GENERATE_SECONDS_GOAL),
                "noise": f"2 rounds spread {max(gen_cpu) / min(gen_cpu):.3f}x; first round wall {gen_wall_s:.2f} s"},
            "load peak RSS delta (MB)": _target(loaded["rss_delta_bytes"] / 1e6, peak_goal_text,
                                                loaded["rss_delta_bytes"] <= peak_goal),
            "save peak RSS delta (MB)": _target(resaved["rss_delta_bytes"] / 1e6, peak_goal_text,
                                                resaved["rss_delta_bytes"] <= peak_goal),
            "save/load round trip identical": _target(float(loaded["hash"] == digest and resaved["same_bytes"]),
                                                      "1 (same content hash, resaved file has the same bytes)",
                                                      loaded["hash"] == digest and resaved["same_bytes"]),
        },
    }


def _cli() -> int:
    from moesim.traces.synth.synth_config import parse_count

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", default=str(ACCESSES), help="trace size (default 10M)")
    args = parser.parse_args()
    result = main(parse_count(args.accesses))
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if all(t["pass"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(_cli())
