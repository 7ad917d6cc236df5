"""Calling the compiled replay: the ctypes mirror of replay.c's `replay_t` and the array plumbing.

The kernel reads the trace's own arrays (no object-id or request arrays are built) and writes
straight into the CacheCore's state (its bytearrays are shared, its lists are copied in and out),
so after a run the core is the core the reference replay leaves behind; policy_state.py then puts
the final eviction order into the core's policy objects.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from moesim.errors import UserError
from moesim.sim.cache_core import ABSENT, RESIDENT, CacheCore
from moesim.sim.fast import build
from moesim.traces.format.trace import Trace

# replay.c's error codes
_ERRORS = {-1: "out of memory", -2: "object id outside the trace's objects", -3: "unknown policy code",
           -4: "victim log overflow", -5: "request count mismatch", -6: "frequency bucket pool exhausted",
           -7: "trace offsets out of order"}

_i64, _f64, _ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_void_p


class ReplayArgs(ctypes.Structure):
    """replay.c's replay_t, field for field (all 8 bytes wide)."""

    _fields_ = [
        ("n_passes", _i64), ("n_cells", _i64), ("n_accesses", _i64), ("n_experts", _i64),
        ("pass_cell_offsets", _ptr), ("cell_offsets", _ptr), ("cell_layer", _ptr), ("layer_is_int32", _i64),
        ("expert", _ptr), ("expert_is_int32", _i64), ("sequential", _i64),
        ("n_objects", _i64), ("n_partitions", _i64),
        ("object_bytes", _ptr), ("partition_of", _ptr), ("capacity", _ptr),
        ("policy", _i64), ("param", _f64 * 4), ("rng", _ptr),
        ("state", _ptr), ("pinned", _ptr), ("seen", _ptr), ("evicted_in_pass", _ptr), ("used", _ptr),
        ("n_requests", _i64), ("outcomes", _ptr), ("bypassed", _ptr),
        ("victims_cap", _i64), ("victim_request", _ptr), ("victim_obj", _ptr), ("n_victims", _i64),
        ("evictions", _i64), ("bypasses", _i64),
        ("order_obj", _ptr), ("order_count", _ptr), ("order_queue", _ptr), ("order_key", _ptr),
        ("order_stamp", _ptr), ("clock", _ptr), ("unit", _f64),
        ("part_value", _ptr), ("obj_value", _ptr), ("obj_flag", _ptr),
        ("error_index", _i64),
    ]


@dataclass
class KernelRun:
    """What one replay produced besides the core's own (updated) state."""

    outcomes: np.ndarray  # int8 per request
    bypassed: np.ndarray  # bool per request
    victims: list[tuple[int, int]] | None
    evictions: int
    bypasses: int
    order_obj: np.ndarray  # per partition, concatenated: tracked objects in eviction (or heap) order
    order_count: np.ndarray
    order_queue: np.ndarray
    order_key: np.ndarray
    order_stamp: np.ndarray
    clock: np.ndarray  # per partition
    unit: float
    part_value: np.ndarray  # per partition, three each (policy_hooks.c's export_policy_state)
    obj_value: np.ndarray  # per object
    obj_flag: np.ndarray  # per object


def _index_array(values: np.ndarray) -> tuple[np.ndarray, int]:
    """int16 arrays go as they are, anything else as int32 (flag 1)."""
    if values.dtype == np.int16:
        return np.ascontiguousarray(values), 0
    return np.ascontiguousarray(values, dtype=np.int32), 1


def _lib() -> ctypes.CDLL:
    lib = build.library()
    if lib is None:
        raise RuntimeError(f"compiled replay unavailable: {build.unavailable_reason()}")
    return lib


def _trace_args(trace: Trace, sequential: bool) -> tuple[ReplayArgs, list[np.ndarray]]:
    """The trace half of the arguments; the arrays are returned so they outlive the call."""
    if (trace.pass_cell_offsets.shape[0] != trace.n_passes + 1 or trace.cell_offsets.shape[0] != trace.n_cells + 1
            or trace.cell_tokens.shape[0] != trace.n_cells):
        raise UserError("pass_cell_offsets, cell_offsets and cell_layer disagree on the number of passes or cells",
                        "trace")
    pass_cells = np.ascontiguousarray(trace.pass_cell_offsets, dtype=np.int64)
    cell_offsets = np.ascontiguousarray(trace.cell_offsets, dtype=np.int64)
    layer, layer32 = _index_array(trace.cell_layer)
    expert, expert32 = _index_array(trace.expert)
    args = ReplayArgs(
        n_passes=trace.n_passes, n_cells=trace.n_cells, n_accesses=trace.n_accesses,
        n_experts=trace.meta.n_experts, pass_cell_offsets=pass_cells.ctypes.data,
        cell_offsets=cell_offsets.ctypes.data, cell_layer=layer.ctypes.data, layer_is_int32=layer32,
        expert=expert.ctypes.data, expert_is_int32=expert32, sequential=int(sequential),
        n_objects=trace.n_objects,
    )
    return args, [pass_cells, cell_offsets, layer, expert]


def _check(rc: int, args: ReplayArgs, trace: Trace) -> None:
    if rc == 0:
        return
    if rc == -7:
        what = ("pass_cell_offsets and cell_offsets must run from 0 to the cell and access counts"
                if args.error_index < 0 else f"offsets decrease at index {args.error_index}")
        raise UserError(what, "trace")
    if rc == -2:
        raise UserError(f"access {args.error_index}: object id outside 0..{trace.n_objects - 1} "
                        f"(layer or expert id out of range)", "trace")
    if rc == -1:
        raise MemoryError("compiled replay: out of memory")
    raise RuntimeError(f"compiled replay failed: {_ERRORS.get(rc, rc)}")


def event_requests(trace: Trace) -> tuple[int, np.ndarray]:
    """Requests of an event-mode replay and their cell offsets, without building the stream.

    When no cell repeats an object (one token per cell, or distinct experts across tokens) the
    offsets are the trace's own `cell_offsets`, shared rather than copied. O(accesses).
    """
    lib = _lib()
    args, keep = _trace_args(trace, sequential=False)
    n = lib.moesim_event_requests(ctypes.byref(args), None)
    _check(n if n < 0 else 0, args, trace)
    if n == trace.n_accesses:
        return n, keep[1]
    offsets = np.empty(trace.n_cells + 1, dtype=np.int64)
    filled = lib.moesim_event_requests(ctypes.byref(args), ctypes.c_void_p(offsets.ctypes.data))
    _check(filled if filled < 0 else 0, args, trace)
    return n, offsets


def event_stream(trace: Trace, c_lo: int = 0, c_hi: int | None = None, access_request: bool = False,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The event-mode requests of cells [c_lo, c_hi) (all by default), numbered from 0 at c_lo: per
    request its object (int32), cell (int32) and routed accesses (int32), the requests' cell offsets
    (c_hi - c_lo + 1, from 0), and with `access_request` every access's request (int64, 8 bytes per
    access: only for callers that need the per-access map). Two O(accesses) scans, one to count
    and one to fill; memory: the outputs plus O(objects)."""
    lib = _lib()
    c_hi = trace.n_cells if c_hi is None else c_hi
    args, keep = _trace_args(trace, sequential=False)
    offsets = np.empty(c_hi - c_lo + 1, dtype=np.int64)
    null = ctypes.c_void_p(None)

    def ptr(array: np.ndarray | None) -> ctypes.c_void_p:
        return null if array is None else ctypes.c_void_p(array.ctypes.data)

    n = lib.moesim_event_stream(ctypes.byref(args), ctypes.c_int64(c_lo), ctypes.c_int64(c_hi), null, null, null,
                                null, ptr(offsets))
    _check(n if n < 0 else 0, args, trace)
    obj, cell, accesses = (np.empty(n, dtype=np.int32) for _ in range(3))
    per_access = None
    if access_request:
        per_access = np.empty(int(trace.cell_offsets[c_hi] - trace.cell_offsets[c_lo]), dtype=np.int64)
    filled = lib.moesim_event_stream(ctypes.byref(args), ctypes.c_int64(c_lo), ctypes.c_int64(c_hi), ptr(obj),
                                     ptr(cell), ptr(accesses), ptr(per_access), null)
    _check(filled if filled < 0 else 0, args, trace)
    del keep
    return obj, cell, accesses, offsets, per_access


def policy_code(name: str) -> int:
    """The kernel's code for the policy it calls `name` (replay.c's POLICY_NAMES), -1 if none."""
    return int(_lib().moesim_policy_code(name.encode()))


def set_policy(args: ReplayArgs, core: CacheCore, code: int, params: tuple[float, ...],
               rng: Callable[[Any], tuple[int, int, int, int]] | None, arrays: dict[str, np.ndarray]) -> None:
    """The policy half of the arguments: its code, its numbers, and (Random) every partition's
    generator state, read from the core's fresh policy objects."""
    if len(params) > 4:
        raise RuntimeError("a compiled form takes at most four kernel parameters")
    args.policy = code
    for i in range(4):
        args.param[i] = float(params[i]) if i < len(params) else 0.0
    if rng is not None:
        words = np.array([w for policy in core.policies for w in rng(policy)], dtype=np.uint64)
        arrays["rng"] = words
        args.rng = words.ctypes.data


def replay(trace: Trace, core: CacheCore, code: int, *, sequential: bool, n_requests: int,
           record_victims: bool = False, params: tuple[float, ...] = (),
           rng: Callable[[Any], tuple[int, int, int, int]] | None = None) -> KernelRun:
    """Replay every pass of `trace` through `core` with the compiled policy `code`.

    The core must be fresh (pins installed, nothing served); afterwards its state, used bytes,
    eviction and bypass counters and pass index are those the reference replay leaves.
    O(requests + objects) time; memory: the outcome arrays plus O(objects).
    """
    lib = _lib()
    if ctypes.sizeof(ReplayArgs) != lib.moesim_replay_struct_size():
        raise RuntimeError("compiled replay: argument layout differs from replay.c")
    if any(s not in (ABSENT, RESIDENT) for s in set(core.state)):
        raise RuntimeError("compiled replay needs a core with no object in flight")
    args, keep = _trace_args(trace, sequential)
    victims_cap = max(n_requests, 1) if record_victims else 0
    arrays = core_arrays(args, core, n_requests, victims_cap)
    set_policy(args, core, code, params, rng, arrays)
    rc = lib.moesim_count_replay(ctypes.byref(args))  # `keep` holds the trace arrays until here
    _check(rc, args, trace)
    victims = None
    if record_victims:
        n = args.n_victims
        victims = list(zip(arrays["victim_request"][:n].tolist(), arrays["victim_obj"][:n].tolist()))
    return finish_core(core, args, arrays, trace.n_passes - 1, victims)


def core_arrays(args: ReplayArgs, core: CacheCore, n_requests: int, victims_cap: int = 0) -> dict[str, np.ndarray]:
    """Point `args` at the core's state (shared bytearrays, copied lists) and fresh output arrays.

    The returned arrays must outlive the kernel's use of `args`.
    """
    n_obj, n_part = len(core.state), len(core.capacity)
    arrays = {
        # views: the kernel writes the core's own bytes
        "state": np.frombuffer(core.state, dtype=np.uint8),
        "pinned": np.frombuffer(core.pinned, dtype=np.uint8),
        "seen": np.frombuffer(core.seen, dtype=np.uint8),
        "evicted_in_pass": np.asarray(core.evicted_in_pass, dtype=np.int64),
        "used": np.asarray(core.used, dtype=np.int64),
        "object_bytes": np.asarray(core.object_bytes, dtype=np.int64),
        "partition_of": np.asarray(core.partition_of, dtype=np.int64),
        "capacity": np.asarray(core.capacity, dtype=np.int64),
        "outcomes": np.empty(n_requests, dtype=np.int8),
        "bypassed": np.zeros(n_requests, dtype=np.bool_),  # calloc'd: untouched pages cost no memory
        "victim_request": np.empty(victims_cap, dtype=np.int64),
        "victim_obj": np.empty(victims_cap, dtype=np.int64),
        "order_obj": np.empty(max(n_obj, 1), dtype=np.int64),
        "order_count": np.zeros(n_part, dtype=np.int64),
        "order_queue": np.empty(max(n_obj, 1), dtype=np.uint8),
        "order_key": np.empty(max(n_obj, 1), dtype=np.float64),
        "order_stamp": np.empty(max(n_obj, 1), dtype=np.int64),
        "clock": np.zeros(n_part, dtype=np.int64),
        "part_value": np.zeros(3 * max(n_part, 1), dtype=np.float64),
        "obj_value": np.zeros(max(n_obj, 1), dtype=np.float64),
        "obj_flag": np.zeros(max(n_obj, 1), dtype=np.uint8),
    }
    args.n_partitions, args.n_requests, args.victims_cap = n_part, n_requests, victims_cap
    for name, array in arrays.items():
        setattr(args, name, array.ctypes.data)
    return arrays


def finish_core(core: CacheCore, args: ReplayArgs, arrays: dict[str, np.ndarray], pass_index: int,
                victims: list[tuple[int, int]] | None) -> KernelRun:
    """Copy the kernel's list-held state back into the core; the run's outputs and final policy state."""
    core.evicted_in_pass[:] = arrays["evicted_in_pass"].tolist()
    core.used[:] = arrays["used"].tolist()
    core.pass_index = pass_index
    core.counters.evictions += args.evictions
    core.counters.bypasses += args.bypasses
    return KernelRun(outcomes=arrays["outcomes"], bypassed=arrays["bypassed"], victims=victims,
                     evictions=args.evictions, bypasses=args.bypasses, order_obj=arrays["order_obj"],
                     order_count=arrays["order_count"], order_queue=arrays["order_queue"],
                     order_key=arrays["order_key"], order_stamp=arrays["order_stamp"], clock=arrays["clock"],
                     unit=args.unit, part_value=arrays["part_value"], obj_value=arrays["obj_value"],
                     obj_flag=arrays["obj_flag"])
