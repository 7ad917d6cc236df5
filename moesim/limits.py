"""The one place declared sizes meet this machine's memory before anything is allocated.

A trace's metadata, a synth setting or a sweep axis can declare sizes (n_experts = 2e9,
10^15 accesses, 10^11 requests) whose arrays no machine holds. numpy would try, fail after a
long while or take the machine down; `check_memory` turns such a declaration into one line that
names the setting, the memory it needs and what this machine has. Estimates are lower bounds of
what the code allocates (so a refusal is never wrong), from per-item costs documented beside each
caller's constant.
"""

from __future__ import annotations

import os

from moesim.errors import UserError
from moesim.units import format_bytes

# Per-item costs the callers declare (bytes), lower bounds of their arrays:
BYTES_PER_OBJECT = 16  # a replay's per-object tables: size (int64) + residency/state (>= 8 B)
BYTES_PER_SYNTH_ACCESS = 12  # synthetic generation: routing (int64) + the trace's expert (>= 2 B) + layer
BYTES_PER_SYNTH_REQUEST = 32  # prompt and decode lengths, their cumsum, per-request offsets (int64 each)


def available_memory() -> int:
    """Bytes this process can still allocate: MemAvailable from /proc/meminfo, else physical memory,
    capped by MOESIM_MEMORY_LIMIT (bytes) when set (tests and shared machines)."""
    total = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (OSError, ValueError, AttributeError):
            total = 2**40
    limit = os.environ.get("MOESIM_MEMORY_LIMIT", "")
    if limit.isdigit():
        total = min(total, int(limit))
    return total


def check_memory(n_bytes: float, what: str, where: str) -> None:
    """UserError naming `where` when `what` needs more than this machine's available memory."""
    have = available_memory()
    if n_bytes > have:
        raise UserError(f"{what} needs at least {format_bytes(n_bytes)} of memory; this machine has "
                        f"{format_bytes(have)} available", where)
