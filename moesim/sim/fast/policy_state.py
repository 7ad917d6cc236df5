"""Put the compiled replay's final eviction order into the core's reference policy objects.

After a fast replay the core's policies hold what the reference replay would have left in them
(LRU/FIFO/static-hot order, Least-Stale's two queues, LFU and Belady heaps with their keys,
stamps and clocks), so `core.check()` holds and the core can keep serving requests. This reads
the policies' private fields, so tests/perf/test_fast_path.py compares every restored policy with
the one a reference replay leaves: a change of those fields fails there, not silently.
"""

from __future__ import annotations

from collections import OrderedDict

from moesim.policies.base import NEVER, EvictionPolicy
from moesim.sim.fast.kernel import POL_BELADY, POL_FIFO, POL_LEAST_STALE, POL_LFU, POL_LRU, KernelRun


def restore(policies: list[EvictionPolicy], code: int, run: KernelRun, integer_keys: bool) -> None:
    """Load each partition's final state from `run` into `policies[partition]`.

    `integer_keys`: the reference keeps LFU counts as Python ints at decay 1; keep that type.
    """
    start = 0
    for part, policy in enumerate(policies):
        n = int(run.order_count[part])
        objs = run.order_obj[start:start + n].tolist()
        if code in (POL_LRU, POL_FIFO):
            policy._order = OrderedDict.fromkeys(objs)  # type: ignore[attr-defined]
        elif code == POL_LEAST_STALE:
            queues = run.order_queue[start:start + n].tolist()
            stale = [o for o, q in zip(objs, queues) if q == 0]
            current = [o for o, q in zip(objs, queues) if q == 1]
            policy._stale = OrderedDict.fromkeys(stale)  # type: ignore[attr-defined]
            policy._current = OrderedDict.fromkeys(current)  # type: ignore[attr-defined]
        elif code in (POL_LFU, POL_BELADY):
            heap = policy._heap  # type: ignore[attr-defined]
            keys = run.order_key[start:start + n].tolist()
            if code == POL_BELADY:
                # keys are -next_use; the kernel holds them as doubles, exact below 2**53, and
                # "never used again" (NEVER, 2**61 - 1) rounds to 2**61: map it back
                keys = [-NEVER if k == -float(NEVER) else int(k) for k in keys]
            elif integer_keys:
                keys = [int(k) for k in keys]
            stamps = run.order_stamp[start:start + n].tolist()
            heap.stamp = dict(zip(objs, stamps))
            heap.key = dict(zip(objs, keys))
            heap.rebuild()
            policy._clock = int(run.clock[part])  # type: ignore[attr-defined]
            if code == POL_LFU:
                policy._unit.unit = 1 if integer_keys else float(run.unit)  # type: ignore[attr-defined]
        start += n
