"""The compiled count replay: which engine runs, and which policies it covers.

count_replay picks an engine per run:
- "fast": replay.c, compiled on first use (build.py), for every eviction policy whose module
  declares a compiled form (moesim.policies.compiled.CompiledForm) that takes all its parameters;
  it makes the same decisions as the reference path, request for request (tests/perf/test_fast_path.py).
- "reference": the Python planner with no topology (moesim/sim/plan.py, the one Python driver of
  the cache core) and the policy objects; every policy.
- "auto" (default): fast where the policy is covered and a C compiler is available, else reference.
The choice comes from the `engine` argument (the CLI's `--engine`), else `$MOESIM_ENGINE`.
Asking for "fast" where it cannot run is a UserError naming the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from moesim.errors import UserError
from moesim.policies.compiled import CompiledForm, compiled_form, params_not_taken
from moesim.policies.registry import PolicySpec, available

ENGINES = ("auto", "fast", "reference")
ENV_VAR = "MOESIM_ENGINE"

_MAX_OBJECTS = 2**31 - 1  # the kernel's lists and heaps hold object ids as int32


@dataclass(frozen=True)
class KernelPolicy:
    """A policy spec as the kernel takes it: its compiled form, the kernel's code and numbers."""

    form: CompiledForm
    code: int
    params: tuple[float, ...] = ()


def compiled_policies() -> list[str]:
    """Registered eviction policies (aliases included) that declare a compiled form."""
    return [r.name for r in available("eviction") if compiled_form(r.cls) is not None]


def why_not_compiled(spec: PolicySpec) -> str | None:
    """Why `spec` has no compiled form this kernel can run (None if it has one)."""
    if spec.kind != "eviction":
        return f"{spec.kind} policy {spec.name} has no compiled form"
    form = compiled_form(spec.entry.cls)
    if form is None:
        return f"policy {spec.name} has no compiled form (compiled: {', '.join(compiled_policies())})"
    missing = params_not_taken(form, spec.params)
    if missing:
        return f"policy {spec.name}: parameter {', '.join(missing)} has no compiled form"
    return None


def kernel_policy(spec: PolicySpec) -> KernelPolicy | None:
    """The kernel's form of `spec`, or None if the policy (or one of its parameters) has none.

    The policy's own module declares its form (moesim.policies.compiled): nothing here names a
    policy. Needs the compiled library (build.library()) to look up the kernel's code.
    """
    if why_not_compiled(spec) is not None:
        return None
    form = compiled_form(spec.entry.cls)
    assert form is not None
    from moesim.sim.fast import kernel

    code = kernel.policy_code(form.kernel)
    if code < 0:
        return None
    return KernelPolicy(form, code, tuple(float(x) for x in form.kernel_params(spec.params)))


def requested_engine(engine: str | None = None) -> str:
    """The engine asked for: `engine` if given, else $MOESIM_ENGINE, else "auto"."""
    where = "--engine" if engine is not None else ENV_VAR
    value = (engine if engine is not None else os.environ.get(ENV_VAR, "")).strip().lower() or "auto"
    if value not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {value!r}", where)
    return value


def why_not_fast(spec: PolicySpec, n_objects: int) -> str | None:
    """Why this run cannot use the compiled replay (None if it can)."""
    reason = why_not_compiled(spec)
    if reason is not None:
        return reason
    if n_objects > _MAX_OBJECTS:
        return f"{n_objects} objects exceed the compiled replay's {_MAX_OBJECTS}"
    from moesim.sim.fast import build

    reason = build.unavailable_reason()
    if reason is not None:
        return reason
    if kernel_policy(spec) is None:
        form = compiled_form(spec.entry.cls)
        return f"the compiled kernel has no policy {form.kernel if form else spec.name!r}"
    return None


def engine_choice(spec: PolicySpec, n_objects: int, engine: str | None = None) -> tuple[str, str | None]:
    """("fast" or "reference", why not fast) for one run (see the module docstring); the reason
    is None when the fast engine runs or the reference one was asked for."""
    wanted = requested_engine(engine)
    if wanted == "reference":
        return "reference", None
    reason = why_not_fast(spec, n_objects)
    if reason is None:
        return "fast", None
    if wanted == "fast":
        raise UserError(f"the fast engine cannot run this: {reason}", "engine")
    return "reference", reason


def choose_engine(spec: PolicySpec, n_objects: int, engine: str | None = None) -> str:
    """"fast" or "reference" for one run (see the module docstring)."""
    return engine_choice(spec, n_objects, engine)[0]
