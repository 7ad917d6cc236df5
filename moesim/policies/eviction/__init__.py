"""Eviction policies. Importing this package registers every one of them."""

from moesim.policies.eviction import lru  # noqa: F401
