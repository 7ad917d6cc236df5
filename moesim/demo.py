"""`make demo`: replay a bundled real trace end to end and write a report.

The trace is BigMoeOnEdge's Qwen3-30B-A3B run on a phone (Apache-2.0, see NOTICE): 28 prompt and
128 decode tokens, 48 MoE layers x 128 experts, top-6, recorded with the engine's own cache
outcome per access. The demo
  1. checks the count replay against that recorded outcome (LRU at the run's 4000 MiB),
  2. compares eviction policies over a miss-ratio curve (Belady as the bound),
  3. times the run on the phone profile and on a PCIe Gen4 desktop GPU, prefetch none/markov/oracle,
  4. writes every run as Parquet (two resumable sweeps) and one self-contained HTML report (plus Markdown).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from moesim.atomic_io import write_text_atomic
from moesim.errors import UserError

TRACE = "bundled:qwen"
ENGINE_CACHE = "4000MiB"

# A miss-ratio curve over eviction policies (count-only), then timing on two machines.
COUNT_SWEEP = {
    "name": "demo-miss-ratio",
    "traces": {"qwen": TRACE},
    "eviction": ["lru", "lfu", "least-stale", "belady"],
    "capacities": ["1%", "5%", "10%", "25%", ENGINE_CACHE],
    "profiles": ["none"],
}
TIMED_SWEEP = {
    "name": "demo-timing",
    "traces": {"qwen": TRACE},
    "eviction": ["lru", "least-stale", "belady"],
    "capacities": [ENGINE_CACHE],
    "profiles": ["phone-oneplus-15r", "rtx4090"],
    "prefetch": ["none", "markov", "oracle"],
    "tables": {"timeline_passes": 3},
}


def run(out: Path) -> dict[str, Any]:
    import moesim
    from moesim.sim import metrics
    from moesim.sim.capacity import parse_capacity
    from moesim.sim.count_replay import ReplayConfig, count_replay
    from moesim.traces.format.io import load_trace

    out.mkdir(parents=True, exist_ok=True)
    trace = load_trace(TRACE)
    print(f"trace {TRACE}: {trace.meta.model}, {trace.n_passes} passes, {trace.n_accesses} routed accesses")

    # 1. the count replay against the cache outcome the phone's engine recorded per access
    engine_cap = parse_capacity(ENGINE_CACHE, trace)
    lru = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=engine_cap.bytes))
    decode = metrics.summary(lru)["by_phase"]["decode"]
    recorded = trace.annotations.get("engine_residency")
    engine_hits = None
    if recorded is not None:
        is_decode = trace.pass_phase[trace.cell_pass()[trace.access_cell()]] == 1
        engine_hits = int((recorded[is_decode] > 0).sum())
    check = {"capacity": ENGINE_CACHE, "moesim_decode_hits": decode["hits"], "engine_decode_hits": engine_hits,
             "decode_requests": decode["requests"]}
    print(f"1. LRU at {ENGINE_CACHE}: {decode['hits']} decode hits; the phone's engine recorded "
          f"{engine_hits} of {decode['requests']}")

    # 2. and 3. two resumable sweeps (re-running the demo skips finished runs)
    counts = moesim.sweep(COUNT_SWEEP, out / "miss-ratio")
    print(f"2. miss-ratio curve: {len(counts)} count replays -> {out / 'miss-ratio'}")
    timed = moesim.sweep(TIMED_SWEEP, out / "timing")
    rows = []
    columns = ["profile", "eviction", "prefetch", "tpot_mean_s", "tpot_bound_s", "ttft_mean_s", "hit_rate"]
    for _, r in timed.sort_values(["profile", "tpot_mean_s", "eviction", "prefetch"]).iterrows():
        rows.append({k: (None if v != v else v) for k, v in r[columns].items()})
        print(f"3. {r['profile']:18s} {r['eviction']:12s} prefetch={r['prefetch']:7s} "
              f"TPOT {r['tpot_mean_s'] * 1e3:8.2f} ms (bound {r['tpot_bound_s'] * 1e3:.2f}) "
              f"TTFT {r['ttft_mean_s'] * 1e3:8.1f} ms  hit rate {100 * r['hit_rate']:.1f} %")

    # 4. one report over both
    summary = {"trace": TRACE, "engine_check": check, "timed": rows}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    report = moesim.report([out / "miss-ratio", out / "timing"], out / "report.html", md=out / "report.md",
                           title="moesim demo: Qwen3-30B-A3B (BigMoeOnEdge phone run)")
    print(f"4. report: {report.resolve()}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moesim.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="folder for results and the report")
    args = parser.parse_args(argv)
    try:
        run(Path(args.out))
    except UserError as exc:
        print(f"moesim demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
