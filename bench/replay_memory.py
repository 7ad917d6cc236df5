"""What a replay adds to the resident memory of a trace already loaded, per access (context for
issue #16's memory rows in bench/hardening_memory.py, whose peaks are the trace reader's).

Two layouts of about N accesses each: a one-pass prompt (16 cells of N/16 accesses: few requests,
each serving many accesses) and bench.count_replay's OLMoE-like decode trace (one token per pass:
every access its own request). For each, in one process: the count replay in event and sequential
mode with its summary and per-layer table, and the timed replay (LRU, 25 %, a100-80gb), each first
on a small trace (imports, caches), then, after `malloc_trim` and a VmHWM reset, on the big one.
Not a `make bench` target: the timed replay of a decode trace holds tens of bytes per request
(planner lists, per-request compute times, bounds), which this prints and no target hides.

Run: python -m bench.replay_memory [--accesses 20M]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import time
from typing import Any

from bench.trace_memory import _RSS_HELPERS

KINDS = ("event", "sequential", "timed")


def _rss() -> dict[str, Any]:
    helpers: dict[str, Any] = {}
    exec(_RSS_HELPERS, helpers)  # reset_peak() and peak(), as the other memory benchmarks read them
    return helpers


def _replay(trace: Any, kind: str, profile: Any) -> None:
    from moesim.sim import metrics
    from moesim.sim.run import RunSpec, run

    options = {"profile": profile} if kind == "timed" else {"mode": kind}
    result = run(RunSpec.build(trace, "lru", int(trace.total_object_bytes() * 0.25), capacity="25%", **options))
    if kind != "timed":
        metrics.summary(result)
        metrics.by_layer(result)


def measure(traces: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Per layout and kind: bytes per access the replay added over the loaded trace, and CPU seconds."""
    from moesim.sim.cli_timing import resolve_profile

    rss, profile, out = _rss(), resolve_profile("a100-80gb"), {}
    for layout, (small, big) in traces.items():
        out[f"{layout}: trace bytes per access"] = round(big.nbytes() / big.n_accesses, 2)
        for kind in KINDS:
            _replay(small, kind, profile)
            gc.collect()
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the system: the peak is the replay's
            except OSError:
                pass
            base = rss["reset_peak"]()
            start = time.process_time()
            _replay(big, kind, profile)
            out[f"{layout}, {kind} replay: added bytes per access, CPU s"] = [
                round((rss["peak"]() - base) / big.n_accesses, 2), round(time.process_time() - start, 1)]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench.count_replay import olmoe_like_trace
    from bench.hardening_memory import one_pass_file
    from moesim.traces.format.io import load_trace
    from moesim.traces.synth.synth_config import parse_count

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accesses", default="20M")
    args = parser.parse_args(argv)
    accesses = parse_count(args.accesses)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one_pass = (load_trace(one_pass_file(folder, 100_000, 16, "small")),
                    load_trace(one_pass_file(folder, accesses, 16)))
    decode = (olmoe_like_trace(100_000), olmoe_like_trace(accesses))
    return {"accesses": accesses, **measure({"one pass, 16 cells": one_pass, "decode, one token per pass": decode})}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
