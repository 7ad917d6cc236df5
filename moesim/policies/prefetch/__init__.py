"""Prefetch policies. Importing this package registers every one of them.

Each proposes, after a cell starts, objects for later layers of the same pass (PrefetchRequest,
higher priority first); the engine issues them while the link has room. See README "Prefetch
policies" for what each one reads.
"""

from moesim.policies.prefetch import (  # noqa: F401
    frequency,
    gate_lookahead,
    markov,
    noisy_oracle,
    none,
    oracle,
    previous_pass,
    score_budget,
)
