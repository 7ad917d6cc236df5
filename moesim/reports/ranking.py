"""Policy ranking with the distance to both bounds (docs/metrics.md, "Ranking").

Within each comparable group (same trace, profile and settings, capacity, scope, replay mode and
seed) deployable policies are ranked by time per output token when the runs are timed (total time
where a run has no decode token), else by misses; offline policies (Belady, oracles) are listed as
bounds with no rank. Distances:
- misses_over_belady = misses / Belady's misses in the group (a timed run carries Belady's count
  itself; a count-only group takes it from its offline eviction run, when there is one);
- time_over_bound = total_s / time_bound_s (timed runs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["trace", "profile", "profile_set", "capacity_bytes", "scope", "mode", "seed"]
COLUMNS = ["trace", "profile", "profile_set", "capacity", "scope", "mode", "seed", "rank", "policy", "offline",
           "hit_rate", "misses", "belady_misses", "misses_over_belady", "total_s", "time_bound_s", "time_over_bound",
           "tpot_mean_s", "tpot_bound_s"]


def _ratio(a: pd.Series, b: pd.Series) -> pd.Series:
    a = a.astype(float)
    b = b.astype(float)
    return (a / b.where(b > 0)).where(b > 0)


def ranking_table(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=COLUMNS)
    frames = []
    for _, g in ok.groupby(GROUP, sort=True, dropna=False):
        g = g.copy()
        belady = g["belady_misses"].astype(float)
        count_bound = g[g["offline"] & (g["prefetch"] == "none")]["misses"].astype(float)
        if len(count_bound):
            belady = belady.fillna(float(count_bound.min()))
        g["belady_misses"] = belady
        g["misses_over_belady"] = _ratio(g["misses"], g["belady_misses"])
        g["time_over_bound"] = _ratio(g["total_s"], g["time_bound_s"])
        timed = g["engine"] == "timed"
        speed = g["tpot_mean_s"].astype(float).where(g["tpot_mean_s"].notna(), g["total_s"].astype(float))
        g["score"] = np.where(timed, speed, g["misses"].astype(float))
        deployable = ~g["offline"]
        order = g[deployable].sort_values(["score", "policy"], kind="mergesort")
        g["rank"] = pd.array([pd.NA] * len(g), dtype="Int64")
        g.loc[order.index, "rank"] = np.arange(1, len(order) + 1)
        g = pd.concat([g.loc[order.index], g[~deployable].sort_values("policy", kind="mergesort")])
        frames.append(g)
    table = pd.concat(frames, ignore_index=True)
    return table[COLUMNS]
