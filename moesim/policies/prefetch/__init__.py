"""Prefetch policies. Importing this package registers every one of them."""

from moesim.policies.prefetch import none, oracle  # noqa: F401
