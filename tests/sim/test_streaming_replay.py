"""Replay results do not depend on how the request stream is cut, and no replay holds a per-access array.

Issue #16's memory target (bench/hardening_memory.py) made the replays stream: the request stream
holds per request its object, cell and routed accesses, never per access; the count metrics walk it
in chunks built from the trace (moesim/sim/requests.py, moesim/sim/metrics.py); the timed result's
request table reads the pass-tokens in chunks (moesim/sim/timed_result.py). Here, on hypothesis
traces with many passes and long (many-token) cells, with chunk sizes forced down to one request:
- the chunks put together are the whole stream, on the compiled path and the numpy one, and the
  per-request access counts are those of numpy's per-access map;
- the count metrics equal a per-access reference written here from the old definitions;
- the (request, pass) pairs equal numpy's row-unique of the per-token table;
- the content hash equals the hash of the arrays' copied bytes;
and, with tracemalloc, doubling a trace's accesses adds to what a count or timed replay (with its
metrics) allocates less than half a byte per access on a one-pass trace, and the two bytes per
request of outcome codes and bypass flags (plus under half a byte) where every access is a request.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fast_helpers import random_pass_cells, traced_peak

from moesim.sim import metrics, requests
from moesim.sim.cache_core import HIT, LATE, MISS_CAPACITY, MISS_COLLISION, MISS_COMPULSORY
from moesim.sim.count_replay import ReplayConfig, count_replay
from moesim.sim.requests import DeferredRequestStream, build_request_stream, event_stream_numpy
from moesim.sim.timed_result import request_passes
from moesim.traces.format.build import simple_trace
from moesim.traces.format.trace import Trace
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta

EXAMPLES = int(os.environ.get("MOESIM_HYPOTHESIS_EXAMPLES", "30"))
MODES = ("event", "sequential")


@st.composite
def long_pass_traces(draw):
    """1-3 layers, up to 16 passes; now and then a long prefill (up to 60 tokens: cells of up to
    240 accesses repeating experts), a skipped layer or an empty cell; unequal object sizes."""
    n_layers = draw(st.integers(1, 3))
    n_experts = draw(st.integers(2, 8))
    top_k = draw(st.integers(1, min(4, n_experts)))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n_layers, max_size=n_layers))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    passes, phases = [], []
    for _ in range(draw(st.integers(1, 16))):
        tokens = int(rng.integers(20, 61)) if rng.random() < 0.25 else int(rng.integers(1, 4))
        passes.append(random_pass_cells(rng, n_layers, n_experts, top_k, tokens, empty=0.1))
        phases.append(PREFILL if tokens > 1 else DECODE)
    return simple_trace(passes, n_layers=n_layers, n_experts=n_experts, object_bytes=sizes, top_k=top_k,
                        phases=phases)


def _joined(stream, chunk):
    parts = list(stream.chunks(chunk))
    lo = 0
    for part in parts:
        assert part.lo == lo and part.hi - part.lo == part.obj.shape[0] > 0
        lo = part.hi
    assert lo == stream.n_requests
    return {name: [x for part in parts for x in getattr(part, name).tolist()] for name in ("obj", "cell", "accesses")}


@settings(max_examples=EXAMPLES, deadline=None)
@given(trace=long_pass_traces(), mode=st.sampled_from(MODES), chunk=st.integers(1, 7), compiled=st.booleans())
def test_stream_chunks_put_together_are_the_whole_stream(trace, mode, chunk, compiled):
    with pytest.MonkeyPatch.context() as patch:
        if not compiled:
            patch.setattr(requests, "_compiled", lambda _trace: False)
        whole = build_request_stream(trace, mode)
        deferred = DeferredRequestStream(trace, mode, whole.n_requests, whole.cell_offsets)
        got = _joined(deferred, chunk)
        assert "_built" not in vars(deferred)  # the chunks came from the trace, not the whole stream
    for name in ("obj", "cell", "accesses"):
        assert got[name] == getattr(whole, name).tolist(), name
    # independent: numpy's lexsort stream and its per-access map
    reference = event_stream_numpy(trace) if mode == "event" else None
    if reference is not None:
        assert whole.obj.tolist() == reference.obj.tolist()
        counts = np.bincount(reference.access_request, minlength=reference.n_requests)
        assert whole.accesses.tolist() == counts.tolist()
        assert whole.access_request.tolist() == reference.access_request.tolist()
        per_cell = np.diff(whole.cell_offsets)
        sizes = [p.hi - p.lo for p in deferred.chunks(chunk)]
        assert max(sizes, default=0) <= max(chunk, int(per_cell.max(initial=0)))  # cut only at cells
    else:
        assert whole.obj.tolist() == trace.object_ids().tolist() and set(got["accesses"]) <= {1}
    assert sum(got["accesses"]) == trace.n_accesses


def _reference_counts(outcomes, sizes, groups, n_groups):
    """COUNT_COLUMNS per group with a Python loop (docs/metrics.md's definitions)."""
    names = metrics.COUNT_COLUMNS[:-1]
    rows = {name: [0] * n_groups for name in names}
    kinds = {HIT: "hits", LATE: "late_prefetch", MISS_COMPULSORY: "compulsory", MISS_CAPACITY: "capacity",
             MISS_COLLISION: "collision"}
    for out, size, g in zip(outcomes.tolist(), sizes.tolist(), groups.tolist()):
        rows["requests"][g] += 1
        rows[kinds[out]][g] += 1
        if out >= MISS_COMPULSORY:
            rows["misses"][g] += 1
            rows["bytes_fetched"][g] += size
    rows["hit_rate"] = [h / r if r else float("nan") for h, r in zip(rows["hits"], rows["requests"])]
    return rows


@settings(max_examples=EXAMPLES, deadline=None)
@given(trace=long_pass_traces(), mode=st.sampled_from(MODES), chunk=st.integers(1, 9),
       policy=st.sampled_from(["lru", "fifo", "lfu", "belady"]), share=st.sampled_from([0.1, 0.3, 0.6]))
def test_chunked_count_metrics_equal_a_per_access_reference(trace, mode, chunk, policy, share):
    capacity = int(trace.total_object_bytes() * share)
    result = count_replay(trace, ReplayConfig(policy=policy, capacity_bytes=capacity, mode=mode))
    got = metrics.summary(result, chunk_requests=chunk)
    layers = metrics.by_layer(result, chunk_requests=chunk)
    passes = metrics.by_pass(result, chunk_requests=chunk)
    if result.engine == "fast":
        assert "_built" not in vars(result.stream)  # the metrics never built the whole stream

    stream = build_request_stream(trace, mode)
    access_request = event_stream_numpy(trace).access_request if mode == "event" else np.arange(trace.n_accesses)
    sizes = trace.object_bytes_array()[stream.obj]
    req_pass = trace.cell_pass()[stream.cell]
    zero = np.zeros(stream.n_requests, dtype=np.int64)
    total = {k: v[0] for k, v in _reference_counts(result.outcomes, sizes, zero, 1).items()}
    phase = _reference_counts(result.outcomes, sizes, trace.pass_phase[req_pass], 2)
    served = result.outcomes[access_request]
    for key in metrics.COUNT_COLUMNS[:-1]:
        assert got[key] == total[key], key
        for p, name in enumerate(("prefill", "decode")):
            assert got["by_phase"][name][key] == phase[key][p], (name, key)
    assert got["hit_rate"] == (total["hit_rate"] if total["requests"] else None)
    assert got["hit_rate_per_access"] == (float(np.mean(served == HIT)) if served.size else None)
    want_layers = _reference_counts(result.outcomes, sizes, trace.cell_layer[stream.cell], trace.meta.n_layers)
    want_passes = _reference_counts(result.outcomes, sizes, req_pass, trace.n_passes)
    for frame, want in ((layers, want_layers), (passes, want_passes)):
        for key in metrics.COUNT_COLUMNS:
            assert frame[key].dtype == (np.float64 if key == "hit_rate" else np.int64), key
            np.testing.assert_array_equal(frame[key].to_numpy(), np.asarray(want[key], dtype=frame[key].dtype))
    # one chunk, or the default size: the same numbers, byte for byte
    assert json.dumps(metrics.summary(result)) == json.dumps(got)
    pd.testing.assert_frame_equal(metrics.by_layer(result, chunk_requests=10**9), layers)


@settings(max_examples=EXAMPLES, deadline=None)
@given(sizes=st.lists(st.integers(0, 6), min_size=1, max_size=8), seed=st.integers(0, 2**31 - 1),
       chunk=st.integers(1, 5))
def test_request_passes_equal_numpy_row_unique(sizes, seed, chunk):
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rng = np.random.default_rng(seed)

    class Tokens:
        n_passes, pass_token_offsets, n_tokens = len(sizes), offsets, int(offsets[-1])
        token_request = rng.integers(0, 5, int(offsets[-1])).astype(np.int32)

    token_pass = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    rows = np.stack([Tokens.token_request.astype(np.int64), token_pass], axis=1)
    want = np.unique(rows, axis=0) if rows.size else np.zeros((0, 2), np.int64)
    got = request_passes(Tokens, chunk)
    assert got.dtype == np.int64 and got.tolist() == want.tolist()


def _copied_bytes_hash(trace):
    """Trace.content_hash as it was written before it hashed views: every array's tobytes() copy."""
    h = hashlib.sha256()
    h.update(json.dumps(trace.meta.to_dict(), sort_keys=True).encode())
    for name in ("pass_phase", "pass_cell_offsets", "pass_token_offsets", "token_request", "token_position",
                 "cell_layer", "cell_offsets", "cell_tokens", "expert"):
        arr = np.ascontiguousarray(getattr(trace, name))
        h.update(name.encode() + str(arr.dtype).encode() + arr.tobytes())
    if trace.weight is not None:
        h.update(b"weight" + np.ascontiguousarray(trace.weight).tobytes())
    for name in sorted(trace.annotations):
        h.update(name.encode() + np.ascontiguousarray(trace.annotations[name]).tobytes())
    for name in sorted(trace.predictions):
        h.update(name.encode() + np.ascontiguousarray(trace.predictions[name]).tobytes())
    if trace.access_token is not None:
        h.update(b"access_token" + np.ascontiguousarray(trace.access_token, dtype=np.int32).tobytes())
    return h.hexdigest()


@settings(max_examples=EXAMPLES, deadline=None)
@given(trace=long_pass_traces(), extras=st.booleans())
def test_content_hash_is_the_hash_of_the_arrays_bytes(trace, extras):
    if extras:  # every optional array, one of them not contiguous
        n = trace.n_accesses
        trace.weight = np.linspace(0, 1, n).astype(np.float16)
        trace.annotations = {"engine_residency": (np.arange(n) % 2).astype(np.int8)}
        trace.predictions = {"lookahead_1": np.arange(3 * trace.n_cells, dtype=np.int64).reshape(trace.n_cells, 3)[:, ::2]}
        trace.access_token = np.zeros(n, dtype=np.int16)
    assert trace.content_hash() == _copied_bytes_hash(trace)


def one_pass_trace(accesses: int, n_layers: int = 16, top_k: int = 8, n_experts: int = 64) -> Trace:
    """One request whose prompt is one pass of about `accesses` accesses (bench/hardening_memory.py's
    file, built in memory): one cell per layer, each a long run of tokens."""
    tokens = max(1, accesses // (n_layers * top_k))
    rng = np.random.default_rng(7)
    expert = np.argsort(rng.random((n_layers * tokens, n_experts)), axis=1)[:, :top_k].astype(np.int16).reshape(-1)
    per_cell = tokens * top_k
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=[1000] * n_layers,
                     model="hand")
    trace = Trace(meta=meta, pass_phase=np.array([PREFILL], np.int8), pass_cell_offsets=np.array([0, n_layers]),
                  pass_token_offsets=np.array([0, tokens]), token_request=np.zeros(tokens, np.int32),
                  token_position=np.arange(tokens, dtype=np.int32), cell_layer=np.arange(n_layers, dtype=np.int16),
                  cell_offsets=np.arange(n_layers + 1, dtype=np.int64) * per_cell,
                  cell_tokens=np.full(n_layers, tokens, np.int32), expert=expert)
    trace.validate()
    return trace


def decode_trace(accesses: int, n_layers: int = 16, top_k: int = 8, n_experts: int = 64) -> Trace:
    """One request decoding one token per pass (bench/count_replay.py's layout): a cell of top_k
    distinct experts per layer and pass, so every access is a request of its own."""
    n_passes = max(1, accesses // (n_layers * top_k))
    n_cells = n_passes * n_layers
    rng = np.random.default_rng(11)
    expert = ((np.arange(top_k) + rng.integers(0, n_experts, (n_cells, 1))) % n_experts).astype(np.int16).reshape(-1)
    meta = TraceMeta(n_layers=n_layers, n_experts=n_experts, top_k=top_k, object_bytes=[1000] * n_layers,
                     model="hand")
    trace = Trace(meta=meta, pass_phase=np.full(n_passes, DECODE, np.int8),
                  pass_cell_offsets=np.arange(0, n_cells + 1, n_layers, dtype=np.int64),
                  pass_token_offsets=np.arange(n_passes + 1, dtype=np.int64),
                  token_request=np.zeros(n_passes, np.int32), token_position=np.arange(n_passes, dtype=np.int32),
                  cell_layer=np.tile(np.arange(n_layers, dtype=np.int16), n_passes),
                  cell_offsets=np.arange(0, n_cells * top_k + 1, top_k, dtype=np.int64),
                  cell_tokens=np.ones(n_cells, np.int32), expert=expert)
    trace.validate()
    return trace


def _count_job(trace, mode):
    def job():
        result = count_replay(trace, ReplayConfig(policy="lru", capacity_bytes=trace.total_object_bytes() // 4,
                                                  mode=mode))
        metrics.summary(result)
        metrics.by_layer(result)
        trace.content_hash()
    return job


def _timed_job(trace):
    from moesim.sim.cli_timing import resolve_profile
    from moesim.sim.run import RunSpec, run

    profile = resolve_profile("a100-80gb")

    def job():
        run(RunSpec.build(trace, "lru", trace.total_object_bytes() // 4, capacity="25%", profile=profile))
    return job


@pytest.mark.parametrize("kind", ["count event", "count sequential", "timed", "count event decode"])
def test_a_replay_allocates_about_a_byte_per_request_more_when_the_trace_doubles(kind):
    # slopes, not absolute peaks: the fixed cost (imports, caches, profile, chunk buffers) cancels
    # out; a per-access array of even one byte (an object-id copy is four) shows in the slope
    make = decode_trace if kind.endswith("decode") else one_pass_trace
    small, big = make(1 << 20), make(1 << 21)
    peaks = []
    for trace in (small, small, big):  # the first run warms caches
        if kind == "timed":
            job = _timed_job(trace)
        else:
            job = _count_job(trace, kind.split()[1])
        peaks.append(traced_peak(job))
    per_access = (peaks[2] - peaks[1]) / (big.n_accesses - small.n_accesses)
    # a count replay holds an outcome code and a bypass flag per request (the flags are calloc'd,
    # so they cost no RSS until a bypass, but tracemalloc counts them): 2 bytes per access where
    # every access is a request (sequential mode, decode cells of distinct experts), and nothing
    # per access where a long pass's cells repeat experts; the metrics' per-cell groups are the
    # trace's own narrow types (an int64 per decode cell would add 1 byte per access)
    limit = 2.5 if kind in ("count sequential", "count event decode") else 0.5
    assert per_access < limit, (kind, peaks)
