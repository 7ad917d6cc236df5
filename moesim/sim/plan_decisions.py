"""One protection unit's decisions, and the copies they issue (moesim/sim/plan.py's Planner).

Functions over the planner's parts: its policies (moesim/sim/plan_policies.py), its tier caches
(moesim/sim/tier_caches.py) and its copy ledger (moesim/sim/copy_ledger.py).

- `serve_cell`: the one Python loop that decides outcomes, for the timing engine's plans, the
  real-GPU executor and the count replay alike; per protection unit: classify and protect its
  objects, decide its misses, ask the prefetcher, fill, release. A unit is the cell (event mode)
  or one request (sequential mode, count replay only). A planner with no topology (the count
  replay) has no copy ledger: the same decisions are made and no copies are written.
- `decide_misses`: the miss handler decides each miss (fetch, run on the CPU, skip); `serve_cell`
  admits the fetched ones into VRAM (evicting), or streams them when the core refuses them;
  `demand_copies` issues their copies and the cell waits for them.
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
from moesim.sim.cache_core import ABSENT, HIT
from moesim.sim.plan_types import PLACED
from moesim.sim.topology import ROUTE_DIRECT, ROUTE_LAST, ROUTE_STAGE

if TYPE_CHECKING:
    from moesim.sim.plan import Planner

_PRIORITY = operator.attrgetter("priority")


def serve_cell(planner: Planner, c: int, p: int) -> int:
    """Decide cell c (pass p), one protection unit at a time (the event-atomic protocol,
    moesim/sim/cache_core.py): the whole cell in event mode, each request in sequential mode.
    Returns the expert applications lossy miss handling altered."""
    core = planner.tiers.vram
    begin_cell, end_cell, fill = core.begin_cell, core.end_cell, core.fill
    policies = planner.policies
    future, placed = policies.future, policies.placed
    prefetch_on, keeps_lowbit = policies.prefetch_on, policies.keeps_lowbit
    fetch_all = policies.handler_fetch_all
    admit, log, record, bypassed = core.admit, planner.tiers.vram_log, planner.victims, planner.bypassed
    ledger = planner.ledger
    req_obj = planner.req_obj
    record_outcomes = planner.outs.extend
    first, end = planner.req_offsets[c], planner.req_offsets[c + 1]
    units = ((r, r + 1) for r in range(first, end)) if planner.per_request else ((first, end),)
    altered = 0
    for lo, hi in units:
        objs = req_obj[lo:hi]
        if future is not None:
            future.position = hi - 1
        req_ids: range | list[int] = range(lo, hi)
        if placed is not None:
            objs, req_ids = place(planner, c, lo, hi)
        outs = begin_cell(objs)
        if placed is None:
            record_outcomes(outs)
        else:
            cell_outs = [PLACED] * (hi - lo)
            for r, out in zip(req_ids, outs):
                cell_outs[r - lo] = out
            record_outcomes(cell_outs)
        missing: list[int] = []
        missing_req: list[int] = []
        for i, obj, out in zip(req_ids, objs, outs):
            if out != HIT:  # a miss (no object is in flight when a unit begins: LATE cannot occur)
                missing.append(obj)
                missing_req.append(i)
        if ledger is not None and len(missing) < len(objs):
            waits, unwaited, inbound = ledger.waits, ledger.unwaited, ledger.inbound
            for obj, out in zip(objs, outs):  # a hit waits for the copy that brought it, the first time
                if out == HIT and unwaited[obj]:
                    waits.append(inbound[obj])
                    unwaited[obj] = 0
        if keeps_lowbit:
            lowbit, tokens = ledger.lowbit, planner.req_tokens  # type: ignore[union-attr]
            for i, obj, out in zip(req_ids, objs, outs):
                if out == HIT and lowbit[obj]:
                    altered += tokens[i]
        admitted: list[int] = []
        if missing:
            scale = 1.0
            if not fetch_all:  # the miss handler keeps some off the device: what is left to fetch
                missing, missing_req, scale, lossy = decide_misses(planner, c, missing, missing_req)
                altered += lossy
            victim_lists: list[list[int]] = []
            resident: list[bool] = []
            for obj, r in zip(missing, missing_req):  # admit the fetched misses in order, evicting
                log.clear()
                got = admit(obj)
                if record is not None:  # every eviction, those of an admission that then failed included
                    record.extend((r, v) for v in log)
                if got is None:
                    bypassed.append(r)
                else:
                    admitted.append(obj)
                if ledger is None:
                    continue  # no copies to write
                victims = ledger.take_orphans(log) if ledger.orphans else log[:]
                if got is None:  # streamed through a buffer: the room its victims left waits for the next copy
                    ledger.orphans.extend(victims)
                    victims = []
                victim_lists.append(victims)
                resident.append(got is not None)
            if ledger is not None and missing:
                demand_copies(planner, c, missing, victim_lists, resident, scale)
        if prefetch_on:
            prefetch(planner, c, p, objs, admitted)
        for obj in admitted:  # the copies are logically complete when the unit's decisions end
            fill(obj)
        end_cell(objs)
    return altered


def place(planner: Planner, c: int, lo: int, hi: int) -> tuple[list[int], list[int]]:
    """Send the cell's CPU-placed objects to the CPU; return the others and their request ids."""
    placed = planner.policies.placed
    assert placed is not None
    kept, kept_req, cpu_objs = [], [], []
    for r in range(lo, hi):
        obj = planner.req_obj[r]
        if placed[obj]:
            planner.cpu_rows.append((r, planner.req_tokens[r]))
            planner.gpu_token_changes.append((r, 0))
            cpu_objs.append(obj)
        else:
            kept.append(obj)
            kept_req.append(r)
    if cpu_objs:  # the CPU reads them from host memory (from SSD first where that is their home)
        planner.ledger.waits.extend(host_stage(planner, cpu_objs, c))  # type: ignore[union-attr]
    return kept, kept_req


def decide_misses(planner: Planner, c: int, missing: list[int],
                  missing_req: list[int]) -> tuple[list[int], list[int], float, int]:
    """The miss handler's decision over a unit's misses: the objects to fetch and their requests,
    the fetch's byte scale and the altered applications; the others run on the CPU or are dropped."""
    policies, ledger = planner.policies, planner.ledger
    decision = policies.handler.decide(miss_view(planner, c, missing, missing_req))
    fetch, fetch_req, cpu_objs = [], [], []
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
    if cpu_objs:
        ledger.waits.extend(host_stage(planner, cpu_objs, c))  # type: ignore[union-attr]
    return fetch, fetch_req, decision.fetch_scale, decision.altered


def demand_copies(planner: Planner, c: int, fetch: list[int], victim_lists: list[list[int]], resident: list[bool],
                  scale: float) -> None:
    """Issue the demand copies of the fetched misses; the cell waits for them."""
    ledger = planner.ledger
    assert ledger is not None
    issue(planner, fetch, victim_lists, prefetch=False, cell=c, scale=scale, resident=resident)
    n = len(ledger.copies)  # the last len(fetch) copies issued
    ledger.waits.extend(range(n - len(fetch), n))
    if planner.policies.keeps_lowbit:
        for obj, res in zip(fetch, resident):
            if res:
                ledger.lowbit[obj] = 1 if scale < 1.0 else 0


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
