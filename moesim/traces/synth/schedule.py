"""Requests laid out as passes: prompt and decode lengths, and continuous batching into prefill and decode passes.

The synthetic generator (moesim/traces/synth/synthetic.py) routes tokens over this schedule.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from moesim.traces.format.trace_meta import DECODE, PREFILL
from moesim.traces.synth.synth_config import SynthConfig


@dataclass(frozen=True)
class Schedule:
    """Requests laid out as sequences and passes. Global token g of request r is
    seq_offsets[r] + position; `pass_tokens` lists each pass's global tokens, in pass order."""

    prefill_lengths: np.ndarray
    decode_lengths: np.ndarray
    seq_offsets: np.ndarray
    pass_phase: np.ndarray
    pass_token_offsets: np.ndarray
    pass_tokens: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.seq_offsets[-1])


def expand(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + n) for every (s, n). O(sum n)."""
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_start = np.cumsum(lengths) - lengths
    idx = np.arange(total, dtype=np.int64)
    return idx - np.repeat(seg_start - starts.astype(np.int64), lengths)


def draw_lengths(config: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and decode lengths of every request; with `accesses`, requests are drawn in blocks
    until the trace reaches the target (the last request is the one that crosses it)."""
    if config.accesses <= 0:
        return config.prefill.sample(rng, config.n_requests), config.decode.sample(rng, config.n_requests)
    per_token = config.n_layers * config.top_k
    target_tokens = -(-config.accesses // per_token)
    mean = max(1.0, config.prefill.mean() + config.decode.mean())
    pre, dec = [], []
    have = 0
    while have < target_tokens:
        n = max(16, int(1.1 * (target_tokens - have) / mean) + 1)
        p, d = config.prefill.sample(rng, n), config.decode.sample(rng, n)
        pre.append(p)
        dec.append(d)
        have += int(p.sum() + d.sum())
    p, d = np.concatenate(pre), np.concatenate(dec)
    cum = np.cumsum(p + d)
    keep = int(np.searchsorted(cum, target_tokens)) + 1
    return p[:keep], d[:keep]


def build_schedule(prefill_lengths: np.ndarray, decode_lengths: np.ndarray, batch_size: int) -> Schedule:
    """Continuous batching with `batch_size` decode slots. O(R log B) Python + O(tokens) numpy.

    A request takes the slot that frees first (ties: lowest slot); it joins at that decode step
    with one prefill pass (before that step's decode pass, in request order), then one token in
    each of its decode steps. Tokens in a decode pass are ordered by slot.
    """
    pre = prefill_lengths.astype(np.int64)
    dec = decode_lengths.astype(np.int64)
    n_req = pre.size
    seq_offsets = np.zeros(n_req + 1, dtype=np.int64)
    np.cumsum(pre + dec, out=seq_offsets[1:])
    admit = np.empty(n_req, dtype=np.int64)
    slot = np.empty(n_req, dtype=np.int64)
    heap = [(0, s) for s in range(batch_size)]
    for r in range(n_req):
        t, s = heapq.heappop(heap)
        admit[r], slot[r] = t, s
        heapq.heappush(heap, (t + int(dec[r]), s))
    # decode tokens sorted by (step, slot)
    tok_req = np.repeat(np.arange(n_req, dtype=np.int64), dec)
    within = expand(np.zeros(n_req, dtype=np.int64), dec)
    step = admit[tok_req] + within
    order = np.lexsort((slot[tok_req], step))
    dec_tokens = (seq_offsets[tok_req] + pre[tok_req] + within)[order]
    dec_step = step[order]
    starts = np.flatnonzero(np.r_[True, dec_step[1:] != dec_step[:-1]]) if dec_step.size else np.zeros(0, np.int64)
    dec_pass_step = dec_step[starts]
    dec_pass_len = np.diff(np.r_[starts, dec_step.size])
    # passes: prefill (step, 0, r) before decode (step, 1)
    has_prefill = pre > 0
    pf_req = np.flatnonzero(has_prefill)
    key_step = np.r_[admit[pf_req], dec_pass_step]
    key_kind = np.r_[np.zeros(pf_req.size, np.int64), np.ones(dec_pass_step.size, np.int64)]
    key_req = np.r_[pf_req, np.zeros(dec_pass_step.size, np.int64)]
    order = np.lexsort((key_req, key_kind, key_step))
    # token sources: prefill tokens are contiguous in global token space, decode ones in dec_tokens
    pf_tokens = expand(seq_offsets[pf_req], pre[pf_req])
    source = np.r_[pf_tokens, dec_tokens]
    pf_start = np.cumsum(pre[pf_req]) - pre[pf_req]
    src_start = np.r_[pf_start, pf_tokens.size + starts][order]
    src_len = np.r_[pre[pf_req], dec_pass_len][order]
    pass_token_offsets = np.zeros(order.size + 1, dtype=np.int64)
    np.cumsum(src_len, out=pass_token_offsets[1:])
    return Schedule(
        prefill_lengths=pre,
        decode_lengths=dec,
        seq_offsets=seq_offsets,
        pass_phase=np.where(key_kind[order] == 0, PREFILL, DECODE).astype(np.int8),
        pass_token_offsets=pass_token_offsets,
        pass_tokens=source[expand(src_start, src_len)],
    )
