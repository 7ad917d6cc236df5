"""Where a multi-socket CPU's reads come from: the NUMA layout of host memory, a run's choice.

A cpu processor with `numa_nodes` N > 1 (moesim/hw_profiles/profile.py) has its memory_bandwidth
BW (all nodes together) split equally over N nodes, one per socket, and a link of
`numa_link_bandwidth` L bytes/s per direction between every two nodes (UPI, xGMI). The engine's
threads run on every socket, each doing 1/N of the work; the run reads B bytes. The layout is the
placement's `numa` parameter (moesim/policies/placement.py):

    local       each socket reads its own node only (KTransformers built with USE_NUMA copies the
                expert weights onto every node; an engine that partitions them by node):
                time = B / BW
    interleave  pages spread round-robin over the nodes (numactl --interleave=all): each socket reads
                1/N of its bytes locally and the rest from the other nodes, so each node's DRAM
                serves B/N and each directed link carries B/N^2:
                time = max(B / BW, B / (N^2 L))
    node        every page on one node (first touch by one loading thread, numactl -m 0 with threads
                on all sockets): that node serves all B at BW/N and each other socket pulls its B/N
                over its own link:
                time = max(N B / BW, B / (N L))

The effective bandwidth is B over that time, so it does not depend on B. With N = 1 every layout is
`local`; without a link figure the link term is left out (the profile states no limit).
"""

from __future__ import annotations

import dataclasses
from moesim.errors import UserError
from moesim.hw_profiles.profile import Processor

LAYOUTS = ("local", "interleave", "node")


def effective_bandwidth(bandwidth: float, nodes: int | None, link: float | None, layout: str) -> float:
    """Bytes/s the CPU reads at under `layout` (module docstring)."""
    if layout not in LAYOUTS:
        raise UserError(f"numa layout must be one of {', '.join(LAYOUTS)}, got {layout!r}", "placement numa")
    n = int(nodes or 1)
    if n <= 1 or layout == "local":
        return float(bandwidth)
    seconds_per_byte = {"interleave": (1.0 / bandwidth, 1.0 / (n * n * link) if link else 0.0),
                        "node": (n / bandwidth, 1.0 / (n * link) if link else 0.0)}[layout]
    return 1.0 / max(seconds_per_byte)


def with_layout(proc: Processor, layout: str) -> Processor:
    """`proc` with memory_bandwidth at its effective rate under `layout` (itself where nothing changes)."""
    bandwidth = effective_bandwidth(proc.memory_bandwidth, proc.numa_nodes, proc.numa_link_bandwidth, layout)
    if bandwidth == proc.memory_bandwidth:
        return proc
    return dataclasses.replace(proc, memory_bandwidth=bandwidth)
