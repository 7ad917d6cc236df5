"""Engine options for a configuration, where one maps onto a known engine.

Written against (option names checked in each project's documentation, December 2026):
- llama.cpp: tools/cli README "Common params": `-ngl/--n-gpu-layers`, `--n-cpu-moe N` (MoE weights of
  the first N layers stay on the CPU), `-ot/--override-tensor PATTERN=BUFFER`, `--no-op-offload`
  (ggml-org/llama.cpp PR 13386: with it a GPU build runs -ngl 0's host tensors on the host, prompt
  batches included). Mainline llama.cpp has no expert cache: experts live where the placement puts them.
- KTransformers kt-kernel 0.5.x in SGLang (kt-kernel README "KT-Kernel Parameters"):
  `--kt-num-gpu-experts N` (experts kept on the GPU), `--kt-cpuinfer`, `--kt-method`.
- BigMoeOnEdge (github.com/Helldez/BigMoeOnEdge @ 36020f2, the engine of the bundled phone runs):
  `--cache-mb N` (LRU expert cache), `--io-threads N`, `--overlap` (per-expert pipelining in its own read
  and compute order; the dense FFN is not overlapped: moesim/runs/engine_map.py says why). Its two modes
  are advise's overlap "expert" and "layer" on a flash machine (moesim/advise/overlap.py times them with
  engine_map's fields, as check-run does).
A configuration no engine implements gets no option line: moesim does not invent options. One that needs
an engine change (overlap expert+ffn, expert+arrival) says which, in `engine_changes`.
"""

from __future__ import annotations

from dataclasses import dataclass

from moesim.advise.overlap import streams_from_flash
from moesim.advise.space import Candidate, Machine
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


def engine_changes(candidate: Candidate) -> list[str]:
    """What an engine would have to change to run this configuration (none: an engine runs it as is)."""
    return [text for c in candidate.choices for text in (c.fact("engine_change") or ())]


def engine_options(candidate: Candidate, machine: Machine, workload: Workload) -> list[EngineOptions]:
    labels = candidate.labels()
    out: list[EngineOptions] = []
    capacity = candidate.get("capacity")
    all_resident = bool(capacity is not None and capacity.fact("all_resident"))
    placement = candidate.get("placement")
    cpu_layers = placement.fact("cpu_layers") if placement is not None else None
    if placement is not None and placement.fact("cpu_only"):
        return [EngineOptions(LLAMA_CPP, "-ngl 0 --no-op-offload",
                              "every layer on the CPU, prompt batches too (a CPU-only build needs neither option)")]
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
    overlap = candidate.get("overlap")
    mode = overlap.fact("engine_mode") if overlap is not None else None
    if (streams_from_flash(machine) and capacity is not None and cache_policy and not cpu_layers and mode
            and not engine_changes(candidate)):
        mib = int(capacity.fact("capacity_bytes") // 2**20)
        lanes = candidate.get("lanes")
        slots = lanes.fact("io_lanes") if lanes is not None and lanes.fact("io_lanes") else _flash_queue(machine)
        flag = " --overlap" if mode == "overlap" else ""
        out.append(EngineOptions(BIGMOEONEDGE, f"--cache-mb {mib} --io-threads {slots}{flag}",
                                 "LRU expert cache in DRAM over flash"))
    return out


def _flash_queue(machine: Machine) -> int:
    ssd = machine.profile.tier("ssd")
    if ssd is not None and ssd.queue_depth:
        return int(ssd.queue_depth)
    link = machine.profile.link("ssd_d") or machine.profile.link("ssd_h")
    return int(link.copy_engines) if link is not None else 1
