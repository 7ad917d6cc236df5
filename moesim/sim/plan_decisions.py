"""One cell's miss and prefetch decisions, and the copies they issue (moesim/sim/plan.py's Planner).

Functions over the planner's parts: its policies (moesim/sim/plan_policies.py), its tier caches
(moesim/sim/tier_caches.py) and its copy ledger (moesim/sim/copy_ledger.py).

- `handle_misses`: the miss handler decides each miss (fetch, run on the CPU, skip); fetched ones
  are admitted into VRAM (evicting) or streamed when the core refuses them; demand copies are
  issued and the cell waits for them.
- `prefetch`: proposals in priority order; present ones are protected for the rest of the cell,
  absent ones admitted without evicting the cell's objects or another proposal of the batch.
- `issue`: the copies into VRAM, staged through DRAM first where DRAM caches SSD.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import numpy as np

from moesim.policies.base import PrefetchView
from moesim.policies.miss_handling import CPU, FETCH, SKIP, MissView
from moesim.sim.cache_core import ABSENT
from moesim.sim.topology import ROUTE_DIRECT, ROUTE_LAST, ROUTE_STAGE

if TYPE_CHECKING:
    from moesim.sim.plan import Planner

_PRIORITY = operator.attrgetter("priority")


def handle_misses(planner: Planner, c: int, missing: list[int], missing_req: list[int], admitted: list[int]) -> int:
    """Decide the cell's misses; issue demand copies; return the altered applications."""
    policies, ledger = planner.policies, planner.ledger
    fetch = missing
    scale = 1.0
    altered = 0
    if not policies.handler_fetch_all:
        decision = policies.handler.decide(miss_view(planner, c, missing, missing_req))
        scale = decision.fetch_scale
        altered = decision.altered
        fetch = []
        fetch_req = []
        cpu_objs = []
        for i, action in enumerate(decision.actions):
            obj, r = missing[i], missing_req[i]
            if action == FETCH:
                fetch.append(obj)
                fetch_req.append(r)
                if decision.kept_tokens is not None and decision.kept_tokens[i] != planner.req_tokens[r]:
                    planner.gpu_token_changes.append((r, decision.kept_tokens[i]))
            elif action == CPU:
                planner.cpu_rows.append((r, planner.req_tokens[r]))
                planner.gpu_token_changes.append((r, 0))
                cpu_objs.append(obj)
            elif action == SKIP:
                planner.gpu_token_changes.append((r, 0))
            else:
                raise ValueError(f"miss handler {policies.miss_spec.name} returned unknown action {action}")
        missing_req = fetch_req
        if cpu_objs:
            ledger.waits.extend(host_stage(planner, cpu_objs, c))
    log = planner.tiers.vram_log
    victim_lists: list[list[int]] = []
    resident: list[bool] = []
    admit = planner.tiers.vram.admit
    for obj, r in zip(fetch, missing_req):
        log.clear()
        got = admit(obj)
        victims = ledger.take_orphans(log) if ledger.orphans else log[:]
        if got is None:
            planner.bypassed.append(r)
            ledger.orphans.extend(victims)
            victim_lists.append([])
            resident.append(False)
        else:
            admitted.append(obj)
            victim_lists.append(victims)
            resident.append(True)
    if fetch:
        issue(planner, fetch, victim_lists, prefetch=False, cell=c, scale=scale, resident=resident)
        # the cell waits for its own demand copies (the last len(fetch) copies issued)
        n = len(ledger.copies)
        ledger.waits.extend(range(n - len(fetch), n))
        if policies.keeps_lowbit:
            for obj, res in zip(fetch, resident):
                if res:
                    ledger.lowbit[obj] = 1 if scale < 1.0 else 0
    return altered


def host_stage(planner: Planner, objs: list[int], c: int) -> list[int]:
    """Copies the CPU must wait for before it runs `objs` from host memory."""
    if planner.tiers.dram is not None:
        chain, _ = planner.tiers.dram_stage(objs, c, False, planner.ledger, planner.object_bytes)
        return [k for k in chain if k >= 0]
    if planner.topology.far:
        # no DRAM cache (GPUDirect or unified memory): read the weights into a host buffer
        append, object_bytes = planner.ledger.append, planner.object_bytes
        return [append(obj, object_bytes[obj], ROUTE_STAGE, False, False, c, [], [], []) for obj in objs]
    return []


def miss_view(planner: Planner, c: int, missing: list[int], missing_req: list[int]) -> MissView:
    trace = planner.trace
    a_lo, a_hi = int(trace.cell_offsets[c]), int(trace.cell_offsets[c + 1])
    layer = planner.cell_layer[c]
    base = layer * trace.meta.n_experts
    access_obj = [base + int(e) for e in trace.expert[a_lo:a_hi]]
    weights = None if trace.weight is None else trace.weight[a_lo:a_hi].astype(np.float64).tolist()
    return MissView(
        pass_index=planner.cell_pass[c],
        cell=c,
        layer=layer,
        tokens=int(trace.cell_tokens[c]),
        missing=tuple(missing),
        missing_tokens=tuple(planner.req_tokens[r] for r in missing_req),
        access_obj=access_obj,
        access_weight=weights,
    )


def prefetch(planner: Planner, c: int, p: int, objs: list[int], admitted: list[int]) -> None:
    """Ask the prefetcher after the cell's demand decisions; admit and issue what it proposes."""
    policies, ledger = planner.policies, planner.ledger
    routed = planner.stream.obj[planner.req_offsets[c] : planner.req_offsets[c + 1]]
    layer = planner.cell_layer[c]
    prefetcher = policies.prefetcher
    prefetcher.observe(p, c, layer, routed)
    core = planner.tiers.vram
    view = PrefetchView(p, c, layer, routed, core.is_present, planner.link_bytes_per_s, planner.window(c))
    requests = prefetcher.propose(view)
    if not requests:
        return
    if len(requests) > 1:
        requests = sorted(requests, key=_PRIORITY, reverse=True)  # stable: equal priorities keep their order
    state, in_use = core.state, core.in_use
    protected = []
    absent = []
    placed = policies.placed
    for req in requests:
        obj = req.obj
        if placed is not None and placed[obj]:
            continue  # lives on the CPU: never copied to the device
        if state[obj] == ABSENT:
            absent.append(obj)
        elif in_use[obj] < 255:
            in_use[obj] += 1
            protected.append(obj)
    if not absent:
        core.end_cell(protected)
        return
    log = planner.tiers.vram_log
    batch: list[int] = []
    victim_lists: list[list[int]] = []
    admit_prefetch = core.prefetch
    for obj in absent:
        if state[obj] != ABSENT:
            continue  # proposed twice
        log.clear()
        if admit_prefetch(obj) is None:
            ledger.orphans.extend(log)
            continue
        batch.append(obj)
        if ledger.orphans:
            victim_lists.append(ledger.orphans + log)
            ledger.orphans = []
        else:
            victim_lists.append(log[:])
        admitted.append(obj)
    core.end_cell(protected)
    if batch:
        issue(planner, batch, victim_lists, prefetch=True, cell=c, scale=1.0, resident=[True] * len(batch))
        if policies.keeps_lowbit:
            for obj in batch:
                ledger.lowbit[obj] = 0


def issue(planner: Planner, objs: list[int], victim_lists: list[list[int]], prefetch: bool, cell: int,
          scale: float, resident: list[bool]) -> None:
    """Create the copies that bring `objs` into VRAM (and into DRAM first where DRAM caches SSD)."""
    chain: list[int] | None = None
    if planner.tiers.dram is not None:
        chain, _ = planner.tiers.dram_stage(objs, cell, prefetch, planner.ledger, planner.object_bytes)
        route = ROUTE_LAST
    else:
        route = ROUTE_DIRECT if planner.topology.far else ROUTE_LAST
    planner.ledger.issue_vram(objs, victim_lists, prefetch, cell, scale, resident, route, planner.object_bytes,
                              chain, planner.policies.keeps_lowbit)
