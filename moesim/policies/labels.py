"""A run's policy label, derived from its parsed specs in one place.

    run_label(parse_spec("lru", "eviction"), parse_spec("oracle:lookahead=2", "prefetch"), ...)
    -> "lru pf=oracle:lookahead=2"

Tables, plots and reports name a run by its eviction policy, then its prefetch policy, miss
handling and placement where they are not the defaults, each in canonical form (a spec's
`label()`), so two spellings of one policy are one label. `policy_label` does the same for
canonical spec strings already stored in result files; `is_offline` says whether a run reads the
trace's future (its result is a bound).
"""

from __future__ import annotations

from moesim.policies.registry import PolicySpec, parse_spec

DEFAULT_PREFETCH = "none"
DEFAULT_MISS = "stall"
DEFAULT_PLACEMENT = "gpu"


def run_label(eviction: PolicySpec, prefetch: PolicySpec | None = None, miss: PolicySpec | None = None,
              placement: PolicySpec | None = None) -> str:
    """eviction [pf=prefetch] [miss=handling] [place=placement] (defaults left out)."""
    parts = [eviction.label()]
    if prefetch is not None and prefetch.name != DEFAULT_PREFETCH:
        parts.append("pf=" + prefetch.label())
    if miss is not None and miss.name != DEFAULT_MISS:
        parts.append("miss=" + miss.label())
    if placement is not None and placement.name != DEFAULT_PLACEMENT:
        parts.append("place=" + placement.label())
    return " ".join(parts)


def policy_label(eviction: str, prefetch: str, miss: str) -> str:
    """The label of canonical spec strings (as result files store them), without parsing them."""
    parts = [eviction]
    if prefetch != DEFAULT_PREFETCH:
        parts.append(f"pf={prefetch}")
    if miss != DEFAULT_MISS:
        parts.append(f"miss={miss}")
    return " ".join(parts)


def is_offline(eviction: str, prefetch: str) -> bool:
    """True when a policy of the run reads the trace's future (its result is a bound)."""
    specs = [parse_spec(eviction, "eviction")]
    if prefetch != DEFAULT_PREFETCH:
        specs.append(parse_spec(prefetch, "prefetch"))
    return any(bool(getattr(s.entry.cls, "offline", False)) for s in specs)
