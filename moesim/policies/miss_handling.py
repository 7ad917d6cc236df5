"""Miss handling: what the engine does when a cell needs an object that is not in the cache tier.

Registered like eviction policies, kind "miss":

    stall    copy the object in and wait for it (the default; lossless)
    cpu      run the expert on the host CPU instead (Fiddler, KTransformers): activations cross the
             link, weights do not; the object is not admitted (lossless)
    lowbit   copy a low-bit version (bytes x bits/16) into a full-size slot; it stays low-bit while
             resident, so its later hits are altered too (HOBBIT; lossy)
    drop     skip the lowest-gate missing expert of every token (AdapMoE-style; lossy)

A handler only decides; the planner turns decisions into copies and the engine into time. Lossy
handlers change the model's output: results carry `lossy` and the number of altered expert
applications (token x expert pairs that did not run at full precision or did not run at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Sequence

from moesim.errors import UserError
from moesim.policies.base import PolicyContext
from moesim.policies.registry import register

FETCH = 0  # copy the object into the cache tier (full size, or low-bit with fetch_scale < 1)
CPU = 1  # execute on the host CPU; no copy of the weights, no admission
SKIP = 2  # every application of the object in this cell was dropped: nothing to copy or run
ACTION_NAMES = ("fetch", "cpu", "skip")


@dataclass(frozen=True)
class MissView:
    """One cell's misses, with the routing a handler may need.

    `access_obj` lists the object of every access of the cell token by token (each token's k
    experts in router order); `access_weight` the gate weights (None when the trace has none: then
    router order stands in for gate order, last = lowest). `missing_tokens[i]` is how many of the
    cell's tokens routed to `missing[i]`.
    """

    pass_index: int
    cell: int
    layer: int
    tokens: int
    missing: Sequence[int]
    missing_tokens: Sequence[int]
    access_obj: Sequence[int]
    access_weight: Sequence[float] | None = None


@dataclass
class MissDecision:
    """Per missing object an action; `kept_tokens` (drop) says how many of its tokens still run."""

    actions: list[int]
    altered: int = 0
    kept_tokens: list[int] | None = None
    fetch_scale: float = 1.0


class MissHandler:
    """Decides, per cell, what to do with the objects that missed. Subclasses register with kind "miss"."""

    name: ClassVar[str] = ""
    lossy: ClassVar[bool] = False
    fetch_all: ClassVar[bool] = False
    """True when every miss is simply fetched: the planner then skips building views (hot path)."""
    keeps_lowbit: ClassVar[bool] = False
    """True when fetched copies stay low-bit while resident, so every later hit on them is altered."""
    bounds_hold: ClassVar[bool] = True
    """False when the handler avoids copies altogether (cpu, drop): the time bounds then do not apply."""

    def __init__(self, params: object, ctx: PolicyContext) -> None:
        self.params = params
        self.ctx = ctx

    def min_fetch_scale(self) -> float:
        """The smallest fraction of an object's bytes one of its fetches moves (the bounds use it)."""
        return 1.0

    def decide(self, view: MissView) -> MissDecision:
        return MissDecision(actions=[FETCH] * len(view.missing))


@register("stall", kind="miss")
class StallAndFetch(MissHandler):
    """Copy every missing object in and stall the cell until the copies land (lossless default)."""

    fetch_all = True


@register("cpu", kind="miss")
class ExecuteOnCpu(MissHandler):
    """Run missing experts on the host CPU from host memory; only activations cross the link.

    CPU time is a roofline over the profile's cpu_flops and cpu_memory_bandwidth. With
    `max_tokens` > 0, an expert routed more tokens than that in the cell is fetched instead
    (large prefill batches are faster on the device, as Fiddler decides).
    """

    bounds_hold = False

    @dataclass(frozen=True)
    class Params:
        max_tokens: int = field(default=0, metadata={"help": "fetch instead when an expert has more tokens than this (0: never)"})

        def check(self) -> None:
            if self.max_tokens < 0:
                raise UserError(f"max_tokens must be >= 0, got {self.max_tokens}", "miss handler cpu")

    def decide(self, view: MissView) -> MissDecision:
        limit = self.params.max_tokens
        if limit <= 0:
            return MissDecision(actions=[CPU] * len(view.missing))
        return MissDecision(actions=[CPU if t <= limit else FETCH for t in view.missing_tokens])


@register("lowbit", kind="miss")
class FetchLowBit(MissHandler):
    """Fetch a `bits`-bit copy (bytes x bits/16) of a missing expert into its full-size slot (lossy).

    The slot keeps the low-bit copy until evicted, so hits on it are altered applications as well;
    a prefetch brings the full-precision copy. Compute time is left at the full-precision figure
    (dequantisation is assumed to cost what the smaller read saves).
    """

    lossy = True
    keeps_lowbit = True

    def min_fetch_scale(self) -> float:
        return self.params.bits / 16.0

    @dataclass(frozen=True)
    class Params:
        bits: int = field(default=4, metadata={"help": "bit width of the fetched copy (of 16)"})

        def check(self) -> None:
            if not 1 <= self.bits <= 16:
                raise UserError(f"bits must be between 1 and 16, got {self.bits}", "miss handler lowbit")

    def decide(self, view: MissView) -> MissDecision:
        return MissDecision(actions=[FETCH] * len(view.missing), altered=int(sum(view.missing_tokens)),
                            fetch_scale=self.params.bits / 16.0)


@register("drop", kind="miss")
class DropLowestGate(MissHandler):
    """Skip, for every token, its `per_token` lowest-gate experts among those that missed (lossy).

    An object whose every application in the cell was dropped is neither copied nor run; an object
    some token still needs is fetched as usual. Without gate weights router order stands in
    (the last-ranked expert has the lowest gate).
    """

    lossy = True
    bounds_hold = False

    @dataclass(frozen=True)
    class Params:
        per_token: int = field(default=1, metadata={"help": "missing experts dropped per token, lowest gate first"})

        def check(self) -> None:
            if self.per_token < 1:
                raise UserError(f"per_token must be >= 1, got {self.per_token}", "miss handler drop")

    def decide(self, view: MissView) -> MissDecision:
        missing_index = {obj: i for i, obj in enumerate(view.missing)}
        kept = list(view.missing_tokens)
        n_access = len(view.access_obj)
        per = n_access // view.tokens if view.tokens and n_access % view.tokens == 0 else 1
        weights = view.access_weight
        altered = 0
        for start in range(0, n_access, per):
            token = range(start, start + per)
            missed = [a for a in token if view.access_obj[a] in missing_index]
            if not missed:
                continue
            # lowest gate first; without weights the later router rank is the lower gate
            if weights is not None:
                missed.sort(key=lambda a: (weights[a], -a))
            else:
                missed.reverse()
            for a in missed[: self.params.per_token]:
                kept[missing_index[view.access_obj[a]]] -= 1
                altered += 1
        actions = [SKIP if k <= 0 else FETCH for k in kept]
        return MissDecision(actions=actions, altered=altered, kept_tokens=kept)
