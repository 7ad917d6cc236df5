"""From result tables to each plot's tidy input (docs/metrics.md, "Plot inputs").

Runs that failed are left out of every plot (the report lists them). Seeds are averaged.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import pandas as pd

from moesim.errors import UserError
from moesim.units import KINDS, parse_quantity

SETTING_KINDS = ("bandwidth", "bytes", "time", "flops", "power", "energy_per_byte", "energy", "frequency")
MAX_LABELS = 30
CAPACITY_AXIS = "capacity"


ORDER = ["trace", "profile", "profile_set", "eviction", "prefetch", "miss", "capacity_bytes", "scope", "mode", "seed"]


def natural_key(text: Any) -> tuple:
    """Sort key that orders "8 GB/s" before "16 GB/s" (numbers inside text compare as numbers)."""
    parts = re.split(r"(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)", str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)


def reading_order(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` sorted for people: trace, profile, settings, policy, capacity, scope, mode, seed."""
    keys = [c for c in ORDER if c in runs.columns]
    if not len(runs):
        return runs
    order = sorted(range(len(runs)), key=lambda i: tuple(natural_key(runs[c].iloc[i]) for c in keys))
    return runs.iloc[order]


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished, in reading order."""
    return reading_order(runs[runs["status"] == "ok"])


def setting_quantity(path: str, text: str) -> tuple[float, str]:
    """A profile setting as (number in SI units, units kind): "16 GB/s" -> (1.6e10, "bandwidth").

    A plain number is a count. The kind is found from the unit, so no schema is needed to read it.
    """
    stripped = str(text).strip()
    try:
        return float(stripped), "count"
    except ValueError:
        pass
    for kind in SETTING_KINDS:
        try:
            return parse_quantity(stripped, kind, path), kind
        except UserError:
            continue
    raise UserError(f"cannot read {text!r} as a number with a unit ({', '.join(KINDS)})", path)


def setting_value(path: str, text: str) -> float:
    """A profile setting as a number in SI units ("16 GB/s" -> 1.6e10); plain numbers pass through."""
    return setting_quantity(path, text)[0]


def settings_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """One numeric column per profile field set in any run ("links.h2d.bandwidth" -> bytes/s)."""
    values: dict[str, list[float]] = {}
    parsed = []
    for text in runs["profile_set"].fillna(""):
        pairs = dict(p.split("=", 1) for p in str(text).split(";") if "=" in p)
        parsed.append(pairs)
        for path in pairs:
            values.setdefault(path, [])
    out = pd.DataFrame(index=runs.index)
    for path in values:
        out[path] = [setting_value(path, p[path]) if path in p else np.nan for p in parsed]
    return out


def varying(runs: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in runs.columns and runs[c].astype(str).nunique() > 1]


def panel_column(runs: pd.DataFrame, keys: Sequence[str] = ("trace", "profile", "profile_set", "scope", "mode")) -> pd.Series:
    """A short name of what differs between runs besides policy and capacity (for subplot titles)."""
    parts = varying(runs, keys)
    if not parts:
        return pd.Series([""] * len(runs), index=runs.index)
    return runs[parts].astype(str).agg(" / ".join, axis=1)


MAX_BARS = 16
SLICE_KEYS = ["trace", "profile", "profile_set", "capacity", "scope", "mode", "seed"]


def comparable_slice(runs: pd.DataFrame, limit: int = MAX_BARS) -> tuple[pd.DataFrame, list[str]]:
    """At most `limit` runs that differ in policy first: fix the other settings one at a time (the
    capacity at its median, others at their first value) until few enough remain.

    Returns the runs and what was fixed ("capacity = 10%"), for the caption.
    """
    fixed: list[str] = []
    for key in SLICE_KEYS:
        if len(runs) <= limit:
            break
        values = sorted(set(runs[key].astype(str)), key=natural_key)
        if len(values) < 2:
            continue
        if key == "capacity":
            by_bytes = runs.drop_duplicates("capacity").sort_values("capacity_bytes")["capacity"].astype(str).tolist()
            choice = by_bytes[len(by_bytes) // 2]
        else:
            choice = values[0]
        runs = runs[runs[key].astype(str) == choice]
        fixed.append(f"{key} = {choice}")
    return runs.head(limit), fixed


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """policy @ capacity, plus whatever else varies (trace, profile, ...), for bar and heatmap rows."""
    label = runs["policy"].astype(str)
    if runs["capacity"].nunique() > 1:
        label = label + " @ " + runs["capacity"].astype(str)
    extra = varying(runs, ["trace", "profile", "profile_set", "scope", "mode", "seed"])
    if extra:
        label = label + " [" + runs[extra].astype(str).agg(", ".join, axis=1) + "]"
    return label


def _mean_over_seeds(runs: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    return runs.groupby(keys, sort=True, dropna=False)[values].mean().reset_index()


def mrc_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Hit rate per policy and capacity share, for policies measured at two or more capacities."""
    ok = ok_runs(runs).copy()
    if ok.empty:
        return ok
    ok["panel"] = panel_column(ok)
    ok["hit_rate"] = ok["hit_rate"].astype(float)
    frame = _mean_over_seeds(ok, ["panel", "policy", "offline", "capacity_share"], ["hit_rate"])
    counts = frame.groupby(["panel", "policy"])["capacity_share"].transform("nunique")
    return frame[counts >= 2].reset_index(drop=True)


def miss_breakdown_frame(runs: pd.DataFrame) -> pd.DataFrame:
    ok, _ = comparable_slice(ok_runs(runs), MAX_LABELS)
    ok = ok.copy()
    ok["label"] = run_labels(ok)
    cols = ["compulsory", "capacity_misses", "collision"]
    for c in cols:
        ok[c] = ok[c].astype(float)
    frame = ok.groupby("label", sort=False)[cols].mean().reset_index()
    return frame.head(MAX_LABELS)


def latency_frame(runs: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """Wall-time parts and copy busy time per link of every timed run (long format)."""
    timed = ok_runs(runs)
    timed = timed[timed["engine"] == "timed"].copy()
    if timed.empty:
        return pd.DataFrame(columns=["label", "component", "seconds", "bound_s"])
    timed, _ = comparable_slice(timed)
    timed = timed.copy()
    timed["label"] = run_labels(timed)
    rows = []
    for _, r in timed.iterrows():
        bound = r["time_bound_s"]
        for comp, col in (("compute", "compute_s"), ("cpu_wait", "cpu_wait_s"), ("stall", "stall_s")):
            rows.append({"label": r["label"], "component": comp, "seconds": r[col], "bound_s": bound})
        for _, link in links[links["run_id"] == r["run_id"]].iterrows():
            # busy time per copy engine / queue slot: summed over N of them it exceeds the wall time
            util = link.get("utilization")
            per_engine = (float(util) * float(r["total_s"]) if util is not None and pd.notna(util)
                          and pd.notna(r["total_s"]) else link["busy_s"])
            rows.append({"label": r["label"], "component": f"copy {link['link']}", "seconds": per_engine,
                         "bound_s": bound, "utilization": util})
    return pd.DataFrame(rows)


def layer_heatmap_frame(runs: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    ok, _ = comparable_slice(ok_runs(runs), MAX_LABELS)
    ok = ok.copy()
    if ok.empty or layers.empty:
        return pd.DataFrame(columns=["label", "layer", "hit_rate"])
    ok["label"] = run_labels(ok)
    ok = ok.drop_duplicates("label")
    ok["__order"] = range(len(ok))
    merged = layers.merge(ok[["run_id", "label", "__order"]], on="run_id", how="inner")
    merged = merged.sort_values(["__order", "layer"], kind="mergesort")
    merged["hit_rate"] = merged["hit_rate"].astype(float)
    merged["layer"] = merged["layer"].astype(int)
    return merged[["label", "layer", "hit_rate"]]


def axis_values(runs: pd.DataFrame, axis: str) -> pd.Series:
    """The numbers a what-if axis took per run: capacity share for "capacity", else the profile field."""
    if axis == CAPACITY_AXIS:
        return runs["capacity_share"].astype(float)
    settings = settings_columns(runs)
    if axis not in settings.columns:
        raise UserError(f"no run sets profile field {axis!r}", "what-if axis")
    return settings[axis]


def axis_ticks(runs: pd.DataFrame, axis: str) -> dict[float, str]:
    """Number -> the text the user gave for it ("10%", "16 GB/s"), for tick labels."""
    ok = ok_runs(runs)
    numbers = axis_values(ok, axis)
    if axis == CAPACITY_AXIS:
        texts = ok["capacity"].astype(str)
    else:
        texts = ok["profile_set"].map(lambda t: dict(p.split("=", 1) for p in str(t).split(";") if "=" in p)
                                      .get(axis, ""))
    return {float(n): str(t) for n, t in zip(numbers, texts) if n == n}


def whatif_frame(runs: pd.DataFrame, x: str, y: str, value: str) -> pd.DataFrame:
    """`value` per policy at each (x, y) grid point, averaged over seeds."""
    ok = ok_runs(runs).copy()
    ok["__x"] = axis_values(ok, x).to_numpy()
    ok["__y"] = axis_values(ok, y).to_numpy()
    ok[value] = ok[value].astype(float)
    frame = ok.groupby(["policy", "__x", "__y"], sort=True)[value].mean().reset_index()
    return frame.rename(columns={"__x": x, "__y": y})


def prefetch_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Precision and coverage of every timed run that prefetched, with its speed."""
    timed = ok_runs(runs)
    timed = timed[(timed["engine"] == "timed") & (timed["prefetch"] != "none")].copy()
    if timed.empty:
        return pd.DataFrame(columns=["precision", "coverage", "tpot_mean_s", "label", "series"])
    used = timed["prefetch_useful"].astype(float) + timed["prefetch_late"].astype(float)
    issued = timed["prefetch_issued"].astype(float)
    timed["precision"] = np.where(issued > 0, used / issued.where(issued > 0, 1), np.nan)
    misses = timed["misses"].astype(float)
    timed["coverage"] = np.where(used + misses > 0, used / (used + misses).where(used + misses > 0, 1), np.nan)
    timed["label"] = timed["prefetch"].astype(str)
    # a series is one configuration with its prefetchers: its line shows what accuracy buys there
    keys = ["eviction"] + varying(timed, ["capacity", "trace", "profile", "profile_set", "scope", "seed"])
    timed["series"] = timed[keys].astype(str).agg(" @ ".join, axis=1)
    return timed[["precision", "coverage", "tpot_mean_s", "label", "series"]].reset_index(drop=True)
