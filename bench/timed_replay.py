"""Benchmark: timed-replay throughput (routed accesses per second) with prefetch on.

    python -m bench.timed_replay [--accesses 10000000] [--capacity 0.25] [--prefetch SPEC]
                                 [--copy-engines N] [--overlap layer|expert]

Workload: an OLMoE-1B-7B-shaped synthetic trace (16 layers x 64 experts, top-8, 12 MiB bf16 experts,
34 MB of attention weights per layer), requests served one at a time: a 512-token prefill pass, then
128 single-token decode passes. Routing per layer follows a skewed popularity (Dirichlet 0.3), and a
decode token re-uses each of the previous token's experts at that layer with probability 0.5 (decode
locality). Built with numpy so the benchmark does not depend on the synthetic-trace room.
Profile: H100 SXM-like (3.0 TB/s HBM, 800 TFLOP/s, PCIe Gen5 53 GB/s, 7 us per copy). Prefetch:
score-budget when registered, else oracle:lookahead=1. Capacity: 25 % of the expert bytes.
Reports accesses/s for the whole timed replay (plan + clock + result tables, bounds off) by wall
clock and by process CPU time, and simpy events per access, per copy and per hit (hits schedule
none). Target: >= 1 M accesses per CPU second (wall time on a shared machine also measures others),
for the default profile (one copy engine). Then every registered eviction policy (aliases left
out), stall on miss and no prefetch, on a 2 M-access trace of the same shape, interleaved over
five rounds, each keeping its best CPU time: >= 2 M accesses per CPU second each, with the spread
of its rounds printed (five, not three: on a loaded 2-core machine one policy in twelve could lose
all of three rounds to neighbours, a spread up to 1.9x, while its best of five holds). With --copy-engines 2 the engines share the link (a processor-sharing
server): every start or end of a copy reschedules the server's next completion, so it costs more
events per copy.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from moesim.hw_profiles.profile import Compute, HardwareProfile, Link, Power, Tier
from moesim.policies.registry import available
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.trace import Trace

TARGET = 1_000_000
POLICY_TARGET = 2_000_000  # every eviction policy, stall on miss (issue 17)
POLICY_ACCESSES = 2_000_000
N_LAYERS, N_EXPERTS, TOP_K = 16, 64, 8
EXPERT_BYTES = 3 * 2048 * 1024 * 2
DENSE_BYTES = 2 * (4 * 2048 * 2048 + 2048 * 64)


def olmoe_like_trace(accesses: int, prompt: int = 512, decode: int = 128, seed: int = 0, reuse: float = 0.5) -> Trace:
    """Requests of `prompt` + `decode` tokens until about `accesses` routed accesses."""
    rng = np.random.default_rng(seed)
    per_request = (prompt + decode) * N_LAYERS * TOP_K
    n_req = max(1, accesses // per_request)
    logpop = np.log(rng.dirichlet(np.full(N_EXPERTS, 0.3), size=N_LAYERS) + 1e-6)
    tokens_per_req = prompt + decode
    n_tok = n_req * tokens_per_req
    # Gumbel top-k: each (token, layer) picks TOP_K distinct experts by popularity
    experts = np.empty((n_tok, N_LAYERS, TOP_K), dtype=np.int16)
    chunk = 65536
    for lo in range(0, n_tok, chunk):
        hi = min(lo + chunk, n_tok)
        scores = logpop[None, :, :] + rng.gumbel(size=(hi - lo, N_LAYERS, N_EXPERTS)).astype(np.float32)
        experts[lo:hi] = np.argpartition(-scores, TOP_K, axis=2)[:, :, :TOP_K]
    # decode locality: keep the previous token's expert in a slot with probability `reuse`, unless
    # that would route the token to one expert twice
    pos = np.tile(np.arange(tokens_per_req), n_req)
    for t in np.flatnonzero(pos >= prompt + 1):
        keep = rng.random((N_LAYERS, TOP_K)) < reuse
        for layer in range(N_LAYERS):
            row = experts[t, layer]
            prev = experts[t - 1, layer]
            for k in np.flatnonzero(keep[layer]):
                if prev[k] not in row:
                    row[k] = prev[k]
    # passes: per request one prefill pass (prompt tokens, layer-major cells) then decode passes
    n_pass_req = 1 + decode
    n_pass = n_req * n_pass_req
    phase = np.tile(np.r_[PREFILL, np.full(decode, DECODE)], n_req).astype(np.int8)
    toks_per_pass = np.tile(np.r_[prompt, np.ones(decode, dtype=np.int64)], n_req)
    pass_token_offsets = np.concatenate(([0], np.cumsum(toks_per_pass)))
    cell_tokens = np.repeat(toks_per_pass, N_LAYERS).astype(np.int32)
    cell_layer = np.tile(np.arange(N_LAYERS, dtype=np.int16), n_pass)
    cell_offsets = np.concatenate(([0], np.cumsum(cell_tokens.astype(np.int64) * TOP_K)))
    # accesses in execution order: for each pass, layer by layer, its tokens' experts
    order = []
    tok_start = pass_token_offsets[:-1]
    blocks = []
    for p in range(n_pass):
        t0, t1 = tok_start[p], pass_token_offsets[p + 1]
        blocks.append(experts[t0:t1].transpose(1, 0, 2).reshape(-1))
    expert = np.concatenate(blocks)
    del order
    meta = TraceMeta(n_layers=N_LAYERS, n_experts=N_EXPERTS, top_k=TOP_K, object_bytes=[EXPERT_BYTES] * N_LAYERS,
                     dense_bytes=[DENSE_BYTES] * N_LAYERS, model=None,
                     provenance={"source": "bench.timed_replay synthetic OLMoE-shaped trace", "seed": seed})
    return Trace(
        meta=meta,
        pass_phase=phase,
        pass_cell_offsets=np.arange(n_pass + 1, dtype=np.int64) * N_LAYERS,
        pass_token_offsets=pass_token_offsets.astype(np.int64),
        token_request=np.repeat(np.arange(n_req, dtype=np.int32), tokens_per_req),
        token_position=pos.astype(np.int32),
        cell_layer=cell_layer,
        cell_offsets=cell_offsets.astype(np.int64),
        cell_tokens=cell_tokens,
        expert=expert.astype(np.int16),
    )


def h100_like_profile(copy_engines: int = 1) -> HardwareProfile:
    return HardwareProfile(
        name="bench-h100-sxm",
        description="H100 SXM with PCIe Gen5 host link (reference/hardware.md seed values)",
        compute=Compute(peak_flops=800e12, memory_bandwidth=3.0e12, launch_overhead=5e-6),
        tiers={"vram": Tier("vram", 80e9, reserved=20e9), "dram": Tier("dram", 1e12, bandwidth=200e9)},
        links={"h2d": Link("h2d", 53e9, 7e-6, copy_engines), "d2h": Link("d2h", 52.8e9, 7e-6, 1)},
        power=Power(idle_watts=100.0, active_watts=700.0, joules_per_byte={"h2d": 10e-12}),
    )


def prefetch_spec() -> str:
    names = {r.name for r in available("prefetch")}
    return "score-budget" if "score-budget" in names else "oracle:lookahead=1"


def run(accesses: int, capacity_share: float, prefetch: str | None = None, bounds: bool = False,
        engine: str | None = None, trace: Trace | None = None, copy_engines: int = 1,
        overlap: str | None = None) -> dict[str, Any]:
    from moesim.sim.timed_replay import TimedConfig, timed_replay

    t0 = time.perf_counter()
    trace = trace if trace is not None else olmoe_like_trace(accesses)
    build_s = time.perf_counter() - t0
    prefetch = prefetch or prefetch_spec()
    config = TimedConfig(eviction="lru", prefetch=prefetch, capacity_bytes=int(trace.total_object_bytes() * capacity_share),
                         profile="bench-h100-sxm", bounds=bounds, overlap=overlap)
    t0, c0 = time.perf_counter(), time.process_time()
    result = timed_replay(trace, h100_like_profile(copy_engines), config, engine=engine)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = result.summary
    n_acc = trace.n_accesses
    hits = s["hits"] + s["late_prefetch"]
    copies = s["engine"]["copies"]
    events = s["engine"]["events"]
    return {
        "planner": result.plan.engine,
        "accesses": n_acc,
        "cells": trace.n_cells,
        "requests_to_cache": s["requests"],
        "trace_build_s": round(build_s, 2),
        "elapsed_s": round(elapsed, 2),
        "cpu_s": round(cpu, 2),
        "accesses_per_s": round(n_acc / elapsed),
        "accesses_per_cpu_s": round(n_acc / cpu),
        "prefetch": prefetch,
        "capacity_share": capacity_share,
        "hit_rate": s["hit_rate"],
        "copies": copies,
        "events": events,
        "events_per_access": events / n_acc,
        # one Timeout per copy that runs; the rest are the compute stream's (a sleep to each gate that
        # issues or waits for a copy, and a wake-up when it stalls)
        "copy_events": copies - s["prefetch"]["cancelled"],
        "compute_stream_events": events - (copies - s["prefetch"]["cancelled"]),
        "events_per_copy": events / copies if copies else None,
        "events_per_hit": 0.0,  # hits schedule no simpy event (the engine never sees them)
        "event_cells": s["engine"]["event_cells"],
        "tpot_mean_s": s["tpot_s"]["mean"],
        "ttft_mean_s": s["ttft_s"]["mean"],
    }


def every_policy(accesses: int = POLICY_ACCESSES, rounds: int = 5) -> tuple[dict[str, Any], list[str]]:
    """Timed replay per registered eviction policy (stall on miss, demand fetch only, the bench's
    capacity), each the best CPU time of `rounds` interleaved rounds; (targets, table lines)."""
    from moesim.policies.registry import available as registered
    from moesim.sim.timed_replay import TimedConfig, timed_replay

    trace = olmoe_like_trace(accesses)
    profile = h100_like_profile()
    names = [r.name for r in registered("eviction") if r.alias_of is None]
    cpu: dict[str, list[float]] = {name: [] for name in names}
    planner: dict[str, str] = {}
    for _ in range(rounds):
        for name in names:
            config = TimedConfig(eviction=name, prefetch="none", miss="stall",
                                 capacity_bytes=int(trace.total_object_bytes() * 0.25), profile="bench-h100-sxm")
            c0 = time.process_time()
            result = timed_replay(trace, profile, config)
            cpu[name].append(time.process_time() - c0)
            planner[name] = result.plan.engine
    targets, table = {}, [f"{'policy':14} {'planner':>9} {'M acc/CPU s':>12} {'round spread':>13}"]
    for name in names:
        rate = trace.n_accesses / min(cpu[name])
        spread = max(cpu[name]) / min(cpu[name])
        table.append(f"{name:14} {planner[name]:>9} {rate / 1e6:12.2f} {spread:13.3f}")
        targets[f"timed replay {name}, stall on miss (M accesses per CPU second)"] = {
            "value": round(rate / 1e6, 2), "goal": f">= {POLICY_TARGET / 1e6:g}", "pass": rate >= POLICY_TARGET,
            "noise": f"{rounds} rounds spread {spread:.3f}x"}
    return targets, table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=10_000_000)
    parser.add_argument("--capacity", type=float, default=0.25, help="share of the expert bytes")
    parser.add_argument("--prefetch", default=None)
    parser.add_argument("--copy-engines", type=int, default=1,
                        help="h2d copy engines; they share the link, so >1 costs one Timeout per rate change")
    parser.add_argument("--overlap", default=None, choices=("layer", "expert"))
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the Python planner's run (context only: the target is the default planner's)")
    parser.add_argument("--policy-accesses", type=int, default=POLICY_ACCESSES,
                        help="accesses of the per-eviction-policy runs (0 skips them)")
    args = parser.parse_args(argv)
    trace = olmoe_like_trace(args.accesses)
    out = run(args.accesses, args.capacity, args.prefetch, trace=trace, copy_engines=args.copy_engines,
              overlap=args.overlap)
    if not args.no_reference:
        ref = run(args.accesses, args.capacity, args.prefetch, engine="reference", trace=trace,
                  copy_engines=args.copy_engines, overlap=args.overlap)
        out["reference_planner_accesses_per_cpu_s"] = ref["accesses_per_cpu_s"]
        out["same_result_as_reference_planner"] = ref["tpot_mean_s"] == out["tpot_mean_s"] and \
            ref["copies"] == out["copies"] and ref["events"] == out["events"]
    out["target_accesses_per_s"] = TARGET
    # judged on CPU time: on a shared machine wall time also measures the neighbours
    out["result"] = "PASS" if out["accesses_per_cpu_s"] >= TARGET else "FAIL"
    out["targets"] = {"timed replay accesses per CPU second": {
        "value": out["accesses_per_cpu_s"], "goal": f">= {TARGET}", "pass": out["result"] == "PASS",
        "noise": "one run (the per-policy rows below give the spread of rounds)"}}
    if args.policy_accesses:
        targets, table = every_policy(args.policy_accesses)
        out["targets"].update(targets)
        out["table"] = table
    print(json.dumps({k: v for k, v in out.items() if k != "table"}, indent=2, sort_keys=True))
    return out


if __name__ == "__main__":
    main()
