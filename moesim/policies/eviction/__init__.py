"""Eviction policies. Importing this package registers every one of them."""

from moesim.policies.eviction import (  # noqa: F401
    arc,
    belady,
    fifo,
    least_stale,
    lfu,
    lru,
    lru_ds,
    moe_infinity,
    random_eviction,
    slru,
    static_hot,
)
