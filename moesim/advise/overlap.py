"""The overlap dimension of advise's space: how a layer's expert reads overlap its compute, as the engine
does it and as a changed engine could, each change named.

    choices = overlap_choices(machine, workload, chosen)   # space.py's "overlap" row

Where experts stream from flash with no host link (the phone; its engine is BigMoeOnEdge, whose options
moesim/advise/engines.py prints) every configuration is timed with the engine's own read and compute
order, taken from moesim/runs/engine_map.py `engine_order` (the fields check-run replays a measured run
with): a missed expert read as its weight slices on lanes of their own, the prefill a per-layer barrier,
the dense FFN not overlapped. Its two modes:

    expert               its --overlap: slices queued slice-major, the expert matmul visiting the routed
                         experts in id order, each (slice, expert) waiting for its bytes
    layer                its serial mode: a per-layer barrier, slices queued expert-major

and levers the engine does not have, offered because each is a change an engine can make, and labelled
with it (`engine_change` in the choice's facts; engines.py prints no option for them):

    expert+arrival       the matmul takes experts as their slices land, resident ones first
    expert+ffn           the dense MLP / shared experts run after the router while the reads stream
                         (models with an FFN beside their routed experts: gemma-4, not Qwen3)
    expert+ffn+arrival   both

Elsewhere (experts over a host link: llama.cpp, KTransformers; no engine order is modelled there) the
clock's own modes: per-expert pipelining in arrival order, a per-layer barrier, and expert+ffn labelled
as the same engine change.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

FFN_OVERLAP = "expert+ffn"
ARRIVAL_OVERLAP = "expert+arrival"
FFN_ARRIVAL_OVERLAP = "expert+ffn+arrival"
PLAIN_MODES = ("expert", "layer")
ENGINE_CHANGE = {
    "ffn": "run the layer's dense MLP / shared experts after the router, while its expert reads stream "
           "(llama.cpp's gemma4 graph builds the MLP before the router, so it runs before any read is issued)",
    "arrival": "let the expert matmul take each routed expert as its weight slices land, resident experts first "
               "(ggml's mul_mat_id visits them in ascending id, so a resident expert queued behind a missing "
               "one waits for it)",
}
PREFETCH_CHANGE = ("add a prefetcher: issue reads for the experts it predicts before they are routed (the engine "
                   "reads an expert only once the router has chosen it)")


def timed_field(name: str) -> bool:
    """Whether the timing engine has this run option."""
    from moesim.sim.timed_replay import TimedConfig

    return name in {f.name for f in dataclasses.fields(TimedConfig)}


def streams_from_flash_profile(profile: Any) -> bool:
    """Experts read from flash into the compute device's own memory, no host link: BigMoeOnEdge's case."""
    host_link = profile.link("c2c") is not None or profile.link("h2d") is not None
    return not host_link and profile.tier("ssd") is not None


def streams_from_flash(machine: Any) -> bool:
    return streams_from_flash_profile(machine.profile)


def workload_arch(workload: Any) -> str | None:
    """The model's architecture name as check-run resolves it: the spec's family, else the trace's own
    (gemma4's weight slices differ from the rest: moesim/runs/engine_map.py SLICE_SHARES)."""
    if workload.spec is not None:
        return str(workload.spec.family)
    from moesim.runs.cli_runs import _arch

    return _arch(workload.trace)


def engine_fields(overlap: bool, workload: Any) -> dict[str, Any]:
    """The TimedConfig fields of BigMoeOnEdge's --overlap (True) or serial mode (False) for this model."""
    from moesim.runs.engine_map import engine_order

    return engine_order(overlap, workload_arch(workload))


def overlap_choices(machine: Any, workload: Any, chosen: dict[str, Any]) -> list[Any]:
    from moesim.advise.space import Choice

    if not timed_field("overlap"):
        return [Choice("overlap", "layer")]  # this clock models only the per-layer barrier
    has_ffn = timed_field("ffn_overlap") and ffn_seconds(machine, workload) > 0
    placement = chosen.get("placement")
    if placement is not None and placement.fact("placed_bytes", 0) >= workload.expert_bytes > 0:
        # every expert runs on the CPU from host memory: nothing is read, so no mode overlaps anything
        return [Choice("overlap", "layer", config=(("overlap", "layer"),))]
    if not (streams_from_flash(machine) and timed_field("expert_order")):
        out = [Choice("overlap", mode, config=(("overlap", mode),)) for mode in PLAIN_MODES]
        if has_ffn:
            out.insert(1, Choice("overlap", FFN_OVERLAP, config=(("overlap", "expert"), ("ffn_overlap", True)),
                                 facts=(("engine_change", (ENGINE_CHANGE["ffn"],)),)))
        return out
    own = engine_fields(True, workload)
    levers = [("expert", {}, ()), (ARRIVAL_OVERLAP, {"expert_order": "arrival"}, ("arrival",))]
    if has_ffn:
        levers += [(FFN_OVERLAP, {"ffn_overlap": True}, ("ffn",)),
                   (FFN_ARRIVAL_OVERLAP, {"ffn_overlap": True, "expert_order": "arrival"}, ("ffn", "arrival"))]
    out = [Choice("overlap", label, config=tuple({**own, **changed}.items()),
                  facts=(("engine_mode", "overlap"),) + ((("engine_change", tuple(ENGINE_CHANGE[c] for c in changes)),)
                                                          if changes else ()))
           for label, changed, changes in levers]
    out.append(Choice("overlap", "layer", config=tuple(engine_fields(False, workload).items()),
                      facts=(("engine_mode", "serial"),)))
    return out


def ffn_seconds(machine: Any, workload: Any) -> float:
    """Seconds of shared-expert and dense-FFN work in the whole trace on this machine (0: the model has
    none beside its routed experts, so running it during reads changes nothing), from the clock's own
    operator times (moesim/sim/compute)."""
    from moesim.sim.compute import compute_model, non_expert_cell_times
    from moesim.sim.cost_model import resolve_model_spec

    spec, formats = resolve_model_spec(workload.trace, workload.model if workload.spec is not None else None)
    times = non_expert_cell_times(workload.trace, compute_model(workload.trace, machine.profile, spec, None, None,
                                                                formats)).by_operator
    return float(sum(float(np.sum(times.get(op, 0.0))) for op in ("shared", "dense_ffn")))
