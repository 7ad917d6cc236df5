"""No prefetch: every object is copied on demand (the baseline every prefetcher is compared with)."""

from __future__ import annotations

from moesim.policies.base import PrefetchPolicy
from moesim.policies.registry import register


@register("none", kind="prefetch")
class NoPrefetch(PrefetchPolicy):
    """Proposes nothing. With it the timed plan's hits and misses equal the count replay's."""

    proposes_nothing = True
