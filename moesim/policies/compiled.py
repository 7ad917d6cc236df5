"""How a policy declares its compiled form: which kernel runs it, which parameters it takes, how
the kernel's final state comes back into the Python object.

An eviction policy with a compiled form says so in its own module:

    @register("lru")
    class LRU(EvictionPolicy):
        compiled = CompiledForm("lru", restore=restore_order)

The dispatcher (moesim/sim/fast/__init__.py) asks `compiled_form(cls)`; it never compares classes.
The form is read from the class's own namespace, so a subclass that changes behaviour runs on the
reference path until it declares a form of its own. Every field of the policy's Params must be
named in `params` (the kernel takes it, or the Python set-up before the kernel consumes it): a
parameter added later without a compiled counterpart sends the policy to the reference path, and
the result says why. This module knows nothing of the kernel's code numbers: replay.c maps the
kernel names to them.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class KernelState:
    """One partition's final policy state as the kernel exports it (moesim/sim/fast/policy_hooks.c).

    `objs` are the tracked objects (and ARC's ghosts) in the kernel's order: list order for the
    list policies (`queue` names the list), heap order for the heap ones (with `key` and `stamp`).
    """

    objs: list[int]
    queue: list[int]
    key: list[float]
    stamp: list[int]
    clock: int  # the policy's stamp clock (Random: uniforms drawn)
    unit: float  # the decaying increment after the last pass
    values: tuple[float, float, float]  # ARC: p, adapted, pending; lru-ds, moe-infinity: the current layer
    counts: dict[int, float] = field(default_factory=dict)  # moe-infinity: activation counts


@dataclass(frozen=True)
class CompiledForm:
    """A policy's compiled form.

    kernel: the policy's name in the kernel (replay.c's POLICY_NAMES).
    params: the Params fields this form honours; any other field keeps the policy on the
        reference path.
    kernel_params: the numbers the kernel takes, from the parsed Params (at most four).
    restore: puts a partition's KernelState into a fresh policy object of this class.
    planner: the compiled planner (plan.c) covers it too (False: count replay only).
    planner_prefetch: the compiled planner covers it with prefetch on (False: only without).
    rng: the generator state the kernel starts from, as four 64-bit words (Random).
    derived: attributes `restore` rebuilds from the others (caches); state comparisons skip them.
    """

    kernel: str
    params: tuple[str, ...] = ()
    kernel_params: Callable[[Any], tuple[float, ...]] = lambda params: ()
    restore: Callable[[Any, KernelState], None] | None = None
    planner: bool = True
    planner_prefetch: bool = True
    rng: Callable[[Any], tuple[int, int, int, int]] | None = None
    derived: tuple[str, ...] = ()


def compiled_form(cls: type) -> CompiledForm | None:
    """The form `cls` itself declares (not one inherited from a base class), or None."""
    form = vars(cls).get("compiled")
    return form if isinstance(form, CompiledForm) else None


def params_not_taken(form: CompiledForm, params: object) -> list[str]:
    """Fields of `params` the compiled form does not honour (in declaration order)."""
    if params is None or not dataclasses.is_dataclass(params):
        return []
    return [f.name for f in dataclasses.fields(params) if f.name not in form.params]


# ---- restore helpers shared by several policies ------------------------------------------------
def restore_order(policy: Any, state: KernelState) -> None:
    """LRU, FIFO, static-hot: one OrderedDict `_order` in eviction order."""
    policy._order = OrderedDict.fromkeys(state.objs)


def queues(state: KernelState, n: int) -> list[list[int]]:
    """The objects of each of the kernel's `n` lists, in order."""
    lists: list[list[int]] = [[] for _ in range(n)]
    for obj, q in zip(state.objs, state.queue):
        lists[q].append(obj)
    return lists


def heap_entries(state: KernelState, integer_keys: bool) -> tuple[dict[int, float], dict[int, int]]:
    """(key, stamp) per tracked object; keys as ints when the reference keeps integer counts."""
    keys = [int(k) for k in state.key] if integer_keys else list(state.key)
    return dict(zip(state.objs, keys)), dict(zip(state.objs, state.stamp))
