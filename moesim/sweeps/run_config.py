"""One run of a sweep: everything that decides its result, and the hash that names it.

A run is a pure function of its RunConfig plus the trace and profile the config names by content
hash, so the hash of the config is a safe key for its result file: the same key means the same
numbers, and a re-run skips it. Policy specs are stored in canonical form ("lfu:decay=0.9"), so
two spellings of one policy are one run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from moesim.errors import UserError
from moesim.policies.labels import DEFAULT_MISS, DEFAULT_PREFETCH, is_offline, policy_label
from moesim.policies.registry import available, parse_spec

__all__ = ["DEFAULT_MISS", "DEFAULT_PREFETCH", "ENGINES", "RunConfig", "canonical_policy", "is_offline", "policy_label"]

ENGINES = ("count", "timed")
RUN_ID_CHARS = 20


def canonical_policy(text: str, kind: str) -> str:
    """The canonical spec string of a policy; UserError for an unknown name or parameter.

    The default miss handling ("stall") stays as written in a build without miss-handling policies.
    """
    if kind == "miss" and text.strip() == DEFAULT_MISS and not available("miss"):
        return DEFAULT_MISS
    return parse_spec(text, kind).label()


@dataclass(frozen=True)
class RunConfig:
    """One run. `profile` is "" for a count-only run; `profile_set` lists fields set on the profile."""

    trace: str
    trace_hash: str
    eviction: str
    capacity: str
    capacity_bytes: int
    scope: str = "global"
    mode: str = "event"
    seed: int = 0
    prefetch: str = DEFAULT_PREFETCH
    miss: str = DEFAULT_MISS
    engine: str = "count"
    profile: str = ""
    profile_set: tuple[tuple[str, str], ...] = ()
    profile_hash: str = ""
    pass_table: bool = False
    timeline_passes: int = 0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}", "run")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile_set"] = [list(pair) for pair in self.profile_set]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        data = dict(data)
        data["profile_set"] = tuple((str(p), str(v)) for p, v in data.get("profile_set", ()))
        return cls(**data)

    @property
    def run_id(self) -> str:
        """SHA-256 of the canonical JSON of the config, shortened: the run's result file name."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:RUN_ID_CHARS]

    def profile_set_text(self) -> str:
        return ";".join(f"{p}={v}" for p, v in self.profile_set)

    def identity(self) -> dict[str, Any]:
        """The run table's identity columns (moesim.reports.tables.RUN_FIELDS)."""
        return {
            "run_id": self.run_id,
            "engine": self.engine,
            "trace": self.trace,
            "trace_hash": self.trace_hash,
            "profile": self.profile,
            "profile_set": self.profile_set_text(),
            "eviction": self.eviction,
            "prefetch": self.prefetch,
            "miss": self.miss,
            "policy": policy_label(self.eviction, self.prefetch, self.miss),
            "offline": is_offline(self.eviction, self.prefetch),
            "capacity": self.capacity,
            "capacity_bytes": self.capacity_bytes,
            "scope": self.scope,
            "mode": self.mode,
            "seed": self.seed,
        }
