"""No prefetch: every object arrives on demand (the baseline every prefetcher is compared with)."""

from __future__ import annotations

from moesim.policies.base import PrefetchPolicy, PrefetchRequest, PrefetchView
from moesim.policies.registry import register


@register("none", kind="prefetch")
class NonePrefetch(PrefetchPolicy):
    """Proposes nothing; reads nothing. Demand fetch only."""

    def propose(self, view: PrefetchView) -> list[PrefetchRequest]:
        return []
