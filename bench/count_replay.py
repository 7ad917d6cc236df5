"""Count-replay speed against libCacheSim's LRU on the same integer ids (`python -m bench.count_replay`).

Workload: an OLMoE-1B-7B-shaped synthetic decode trace (16 layers x 64 experts, top-8, one token
per pass, Zipf(1.1) expert popularity per layer with a per-layer random ranking), 10 M routed
accesses by default, capacity 5 % of the objects (51 slots of 12 MiB).

Both sides replay the same object ids at the same slot capacity, measured in the same process:
- moesim: count_replay(..., lru) in event mode (the default) and in sequential mode;
- libCacheSim LRU fed one Request per id from Python (`cache.get(req)` in a loop), the only way
  to feed it ids that already live in a Python program; and, for context, its C-side
  `process_trace` over the same ids written to a binary trace file (no Python per request).
The target (issue: >= 0.25x now) is moesim event-mode accesses/s over libCacheSim's per-request
rate. Sequential-mode hit counts must equal libCacheSim's exactly (a correctness check, not a
timing). cProfile of a 1 M-access slice is printed with `--profile`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import numpy as np

from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.traces.trace import DECODE, Trace, TraceMeta

N_LAYERS, N_EXPERTS, TOP_K = 16, 64, 8
EXPERT_BYTES = 3 * 2048 * 1024 * 2  # 12 MiB, bf16 SwiGLU expert of OLMoE-1B-7B
TARGET_RATIO = 0.25


def olmoe_like_trace(n_accesses: int, seed: int = 0, zipf_s: float = 1.1) -> Trace:
    """Single-sequence decode, one token per pass; each layer draws top-8 distinct experts by Zipf."""
    rng = np.random.default_rng(seed)
    n_passes = max(1, n_accesses // (N_LAYERS * TOP_K))
    weights = 1.0 / np.arange(1, N_EXPERTS + 1) ** zipf_s
    log_p = np.log(weights / weights.sum())
    ranking = np.stack([rng.permutation(N_EXPERTS) for _ in range(N_LAYERS)])  # rank -> expert, per layer
    experts = np.empty((n_passes, N_LAYERS, TOP_K), dtype=np.int16)
    chunk = 8192
    for start in range(0, n_passes, chunk):
        stop = min(n_passes, start + chunk)
        # Gumbel top-k: k distinct draws without replacement in proportion to the weights
        keys = log_p + rng.gumbel(size=(stop - start, N_LAYERS, N_EXPERTS))
        top_rank = np.argpartition(-keys, TOP_K - 1, axis=2)[:, :, :TOP_K]
        experts[start:stop] = np.take_along_axis(ranking[None, :, :].repeat(stop - start, 0), top_rank, axis=2)
    n_cells = n_passes * N_LAYERS
    meta = TraceMeta(n_layers=N_LAYERS, n_experts=N_EXPERTS, top_k=TOP_K, object_bytes=[EXPERT_BYTES] * N_LAYERS,
                     model="olmoe-like-synthetic", provenance={"generator": "bench.count_replay", "seed": seed})
    return Trace(
        meta=meta,
        pass_phase=np.full(n_passes, DECODE, dtype=np.int8),
        pass_cell_offsets=np.arange(0, n_cells + 1, N_LAYERS, dtype=np.int64),
        pass_token_offsets=np.arange(n_passes + 1, dtype=np.int64),
        token_request=np.zeros(n_passes, dtype=np.int32),
        token_position=np.arange(n_passes, dtype=np.int32),
        cell_layer=np.tile(np.arange(N_LAYERS, dtype=np.int16), n_passes),
        cell_offsets=np.arange(0, n_cells * TOP_K + 1, TOP_K, dtype=np.int64),
        cell_tokens=np.ones(n_cells, dtype=np.int32),
        expert=experts.reshape(-1),
    )


def libcachesim_per_request(ids: list[int], slots: int) -> tuple[int, float]:
    import libcachesim as lcs

    cache = lcs.LRU(slots)
    req = lcs.Request()
    req.obj_size = 1
    get = cache.get
    hits = 0
    start = time.perf_counter()
    for obj in ids:
        req.obj_id = obj
        hits += get(req)
    return hits, time.perf_counter() - start


def libcachesim_c_loop(ids: np.ndarray, slots: int) -> tuple[int, float]:
    """libCacheSim's own loop over an oracleGeneral binary trace (time, id, size, next-access vtime)."""
    import libcachesim as lcs

    records = np.zeros(ids.shape[0], dtype=[("t", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
    records["t"] = np.arange(ids.shape[0], dtype=np.uint32)
    records["id"] = ids.astype(np.uint64) + 1
    records["size"] = 1
    records["next"] = -1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ids.oracleGeneral.bin")
        records.tofile(path)
        reader = lcs.TraceReader(trace=path, trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
        cache = lcs.LRU(slots)
        start = time.perf_counter()
        miss_ratio, _ = cache.process_trace(reader)
        elapsed = time.perf_counter() - start
    return int(round((1.0 - miss_ratio) * ids.shape[0])), elapsed


def run(n_accesses: int = 10_000_000, seed: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    trace = olmoe_like_trace(n_accesses, seed)
    gen_s = time.perf_counter() - t0
    n = trace.n_accesses
    slots = int(0.05 * trace.n_objects)
    capacity = slots * EXPERT_BYTES
    ids_np = trace.object_ids()
    ids = ids_np.tolist()

    lcs_hits, lcs_s = libcachesim_per_request(ids, slots)
    try:
        lcs_c_hits, lcs_c_s = libcachesim_c_loop(ids_np, slots)
    except Exception as exc:  # the C-side loop is context only; never fail the benchmark on it
        lcs_c_hits, lcs_c_s = None, None
        print(f"libCacheSim C loop unavailable: {exc}")

    start = time.perf_counter()
    event = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=capacity, mode="event"))
    event_s = time.perf_counter() - start
    start = time.perf_counter()
    seq = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=capacity, mode="sequential"))
    seq_s = time.perf_counter() - start
    seq_hits = int((seq.outcomes == 0).sum())
    event_hits = int((event.outcomes == 0).sum())

    ratio = (n / event_s) / (n / lcs_s)
    return {
        "workload": f"OLMoE-like synthetic decode, {n} accesses, {trace.n_objects} objects, {slots} slots (5 %)",
        "generate_s": round(gen_s, 2),
        "moesim_event_accesses_per_s": round(n / event_s),
        "moesim_sequential_accesses_per_s": round(n / seq_s),
        "libcachesim_per_request_accesses_per_s": round(n / lcs_s),
        "libcachesim_c_loop_accesses_per_s": None if lcs_c_s is None else round(n / lcs_c_s),
        "ratio_event_vs_libcachesim_per_request": round(ratio, 3),
        "ratio_event_vs_libcachesim_c_loop": None if lcs_c_s is None else round((n / event_s) / (n / lcs_c_s), 3),
        "hits": {"moesim_event": event_hits, "moesim_sequential": seq_hits, "libcachesim": lcs_hits,
                 "libcachesim_c_loop": lcs_c_hits},
        "targets": {
            "count replay vs libCacheSim LRU (accesses/s ratio)": {
                "value": round(ratio, 3), "goal": f">= {TARGET_RATIO}", "pass": ratio >= TARGET_RATIO},
            "sequential LRU hits equal libCacheSim's": {
                "value": seq_hits - lcs_hits, "goal": "0", "pass": seq_hits == lcs_hits},
        },
    }


def profile(n_accesses: int = 1_000_000) -> None:
    import cProfile
    import pstats

    trace = olmoe_like_trace(n_accesses)
    capacity = int(0.05 * trace.n_objects) * EXPERT_BYTES
    prof = cProfile.Profile()
    prof.enable()
    count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=capacity))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of a 1 M-access replay")
    args = parser.parse_args(argv if argv is not None else [])
    result = run(args.accesses, args.seed)
    if args.profile:
        profile()
    return result


if __name__ == "__main__":
    import json
    import sys

    out = main(sys.argv[1:])
    print(json.dumps(out, indent=2))
    sys.exit(0 if all(t["pass"] for t in out["targets"].values()) else 1)
