"""Run the reference harness: decode with expert offload, record the routing as a moesim trace and time every step.

    from moesim.harness.run import Workload, run_harness
    run = run_harness(HarnessModel.olmoe_mini(), Workload(), capacity=64, store_dir="/tmp/experts", device="cpu")
    run.trace, run.steps (one row per forward pass), run.counts

Each request is one prefill pass over its prompt and `decode_steps` greedy decode passes; the
router's top-k indices are read on the host (`.cpu()`, a real device-to-host sync on CUDA) and
drive the fetches. Step time is host wall time from the pass's first operation until its next
token is on the host. Timing starts after a warm-up pass over the dense weights only (no expert is
fetched in it), so the cache starts cold, as the simulator's does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from moesim.harness.model import DenseWeights, HarnessModel, KVCache, attention_and_router, rms_norm
from moesim.harness.offload import ExpertFile, Fetcher, LruCache, SlotBuffers
from moesim.kernels.cpu_expert import swiglu_experts
from moesim.traces.format.trace_meta import DECODE, PREFILL, TraceMeta
from moesim.traces.format.trace import Trace
from moesim.traces.format.build import build_trace

COUNT_KEYS = ("hits", "misses", "compulsory", "capacity", "collision", "bypassed", "bytes", "evictions")


@dataclass(frozen=True)
class Workload:
    n_requests: int = 2
    prompt_len: int = 8
    decode_steps: int = 24
    seed: int = 0


@dataclass
class HarnessRun:
    model: HarnessModel
    workload: Workload
    capacity: int  # cache slots (whole experts)
    device: str
    trace: Trace
    steps: pd.DataFrame  # pass, phase, tokens, step_s, dense_s, fetch_s, expert_s, hits, misses, bytes
    counts: dict[str, int]
    throttle_Bps: float | None
    read_mode: str
    read_note: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def capacity_bytes(self) -> int:
        return self.capacity * self.model.expert_bytes


def run_harness(model: HarnessModel, workload: Workload, capacity: int, store_dir: str, device: str = "cpu",
                throttle_Bps: float | None = None, direct: bool = True, threads: int = 1) -> HarnessRun:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    previous_threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    store = ExpertFile(model, store_dir, direct=direct)
    try:
        return _run(model, workload, capacity, store, dev, throttle_Bps)
    finally:
        store.close()
        torch.set_num_threads(previous_threads)


def _run(model: HarnessModel, workload: Workload, capacity: int, store: ExpertFile, dev: torch.device,
         throttle_Bps: float | None) -> HarnessRun:
    dense = DenseWeights(model, dev)
    spare = min(model.n_experts, model.top_k * max(workload.prompt_len, 1))
    slots = SlotBuffers(model, capacity, spare, dev)
    fetcher = Fetcher(store, slots, throttle_Bps)
    cache = LruCache(capacity)
    rng = np.random.default_rng([workload.seed, 11])
    prompts = rng.integers(0, model.vocab, size=(workload.n_requests, workload.prompt_len))
    _warm_up(model, dense, dev, workload.prompt_len)

    passes: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    totals = dict.fromkeys(COUNT_KEYS, 0)
    pass_index = 0
    last_read = None
    for req in range(workload.n_requests):
        kv = KVCache(model.n_layers)
        tokens = torch.from_numpy(prompts[req]).to(dev)
        position = 0
        for step in range(workload.decode_steps + 1):
            phase = PREFILL if step == 0 else DECODE
            n_tok = int(tokens.shape[0])
            t0 = time.perf_counter()
            x = dense.embed.index_select(0, tokens)
            cells = []
            row = dict(pass_=pass_index, phase="prefill" if phase == PREFILL else "decode", tokens=n_tok,
                       dense_s=0.0, fetch_s=0.0, expert_s=0.0, **dict.fromkeys(COUNT_KEYS, 0))
            for layer in range(model.n_layers):
                ta = time.perf_counter()
                x, m, logits = attention_and_router(model, dense.layers[layer], x, layer, kv)
                probs = torch.softmax(logits.float(), dim=-1)
                top_w, top_i = torch.topk(probs, model.top_k, dim=-1)
                ids = top_i.cpu().numpy()  # the device-to-host sync a demand fetch needs
                weights = top_w.cpu().numpy()
                tb = time.perf_counter()
                order = list(dict.fromkeys(ids.reshape(-1).tolist()))  # distinct, in the router's order
                fetcher.slots_free_after(last_read)
                outcome = cache.serve(layer, order, pass_index, lambda e, s: fetcher(layer, e, s))
                fetcher.wait_copies()
                tc = time.perf_counter()
                groups = []
                for e in order:
                    rows_t, ks = np.nonzero(ids == e)
                    gate = torch.from_numpy(weights[rows_t, ks]).to(dev, m.dtype)
                    groups.append((torch.from_numpy(rows_t).to(dev), gate, slots.views(outcome.slots[e])))
                moe = swiglu_experts(m, torch.zeros_like(m), groups)
                x = x + moe
                if dev.type == "cuda":
                    last_read = torch.cuda.Event()
                    last_read.record()
                td = time.perf_counter()
                row["dense_s"] += tb - ta
                row["fetch_s"] += tc - tb
                row["expert_s"] += td - tc
                for key in COUNT_KEYS:
                    row[key] += getattr(outcome, key)
                cells.append((layer, ids.tolist(), weights.tolist()))
            logits_out = rms_norm(x) @ dense.head
            next_token = int(torch.argmax(logits_out[-1]).item())
            row["step_s"] = time.perf_counter() - t0
            for key in COUNT_KEYS:
                totals[key] += row[key]
            rows.append(row)
            passes.append({"phase": phase, "cells": cells,
                           "tokens": [(req, position + t) for t in range(n_tok)]})
            position += n_tok
            tokens = torch.tensor([next_token], device=dev)
            pass_index += 1
    meta = TraceMeta(n_layers=model.n_layers, n_experts=model.n_experts, top_k=model.top_k,
                     object_bytes=[model.expert_bytes] * model.n_layers, model="harness-" + model.dtype,
                     dense_bytes=[model.dense_bytes_per_layer] * model.n_layers,
                     provenance={"source": "moesim reference harness (moesim/harness), routing computed by its "
                                           "random-weight router", "licence": "generated"},
                     extra={"weight_dtype": model.dtype, "harness_model": model.to_dict(),
                            "workload": vars(workload)})
    trace = build_trace(meta, passes)
    steps = pd.DataFrame(rows).rename(columns={"pass_": "pass"})
    return HarnessRun(model=model, workload=workload, capacity=capacity, device=str(dev), trace=trace, steps=steps,
                      counts={k: int(v) for k, v in totals.items()}, throttle_Bps=throttle_Bps,
                      read_mode=store.file.mode if dev.type == "cpu" else "pinned-host",
                      read_note=store.file.note if dev.type == "cpu" else "",
                      info={"store_built": store.built, "store_path": str(store.path)})


def _warm_up(model: HarnessModel, dense: DenseWeights, dev: torch.device, prompt_len: int) -> None:
    """One untimed pass over the dense weights (allocator, kernels, thread pool), no experts."""
    kv = KVCache(model.n_layers)
    x = dense.embed[: max(prompt_len, 1)]
    for layer in range(model.n_layers):
        x, m, logits = attention_and_router(model, dense.layers[layer], x, layer, kv)
        torch.topk(torch.softmax(logits.float(), -1), model.top_k, dim=-1)[1].cpu()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
