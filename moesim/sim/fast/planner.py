"""The compiled planner: Planner.plan_rest's decisions from plan.c, with the prefetch policy in Python.

Cells the prefetch policy declares quiet (PrefetchPolicy.quiet_cells: it would propose nothing
there) run in C without returning to Python; at every other cell the kernel stops after the
cell's demand decisions, Python observes the cells served since the last stop (observe_cells)
and asks propose() with the same PrefetchView the Python planner builds, and the kernel admits
the proposals and ends the cell. The Plan is the one Planner.plan_rest builds in Python, array for
array (tests/perf/test_fast_plan.py), and the core and its policies end in the same state.

Covered: eviction policies whose compiled form says `planner=True` (Belady only with prefetch off:
its next use of a prefetched object is not a per-request lookup), miss handling "stall" (StallAndFetch), no DRAM
cache tier, a planner that has not stepped any cell yet. `why_not_fast_plan` says why otherwise.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Callable

import numpy as np

from moesim.policies.base import PrefetchView, ServedCells
from moesim.sim.fast import build, kernel_policy, why_not_fast
from moesim.sim.fast.kernel import ReplayArgs, _check, _lib, _trace_args, core_arrays, finish_core, set_policy
from moesim.sim.fast.policy_state import restore

if TYPE_CHECKING:
    from moesim.sim.plan import Plan, Planner

_i64, _ptr = ctypes.c_int64, ctypes.c_void_p
_PLAN_ERRORS = {-8: "copy arrays full", -9: "planner called out of order"}


class PlanArgs(ctypes.Structure):
    """plan.c's plan_t, field for field."""

    _fields_ = [
        ("r", ReplayArgs), ("cell_pass", _ptr), ("prefetched_unused", _ptr), ("route", _i64),
        ("inbound", _ptr), ("unwaited", _ptr), ("orphans", _ptr), ("n_orphans", _i64),
        ("cap", _i64), ("n_copies", _i64),
        ("copy_obj", _ptr), ("copy_bytes", _ptr), ("copy_cell", _ptr), ("copy_prefetch", _ptr),
        ("copy_resident", _ptr),
        ("victim_offsets", _ptr), ("victims", _ptr), ("n_victims", _i64),
        ("cancel_offsets", _ptr), ("cancels", _ptr), ("n_cancels", _i64),
        ("waits", _ptr), ("n_waits", _i64),
        ("cell_copy_offsets", _ptr), ("wait_offsets", _ptr),
        ("next_cell", _i64), ("next_req", _i64), ("open_cell", _i64),
        ("prefetch_useful", _i64), ("prefetch_wasted", _i64), ("prefetch_issued", _i64), ("prefetch_bytes", _i64),
        ("kern", _ptr),
    ]


_COPY_ARRAYS = (("copy_obj", np.int64), ("copy_bytes", np.int64), ("copy_cell", np.int64),
                ("copy_prefetch", np.bool_), ("copy_resident", np.bool_), ("victims", np.int64),
                ("cancels", np.int64), ("waits", np.int64))
_OFFSET_ARRAYS = ("victim_offsets", "cancel_offsets")


def why_not_fast_plan(planner: Planner) -> str | None:
    """Why the compiled planner cannot decide this run (None if it can)."""
    from moesim.policies.miss_handling import StallAndFetch

    reason = why_not_fast(planner.eviction_spec, planner.trace.n_objects)
    if reason is not None:
        return reason
    policy = kernel_policy(planner.eviction_spec)
    if policy is None or not policy.form.planner:
        return f"eviction policy {planner.eviction_spec.name} has no compiled planner"
    if planner.prefetch_on and not policy.form.planner_prefetch:
        return f"eviction policy {planner.eviction_spec.name} has no compiled planner with prefetch"
    if type(planner.handler) is not StallAndFetch:
        return f"miss handling {planner.miss_spec.name} has no compiled planner"
    if planner.dram is not None:
        return "a DRAM cache tier has no compiled planner"
    if getattr(planner, "placed", None) is not None:
        return "an expert placement has no compiled planner"
    if planner.next_cell != 0:
        return "the planner has already stepped cells"
    return None


class _Outputs:
    """The per-copy arrays the kernel appends to, grown (copied) before a prefetch could overflow them."""

    def __init__(self, args: PlanArgs, cap: int, n_setup: int) -> None:
        self.args = args
        self.arrays: dict[str, np.ndarray] = {}
        for name, dtype in _COPY_ARRAYS:
            self.arrays[name] = np.empty(cap, dtype=dtype)
        for name in _OFFSET_ARRAYS:
            self.arrays[name] = np.empty(cap + 1, dtype=np.int64)
            self.arrays[name][: n_setup + 1] = 0  # setup copies have no victims and cancel nothing
        self._point(cap)

    def _point(self, cap: int) -> None:
        self.args.cap = cap
        for name, array in self.arrays.items():
            setattr(self.args, name, array.ctypes.data)

    def ensure(self, need: int) -> None:
        cap = int(self.args.cap)
        if need <= cap:
            return
        new_cap = max(need, cap + cap // 2)
        used = {"victims": self.args.n_victims, "cancels": self.args.n_cancels, "waits": self.args.n_waits}
        for name, old in list(self.arrays.items()):
            extra = 1 if name in _OFFSET_ARRAYS else 0
            grown = np.empty(new_cap + extra, dtype=old.dtype)
            n = used.get(name, self.args.n_copies + extra)
            grown[:n] = old[:n]
            self.arrays[name] = grown
        self._point(new_cap)


def plan_rest_fast(planner: Planner) -> Plan:
    """Planner.plan_rest on the compiled kernel (see the module docstring); the planner is then finished."""
    from moesim.sim.plan import Plan
    from moesim.sim.topology import ROUTE_DIRECT, ROUTE_LAST

    lib = _lib()
    if ctypes.sizeof(PlanArgs) != lib.moesim_plan_struct_size():
        raise RuntimeError("compiled planner: argument layout differs from plan.c")
    trace, core, stream = planner.trace, planner.core, planner.stream
    policy = kernel_policy(planner.eviction_spec)
    assert policy is not None
    n_cells, n_req, n_setup = trace.n_cells, stream.n_requests, planner.n_setup
    args = PlanArgs()
    replay_args, keep = _trace_args(trace, sequential=False)
    args.r = replay_args
    arrays = core_arrays(args.r, core, n_req)
    set_policy(args.r, core, policy.code, policy.params, policy.form.rng, arrays)
    cell_pass = np.asarray(planner.cell_pass, dtype=np.int64)  # the planner's own table
    per_object = {
        "prefetched_unused": np.frombuffer(core.prefetched_unused, dtype=np.uint8),
        "inbound": np.asarray(planner.inbound, dtype=np.int64),
        "unwaited": np.frombuffer(planner.unwaited, dtype=np.uint8),
        "orphans": np.empty(max(trace.n_objects, 1), dtype=np.int64),
    }
    cell_copy_off = np.empty(n_cells + 1, dtype=np.int64)
    cell_copy_off[0] = n_setup
    wait_off = np.empty(n_cells + 1, dtype=np.int64)
    wait_off[0] = 0
    args.cell_pass = cell_pass.ctypes.data
    for name, array in per_object.items():
        setattr(args, name, array.ctypes.data)
    args.cell_copy_offsets, args.wait_offsets = cell_copy_off.ctypes.data, wait_off.ctypes.data
    args.route = ROUTE_DIRECT if planner.topology.far else ROUTE_LAST
    out = _Outputs(args, n_setup + n_req, n_setup)
    for k, (obj, nbytes, _route, prefetch, resident, cell) in enumerate(planner.copies):  # the pinned loads
        for name, value in (("copy_obj", obj), ("copy_bytes", nbytes), ("copy_prefetch", prefetch),
                            ("copy_resident", resident), ("copy_cell", cell)):
            out.arrays[name][k] = value
    args.n_copies = n_setup

    def call(rc: int) -> None:
        if rc in _PLAN_ERRORS:
            raise RuntimeError(f"compiled planner failed: {_PLAN_ERRORS[rc]}")
        _check(rc, args.r, trace)

    call(lib.moesim_plan_open(ctypes.byref(args)))
    try:
        _drive(planner, lib, args, out, call, cell_pass)
    finally:
        close_rc = lib.moesim_plan_close(ctypes.byref(args))
    call(close_rc)
    del keep

    run = finish_core(core, args.r, arrays, planner.current_pass, None)
    restore(core.policies, policy.form, run, core.partition_of)
    counters = core.counters
    counters.prefetch_issued += args.prefetch_issued
    counters.prefetch_useful += args.prefetch_useful
    counters.prefetch_wasted += args.prefetch_wasted
    counters.prefetch_bytes += args.prefetch_bytes
    core.finish()
    planner.next_cell = n_cells
    planner.inbound[:] = per_object["inbound"].tolist()  # `unwaited` is shared; the lists are copies
    planner.orphans = per_object["orphans"][: args.n_orphans].tolist()
    n = int(args.n_copies)
    a = out.arrays
    return Plan(
        trace=trace, config=planner.config, topology=planner.topology, stream=stream,
        eviction=planner.eviction_spec, prefetch=planner.prefetch_spec, miss=planner.miss_spec, lossy=planner.lossy,
        outcomes=run.outcomes, bypassed=run.bypassed, gpu_tokens=planner.req_tokens_arr.copy(),
        cpu_tokens=np.zeros(n_req, dtype=np.int32), req_tokens=planner.req_tokens_arr,
        altered=np.zeros(n_cells, dtype=np.int64),
        copy_obj=a["copy_obj"][:n].copy(), copy_bytes=a["copy_bytes"][:n].copy(),
        copy_route=np.full(n, args.route, dtype=np.int8), copy_prefetch=a["copy_prefetch"][:n].copy(),
        copy_resident=a["copy_resident"][:n].copy(), copy_cell=a["copy_cell"][:n].copy(),
        dep_offsets=np.zeros(n + 1, dtype=np.int64), deps=np.zeros(0, dtype=np.int64),
        cancel_offsets=a["cancel_offsets"][: n + 1].copy(), cancels=a["cancels"][: args.n_cancels].copy(),
        victim_offsets=a["victim_offsets"][: n + 1].copy(), victims=a["victims"][: args.n_victims].copy(),
        cell_copy_offsets=cell_copy_off, n_setup_copies=n_setup, wait_offsets=wait_off,
        waits=a["waits"][: args.n_waits].copy(), counters=counters, dram_counters={}, engine="fast",
    )


def _drive(planner: Planner, lib: ctypes.CDLL, args: PlanArgs, out: _Outputs, call: Callable[[int], None],
           cell_pass: np.ndarray) -> None:
    """Run every cell: quiet stretches in C, each other cell's proposals asked in Python."""
    trace, stream, prefetcher = planner.trace, planner.stream, planner.prefetcher
    n_cells, n_req = trace.n_cells, stream.n_requests
    window = planner.compute_window
    windows = np.zeros(n_cells) if window is None else window
    if not planner.prefetch_on:
        active = np.zeros(0, dtype=np.int64)
    else:
        quiet = prefetcher.quiet_cells(planner.link_bytes_per_s, windows)
        active = np.arange(n_cells) if quiet is None else np.flatnonzero(~np.asarray(quiet, dtype=bool))
    req_offsets = stream.cell_offsets
    layers = trace.cell_layer
    window_list = windows.tolist() if window is not None else None
    observed = 0
    byref = ctypes.byref(args)
    is_present = planner.core.is_present
    for c in active.tolist():
        call(lib.moesim_plan_run(byref, c, 1))
        planner.current_pass = int(cell_pass[c])
        prefetcher.observe_cells(ServedCells(observed, cell_pass[observed:c + 1], layers[observed:c + 1],
                                             req_offsets[observed:c + 2], stream.obj))
        observed = c + 1
        routed = stream.obj[req_offsets[c]:req_offsets[c + 1]]
        view = PrefetchView(int(cell_pass[c]), c, int(layers[c]), routed, is_present, planner.link_bytes_per_s,
                            window_list[c] if window_list is not None else 0.0)
        requests = prefetcher.propose(view)
        if len(requests) > 1:
            requests = sorted(requests, key=lambda r: r.priority, reverse=True)  # stable, as Planner._prefetch
        objs = np.fromiter((r.obj for r in requests), dtype=np.int64, count=len(requests))
        out.ensure(int(args.n_copies) + objs.size + (n_req - int(args.next_req)))
        call(lib.moesim_plan_prefetch(byref, ctypes.c_void_p(objs.ctypes.data), objs.size))
    call(lib.moesim_plan_run(byref, n_cells, 0))
    if planner.prefetch_on and observed < n_cells:
        prefetcher.observe_cells(ServedCells(observed, cell_pass[observed:], layers[observed:],
                                             req_offsets[observed:], stream.obj))
    if n_cells:
        planner.current_pass = int(cell_pass[n_cells - 1])
