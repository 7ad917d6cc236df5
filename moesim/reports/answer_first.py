"""The lines a report opens with: the best configuration per (profile, capacity), its gain over the
baseline and its distance to the bound, and the warnings a reader must see before any table.

    lines, warnings = answer_lines(runs)     # runs: the ResultSet's runs table

Timed runs: per (trace, profile, capacity) the deployable run (not offline, not lossy) with the
lowest mean TPOT, against the baseline (LRU, no prefetch, stall) of the same setting and the time
bound. Count-only runs: per (trace, capacity) the deployable policy with the highest hit rate,
against LRU and Belady's misses.
"""

from __future__ import annotations

import math

import pandas as pd

from moesim.reports import frames

LATE_SHARE = 0.10  # warn when more than this share of issued prefetches landed after their demand


def _is_baseline(r: pd.Series) -> bool:
    return str(r["eviction"]) == "lru" and str(r["prefetch"]) in ("none", "") and str(r["miss"]) in ("stall", "")


def _ms(v: float) -> str:
    return f"{1e3 * v:.2f} ms"


def _capacity(r: pd.Series) -> str:
    share = r.get("capacity_share")
    text = str(r["capacity"])
    if share is not None and pd.notna(share) and not text.endswith("%"):
        return f"{text} ({100 * float(share):.3g}% of experts)"
    return text


def answer_lines(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    ok = frames.ok_runs(runs)
    lines: list[str] = []
    warnings: list[str] = []
    if ok.empty:
        return ["no run finished: see the failed runs below"], warnings
    deployable = ok[~ok["offline"].astype(bool) & ~ok["lossy"].astype(bool)]
    timed = deployable[deployable["engine"] == "timed"]
    for (trace, profile, _), g in timed.groupby(["trace", "profile", "capacity_bytes"], sort=True):
        g = g[g["tpot_mean_s"].notna()]
        if g.empty:
            continue
        # ties go to the baseline: a policy that only equals LRU is no reason to change
        g = g.assign(_not_base=~g.apply(_is_baseline, axis=1))
        best = g.sort_values(["tpot_mean_s", "_not_base", "run_id"], kind="mergesort").iloc[0]
        base = g[g.apply(_is_baseline, axis=1)]
        text = (f"{profile}, {trace}, cache {_capacity(best)}: best TPOT {_ms(best['tpot_mean_s'])} with "
                f"{best['policy']}")
        if len(base):
            b = float(base["tpot_mean_s"].iloc[0])
            text += (f"; baseline LRU {_ms(b)} ({b / float(best['tpot_mean_s']):.2f}x)"
                     if best["run_id"] != base["run_id"].iloc[0] else " (the baseline itself: nothing beat LRU)")
        bound = best.get("tpot_bound_s")
        if bound is not None and pd.notna(bound) and float(bound) > 0:
            text += f"; {float(best['tpot_mean_s']) / float(bound):.2f}x the time bound ({_ms(float(bound))})"
        lines.append(text)
    count = deployable[deployable["engine"] != "timed"]
    for (trace, _), g in count.groupby(["trace", "capacity_bytes"], sort=True):
        g = g.assign(_not_lru=g["policy"] != "lru")
        best = g.sort_values(["hit_rate", "_not_lru", "run_id"], ascending=[False, True, True],
                             kind="mergesort").iloc[0]
        text = f"{trace}, cache {_capacity(best)}: best hit rate {100 * float(best['hit_rate']):.1f}% with {best['policy']}"
        lru = g[g["policy"] == "lru"]
        if len(lru) and best["policy"] != "lru":
            text += f" (LRU {100 * float(lru['hit_rate'].iloc[0]):.1f}%)"
        belady = best.get("belady_misses")
        if belady is not None and pd.notna(belady) and float(belady) > 0:
            text += f"; {float(best['misses']) / float(belady):.2f}x Belady's misses"
        lines.append(text)
    warnings += _warnings(ok)
    return lines, warnings


def _warnings(ok: pd.DataFrame) -> list[str]:
    out = []
    issued = ok["prefetch_issued"].fillna(0).astype(float)
    late = ok["prefetch_late"].fillna(0).astype(float)
    heavy = ok[(issued > 0) & (late > LATE_SHARE * issued)]
    if len(heavy):
        worst = heavy.assign(_share=late / issued.where(issued > 0, math.inf)).sort_values("_share").iloc[-1]
        out.append(f"late prefetches: in {len(heavy)} runs more than {100 * LATE_SHARE:.0f}% of prefetches landed "
                   f"after their layer needed them (worst: {worst['policy']} on {worst['profile'] or 'count-only'}, "
                   f"{100 * float(worst['_share']):.0f}%); they count as stalls, not hits")
    timed = ok[ok["engine"] == "timed"]
    if len(timed) and timed["offline"].astype(bool).any():
        fastest = timed.sort_values(["tpot_mean_s", "run_id"], kind="mergesort").iloc[0]
        if bool(fastest["offline"]):
            out.append(f"the fastest run ({fastest['policy']}) reads the trace's future: it is a bound, not a "
                       "configuration to deploy; the answer above lists deployable runs only")
    if ok["lossy"].astype(bool).any():
        out.append("some runs use lossy miss handling (low-bit fetch, dropped experts): they change the model's "
                   "output and are left out of the answer")
    return out
