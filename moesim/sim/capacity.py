"""Cache capacities from the command line: shares of the routed bytes, sizes with units, or slots.

    "5%"        5 % of the bytes of every expert of the layers the trace holds routing for
                (`held_object_bytes`: a layer that was never logged does not inflate it)
    "4000MiB"   a size with a unit (MiB = 2^20 bytes, MB = 10^6; see moesim.units)
    "51slots"   room for 51 objects of the trace's largest object size
    "1%,5%,25%" several at once (a miss-ratio curve)
Bytes are rounded down to whole bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from moesim.errors import UserError
from moesim.traces.format.trace import Trace
from moesim.units import MAX_BYTES, parse_count, parse_size_or_fraction, show

_SLOTS = re.compile(r"^\s*(\d+)\s*slots?\s*$")


@dataclass(frozen=True)
class Capacity:
    """One capacity as given (`text`) and as resolved for a trace (`bytes`)."""

    text: str
    bytes: int


def held_object_bytes(trace: Trace) -> int:
    """Bytes of every expert of the layers with at least one routed access (the base of "5%")."""
    held = np.zeros(trace.meta.n_layers, dtype=bool)
    held[trace.cell_layer[np.diff(trace.cell_offsets) > 0]] = True
    if not held.any():
        return trace.total_object_bytes()
    sizes = np.asarray(trace.meta.object_bytes, dtype=np.int64)
    return int(sizes[held].sum()) * int(trace.meta.n_experts)


def parse_capacity(text: str, trace: Trace, where: str = "--capacity") -> Capacity:
    stripped = text.strip()
    if not stripped:
        raise UserError("empty capacity", where)
    slots = _SLOTS.match(stripped)
    if slots:
        largest = max(int(b) for b in trace.meta.object_bytes)
        count = parse_count(slots.group(1), where, 0, 2**62)
        return Capacity(stripped, _in_range(count * largest, text, where))
    from moesim.traces.importers.doctor import refuse_placeholder_sizes

    refuse_placeholder_sizes(trace, f"the capacity {stripped!r} (bytes or %)", where)
    value = parse_size_or_fraction(stripped, float(held_object_bytes(trace)), where)
    if not math.isfinite(value):
        raise UserError(f"{show(text)} is not a finite capacity", where)
    return Capacity(stripped, _in_range(int(math.floor(value)), text, where))


def _in_range(n_bytes: int, text: str, where: str) -> int:
    """A capacity the int64 cache core can hold (moesim.units.MAX_BYTES)."""
    if n_bytes > MAX_BYTES:
        raise UserError(f"{show(text)} is more than 1 EiB", where)
    return n_bytes


def parse_capacity_list(text: str, trace: Trace, where: str = "--capacity") -> list[Capacity]:
    """"1%,5%,4000MiB,51slots" -> one Capacity each, in the order given."""
    parts = [p for p in text.split(",")]
    if not any(p.strip() for p in parts):
        raise UserError("no capacity given", where)
    return [parse_capacity(p, trace, where) for p in parts if p.strip()]


def layer_capacities(capacity_bytes: int, weights: list[float] | None, n_layers: int,
                     where: str = "--layer-weights") -> tuple[int, ...] | None:
    """Split a capacity over layers in proportion to `weights` (None: the core splits evenly)."""
    if weights is None:
        return None
    if len(weights) != n_layers:
        raise UserError(f"{len(weights)} weights for {n_layers} layers", where)
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError("weights must be non-negative numbers with a positive sum", where)
    total = float(sum(weights))
    return tuple(int(math.floor(capacity_bytes * w / total)) for w in weights)


def parse_weights(text: str | None, where: str = "--layer-weights") -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"cannot read {text!r} as comma-separated numbers", where) from None
