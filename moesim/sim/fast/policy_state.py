"""Put the compiled replay's final policy state into the core's reference policy objects.

After a fast replay the core's policies hold what the reference replay would have left in them,
so `core.check()` holds and the core can keep serving requests. How a partition's exported state
(a KernelState) becomes the policy's own fields is the policy's business: its CompiledForm's
`restore`, in the policy's module. tests/perf/test_fast_path.py compares every restored policy
with the one a reference replay leaves, field by field: a change of those fields fails there.
"""

from __future__ import annotations

from moesim.policies.base import EvictionPolicy
from moesim.policies.compiled import CompiledForm, KernelState
from moesim.sim.fast.kernel import KernelRun


def restore(policies: list[EvictionPolicy], form: CompiledForm, run: KernelRun,
            partition_of: list[int]) -> None:
    """Load each partition's final state from `run` into `policies[partition]`."""
    if form.restore is None:
        raise RuntimeError(f"compiled form {form.kernel!r} cannot restore its state")
    counted = run.obj_flag.nonzero()[0].tolist()
    values = run.obj_value
    start = 0
    for part, policy in enumerate(policies):
        n = int(run.order_count[part])
        end = start + n
        counts = {o: float(values[o]) for o in counted if partition_of[o] == part}
        state = KernelState(objs=run.order_obj[start:end].tolist(), queue=run.order_queue[start:end].tolist(),
                            key=run.order_key[start:end].tolist(), stamp=run.order_stamp[start:end].tolist(),
                            clock=int(run.clock[part]), unit=float(run.unit),
                            values=tuple(run.part_value[3 * part:3 * part + 3].tolist()),  # type: ignore[arg-type]
                            counts=counts)
        form.restore(policy, state)
        start = end
