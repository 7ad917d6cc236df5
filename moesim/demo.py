"""`make demo`: replay a bundled real trace end to end and write a report.

The trace is BigMoeOnEdge's Qwen3-30B-A3B run on a phone (Apache-2.0, see NOTICE): 28 prompt and
128 decode tokens, 48 MoE layers x 128 experts, top-6, recorded with the engine's own cache
outcome per access. The demo
  1. checks the count replay against that recorded outcome (LRU at the run's 4000 MiB),
  2. compares eviction policies over a miss-ratio curve (Belady as the bound),
  3. times the run on the phone profile and on a PCIe Gen4 desktop GPU, with and without prefetch,
  4. writes every result as Parquet and one self-contained HTML report (plus Markdown).
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
POLICIES = ("lru", "lfu", "least-stale", "belady")
MRC_CAPACITIES = "1%,5%,10%,25%,4000MiB"
TIMED = (
    # (profile, policy, prefetch)
    ("phone-oneplus-15r", "lru", "none"),
    ("phone-oneplus-15r", "least-stale", "markov"),
    ("phone-oneplus-15r", "belady", "oracle"),
    ("rtx4090", "lru", "none"),
    ("rtx4090", "least-stale", "markov"),
)


def run(out: Path) -> dict[str, Any]:
    from moesim.policies.registry import parse_spec
    from moesim.sim import metrics
    from moesim.sim.capacity import parse_capacity, parse_capacity_list
    from moesim.sim.count_replay import ReplayConfig, count_replay
    from moesim.sim.results import save_count_results
    from moesim.sim.timed_replay import TimedConfig, timed_replay
    from moesim.sim.timed_result import save_timed_result
    from moesim.hw_profiles.loader import load_profile
    from moesim.traces.io import load_trace

    out.mkdir(parents=True, exist_ok=True)
    trace = load_trace(TRACE)
    print(f"trace {TRACE}: {trace.meta.model}, {trace.n_passes} passes, {trace.n_accesses} routed accesses")

    # 1. the count replay against the engine's recorded outcome
    engine_cap = parse_capacity(ENGINE_CACHE, trace)
    lru = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=engine_cap.bytes, mode="sequential"))
    decode = metrics.summary(lru)["by_phase"]["decode"]
    recorded = trace.annotations.get("engine_residency")
    engine_hits = None
    if recorded is not None:
        is_decode = trace.pass_phase[trace.cell_pass()[trace.access_cell()]] == 1
        engine_hits = int((recorded[is_decode] > 0).sum())
    check = {"capacity": ENGINE_CACHE, "moesim_decode_hits": decode["hits"], "engine_decode_hits": engine_hits,
             "decode_requests": decode["requests"]}
    print(f"1. LRU at {ENGINE_CACHE}, sequential: {decode['hits']} decode hits; the phone's engine recorded "
          f"{engine_hits} of {decode['requests']}")

    # 2. a miss-ratio curve over eviction policies
    caps = parse_capacity_list(MRC_CAPACITIES, trace)
    count_runs = []
    for name in POLICIES:
        spec = parse_spec(name)
        for cap in caps:
            result = count_replay(trace, ReplayConfig(policy=spec.label(), capacity_bytes=cap.bytes), spec=spec)
            count_runs.append((result, cap.text))
    count_path = out / "counts.parquet"
    save_count_results(count_runs, count_path, trace_source=TRACE)
    print(f"2. {len(count_runs)} count replays ({', '.join(POLICIES)} x {MRC_CAPACITIES}) -> {count_path}")

    # 3. timing on two machines
    timed_paths = []
    timed_rows = []
    for profile_name, policy, prefetch in TIMED:
        profile = load_profile(profile_name)
        config = TimedConfig(eviction=policy, prefetch=prefetch, capacity_bytes=engine_cap.bytes, profile=profile_name)
        result = timed_replay(trace, profile, config)
        path = out / f"timed-{profile_name}-{policy}-{prefetch}.parquet"
        save_timed_result(result, path)
        timed_paths.append(path)
        s = result.summary
        timed_rows.append({"profile": profile_name, "policy": policy, "prefetch": prefetch,
                           "tpot_ms": s["tpot_s"]["mean"] * 1e3, "ttft_ms": s["ttft_s"]["mean"] * 1e3,
                           "hit_rate": s["hit_rate"], "tpot_bound_ms": s["bounds"]["tpot_bound_s"] * 1e3})
        print(f"3. {profile_name:18s} {policy:12s} prefetch={prefetch:7s} TPOT {s['tpot_s']['mean'] * 1e3:8.2f} ms "
              f"(bound {s['bounds']['tpot_bound_s'] * 1e3:.2f} ms), TTFT {s['ttft_s']['mean'] * 1e3:8.1f} ms, "
              f"hit rate {100 * s['hit_rate']:.1f} %")

    # 4. the report
    summary = {"trace": TRACE, "engine_check": check, "timed": timed_rows}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    report = _write_report([count_path, *timed_paths], out)
    print(f"4. report: {report}")
    return summary


def _write_report(results: list[Path], out: Path) -> Path:
    """The HTML report from every result file (moesim.reports)."""
    from moesim.reports.html_report import write_report

    html = out / "report.html"
    write_report([str(p) for p in results], html, markdown=out / "report.md", title="moesim demo: Qwen3-30B-A3B on a phone")
    return html


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
