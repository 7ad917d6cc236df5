"""Engine options for a configuration, where one maps onto a known engine.

Written against (option names checked in each project's documentation, December 2026):
- llama.cpp: tools/cli README "Common params": `-ngl/--n-gpu-layers`, `--n-cpu-moe N` (MoE weights of
  the first N layers stay on the CPU), `-ot/--override-tensor PATTERN=BUFFER`. Mainline llama.cpp
  has no expert cache: experts live where the placement puts them.
- KTransformers kt-kernel 0.5.x in SGLang (kt-kernel README "KT-Kernel Parameters"):
  `--kt-num-gpu-experts N` (experts kept on the GPU), `--kt-cpuinfer`, `--kt-method`.
- BigMoeOnEdge (github.com/Helldez/BigMoeOnEdge @ 36020f2, the engine of the bundled phone runs):
  `--cache-mb N` (LRU expert cache), `--io-threads N`, `--overlap` (per-expert pipelining, and the
  dense FFN / shared experts run while the layer's reads are in flight: the runs' .log).
A configuration no engine implements gets no line: moesim does not invent options.
"""

from __future__ import annotations

from dataclasses import dataclass

from moesim.advise.space import FFN_OVERLAP, Candidate, Machine, ffn_seconds
from moesim.advise.workload import Workload

LLAMA_CPP = "llama.cpp (tools/cli options as of December 2026)"
KTRANSFORMERS = "KTransformers kt-kernel 0.5.x (SGLang)"
BIGMOEONEDGE = "BigMoeOnEdge @ 36020f2"
EXPERT_TENSORS = r"ffn_(up|down|gate)_exps"


@dataclass(frozen=True)
class EngineOptions:
    engine: str
    options: str
    note: str = ""


def layer_regex(layers: list[int]) -> str:
    """A GGUF tensor-name pattern for the expert tensors of `layers` (llama.cpp's -ot)."""
    alternatives = "|".join(str(layer) for layer in sorted(layers))
    return rf"blk\.({alternatives})\.{EXPERT_TENSORS}\.weight"


def engine_options(candidate: Candidate, machine: Machine, workload: Workload) -> list[EngineOptions]:
    labels = candidate.labels()
    out: list[EngineOptions] = []
    capacity = candidate.get("capacity")
    all_resident = bool(capacity is not None and capacity.fact("all_resident"))
    placement = candidate.get("placement")
    cpu_layers = placement.fact("cpu_layers") if placement is not None else None
    if cpu_layers:
        n = int(cpu_layers)
        out.append(EngineOptions(LLAMA_CPP, f"-ngl 999 --n-cpu-moe {n}",
                                 f"same as -ot \"{layer_regex(list(range(n)))}=CPU\""))
    elif all_resident and machine.host_link:
        out.append(EngineOptions(LLAMA_CPP, "-ngl 999", "every layer, experts included, on the GPU; no -ot"))
        out.append(EngineOptions(KTRANSFORMERS, f"--kt-num-gpu-experts {workload.trace.meta.n_experts}",
                                 "every expert on the GPU: the CPU runs none"))
    if placement is not None and placement.fact("cpu_all"):
        out.append(EngineOptions(KTRANSFORMERS, "--kt-num-gpu-experts 0", "every routed expert on the CPU"))
    cache_policy = labels.get("eviction") == "lru" and labels.get("prefetch", "none") == "none"
    if not machine.host_link and capacity is not None and cache_policy and not cpu_layers:
        mib = int(capacity.fact("capacity_bytes") // 2**20)
        mode = labels.get("overlap", "expert")
        lanes = candidate.get("lanes")
        slots = lanes.fact("io_lanes") if lanes is not None and lanes.fact("io_lanes") else _flash_queue(machine)
        # its --overlap pipelines each expert behind its read and runs the dense FFN / shared experts while
        # the reads are in flight: "expert" alone maps onto it only where the model has no such FFN
        if mode == FFN_OVERLAP or (mode == "expert" and ffn_seconds(machine, workload) == 0):
            out.append(EngineOptions(BIGMOEONEDGE, f"--cache-mb {mib} --io-threads {slots} --overlap",
                                     "LRU expert cache in DRAM over flash"))
        elif mode == "layer":
            out.append(EngineOptions(BIGMOEONEDGE, f"--cache-mb {mib} --io-threads {slots}",
                                     "LRU expert cache in DRAM over flash"))
    return out


def _flash_queue(machine: Machine) -> int:
    ssd = machine.profile.tier("ssd")
    if ssd is not None and ssd.queue_depth:
        return int(ssd.queue_depth)
    link = machine.profile.link("ssd_d") or machine.profile.link("ssd_h")
    return int(link.copy_engines) if link is not None else 1
