"""SpecMD-style study: eviction x prefetch x capacity x host-link bandwidth on an OLMoE-shaped trace.

    PYTHONPATH=. python scripts/specmd_study.py [--trace T.parquet] [--out out/specmd.csv]

Grid (SpecMD, reference/specmd.md section 8): capacity 1 / 5 / 25 % of the expert bytes; host link
5 GB/s (SpecMD's emulation), PCIe Gen4 (25 GB/s) and Gen5 (53 GB/s); eviction LRU, LFU, Least-Stale,
Belady; prefetch none, oracle one layer ahead, score-budget. Policies that are not registered in
this install are skipped (and listed). The profile is `specmd-a100-5gbps` with `--set` overrides of
the h2d bandwidth when the profiles room is installed, else an equivalent A100-80GB profile built
here. Without --trace the trace is the benchmark's synthetic OLMoE-shaped one (8 requests of
128 prompt + 64 decode tokens). Prints one row per run and writes them as CSV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timed_replay import olmoe_like_trace  # noqa: E402
from moesim.atomic_io import write_text_atomic  # noqa: E402
from moesim.hw_profiles.profile import Compute, HardwareProfile, Link, Power, Tier  # noqa: E402
from moesim.policies.registry import available  # noqa: E402
from moesim.sim.cli_timing import timed_table  # noqa: E402
from moesim.sim.timed_replay import TimedConfig, timed_replay  # noqa: E402

BANDWIDTHS = {"5 GB/s": 5e9, "25 GB/s": 25e9, "53 GB/s": 53e9}
CAPACITIES = (0.01, 0.05, 0.25)
EVICTION = ("lru", "lfu", "least-stale", "belady")
PREFETCH = ("none", "oracle:lookahead=1", "score-budget")


def a100_profile(bandwidth: float) -> HardwareProfile:
    """A100-80GB (2.039 TB/s HBM, 312 TFLOP/s bf16) with one host link of `bandwidth` (7 us per copy)."""
    return HardwareProfile(
        name="a100-80gb-study",
        description="A100-80GB with an emulated host link (SpecMD)",
        compute=Compute(peak_flops=312e12, memory_bandwidth=2.039e12, launch_overhead=5e-6),
        tiers={"vram": Tier("vram", 80e9, reserved=20e9), "dram": Tier("dram", 1e12)},
        links={"h2d": Link("h2d", bandwidth, 7e-6, 1), "d2h": Link("d2h", bandwidth, 7e-6, 1)},
        power=Power(idle_watts=60.0, active_watts=400.0),
    )


def load(bandwidth_text: str) -> HardwareProfile:
    try:
        from moesim.hw_profiles.loader import load_profile
    except ModuleNotFoundError:
        return a100_profile(BANDWIDTHS[bandwidth_text])
    return load_profile("specmd-a100-5gbps", overrides=(f"links.h2d.bandwidth={bandwidth_text}",))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default=None, help="a moesim trace (Parquet); default: synthetic OLMoE-shaped")
    parser.add_argument("--out", default="out/specmd_study.csv")
    args = parser.parse_args(argv)
    if args.trace:
        from moesim.traces.format.io import load_trace

        trace = load_trace(args.trace)
    else:
        trace = olmoe_like_trace(8 * 192 * 128, prompt=128, decode=64)
    eviction = [e for e in EVICTION if e in {r.name for r in available("eviction")}]
    prefetch = [p for p in PREFETCH if p.split(":")[0] in {r.name for r in available("prefetch")}]
    skipped = sorted(set(EVICTION) - set(eviction)) + sorted(set(PREFETCH) - set(prefetch))
    if skipped:
        print(f"not registered here, skipped: {', '.join(skipped)}", file=sys.stderr)
    frames = []
    for bw_text in BANDWIDTHS:
        profile = load(bw_text)
        for share in CAPACITIES:
            capacity = int(trace.total_object_bytes() * share)
            summaries = [timed_replay(trace, profile, TimedConfig(eviction=e, prefetch=p, capacity_bytes=capacity,
                                                                   profile=profile.name)).summary
                         for e in eviction for p in prefetch]
            table = timed_table(summaries)
            table.insert(0, "capacity", f"{share:.0%}")
            table.insert(0, "link", bw_text)
            frames.append(table)
    result = pd.concat(frames, ignore_index=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, result.to_csv(index=False))
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(result[["link", "capacity", "label", "tpot_s", "ttft_s", "hit_rate", "collision", "misses",
                      "tpot_over_bound", "ttft_over_bound"]].to_string(index=False))
    return result


if __name__ == "__main__":
    main()
