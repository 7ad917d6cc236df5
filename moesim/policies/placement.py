"""Static expert placement: which routed experts live in host DRAM and run on the CPU, whatever the cache does.

Registered with kind "placement" (`--placement`, TimedConfig.placement):

    gpu              every routed expert runs on the device (through the cache tier; the default)
    cpu-layers:n=N   the routed experts of the first N layers stay in host DRAM and run on the CPU:
                     llama.cpp's `--n-cpu-moe N` ("keep the MoE weights of the first N layers on the
                     CPU"); layers count from the model's first layer (trace meta.layer_ids where a
                     trace keeps only some layers), so dense layers count but hold no experts
    cpu-all          every routed expert runs on the CPU from host DRAM, attention and shared experts
                     on the GPU (KTransformers' default split; llama.cpp `-ot exps=CPU`)
    cpu-only         everything on the CPU: routed experts and the non-expert work (attention, router,
                     shared experts, dense layers, embedding, LM head); the GPU is unused (llama.cpp
                     built without a GPU backend, or `-ngl 0`)

Each CPU placement takes `numa` (local | interleave | node): where a multi-socket host's pages live
(moesim/sim/numa.py). The default, local, lets every socket read its own node.

A placed expert is never copied to the device and never enters the cache: its requests are
recorded with the outcome PLACED (moesim/sim/plan.py), neither hit nor miss, and the CPU reads its
weights from host memory (time: moesim/sim/compute/experts.py on the profile's cpu processor).
The CPU and the GPU parts of a cell run in parallel; the cell waits for the slower. Under cpu-only
the non-expert parts run on the CPU as well and no activation crosses a link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from moesim.errors import UserError
from moesim.policies.base import PolicyContext
from moesim.policies.registry import PolicySpec, parse_spec, register
from moesim.sim.numa import LAYOUTS

NUMA_HELP = "where a multi-socket host's pages live: local (each socket its own node), interleave, node (all on one)"


def _check_numa(layout: str, where: str) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"numa must be one of {', '.join(LAYOUTS)}, got {layout!r}", where)


class Placement:
    """Decides once, before the first cell, which objects run on the CPU."""

    name: ClassVar[str] = ""
    non_expert_on_cpu: ClassVar[bool] = False  # attention, dense layers, LM head run on the CPU too

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        self.params = params
        self.ctx = ctx

    def on_cpu(self) -> np.ndarray:
        """bool per object: True = lives in host DRAM and runs on the CPU."""
        return np.zeros(self.ctx.n_objects, dtype=bool)


@register("gpu", kind="placement")
class AllOnDevice(Placement):
    """Every routed expert runs on the device, through the cache tier (the default)."""


@register("cpu-layers", kind="placement")
class CpuLayers(Placement):
    """The routed experts of the first `n` model layers run on the CPU (llama.cpp --n-cpu-moe N)."""

    @dataclass(frozen=True)
    class Params:
        n: int = field(default=0, metadata={"help": "layers, counted from the model's first, whose experts stay on the CPU"})
        numa: str = field(default="local", metadata={"help": NUMA_HELP})

        def check(self) -> None:
            if self.n < 0:
                raise UserError(f"n must be >= 0, got {self.n}", "placement cpu-layers")
            _check_numa(self.numa, "placement cpu-layers")

    def on_cpu(self) -> np.ndarray:
        layer = np.asarray(self.ctx.object_layer, dtype=np.int64)
        trace = self.ctx.trace
        ids = getattr(getattr(trace, "meta", None), "layer_ids", None)
        if ids is not None and len(ids) == self.ctx.n_layers:
            layer = np.asarray(ids, dtype=np.int64)[layer]  # the model's own layer numbers
        return layer < self.params.n


@register("cpu-all", kind="placement")
class CpuAll(Placement):
    """Every routed expert runs on the CPU from host DRAM (KTransformers; llama.cpp -ot exps=CPU)."""

    @dataclass(frozen=True)
    class Params:
        numa: str = field(default="local", metadata={"help": NUMA_HELP})

        def check(self) -> None:
            _check_numa(self.numa, "placement cpu-all")

    def on_cpu(self) -> np.ndarray:
        return np.ones(self.ctx.n_objects, dtype=bool)


@register("cpu-only", kind="placement")
class CpuOnly(CpuAll):
    """Everything on the CPU: routed experts, attention, dense layers, LM head; the GPU unused (llama.cpp CPU build)."""

    non_expert_on_cpu = True

    @dataclass(frozen=True)
    class Params:
        numa: str = field(default="local", metadata={"help": NUMA_HELP})

        def check(self) -> None:
            _check_numa(self.numa, "placement cpu-only")


_SHORT = re.compile(r"^\s*cpu-layers\s*:\s*(\d+)\s*$")


def numa_layout(spec: PolicySpec) -> str:
    """The placement's NUMA layout ("local" where it has none)."""
    return str(getattr(spec.params, "numa", "local"))


def non_expert_on_cpu(spec: PolicySpec) -> bool:
    """Whether the placement runs the non-expert work on the CPU as well (cpu-only)."""
    return bool(getattr(spec.entry.cls, "non_expert_on_cpu", False))


def parse_placement(text: str) -> PolicySpec:
    """A placement spec; "cpu-layers:4" is short for "cpu-layers:n=4" (as llama.cpp's --n-cpu-moe 4)."""
    short = _SHORT.match(text or "")
    return parse_spec(f"cpu-layers:n={short.group(1)}" if short else (text or "gpu"), "placement")
