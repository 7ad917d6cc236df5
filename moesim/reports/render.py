"""The report: one self-contained HTML file (plots inlined as base64 PNG, no network) and a
Markdown summary, both written atomically. What it shows depends on what the runs hold: count-only
runs give miss-ratio curves, miss kinds, per-layer hit rates and the ranking against Belady; timed
runs add the latency breakdown against the time bound, a timeline, what-if heatmaps over varied
hardware and prefetch accuracy against speed.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from moesim.atomic_io import write_texts_atomic
from moesim.errors import UserError
from moesim.safe_text import markdown_cell, markdown_line
from moesim.reports import frames, plots
from moesim.reports.ranking import ranking_table
from moesim.reports.tables import ResultSet

MAX_TABLE_ROWS = 300
RUN_COLUMNS = ["policy", "trace", "profile", "profile_set", "capacity", "scope", "mode", "seed", "status", "requests",
               "hit_rate", "misses", "compulsory", "capacity_misses", "collision", "bytes_fetched", "total_s",
               "tpot_mean_s", "ttft_mean_s", "tokens_per_s", "energy_j", "error", "run_id"]
METRIC_LABELS = {"tpot_mean_s": ("TPOT (ms)", 1e3), "ttft_mean_s": ("TTFT (ms)", 1e3), "total_s": ("total time (s)", 1),
                 "hit_rate": ("hit rate", 1), "tokens_per_s": ("tokens/s", 1), "misses": ("misses", 1),
                 "energy_j": ("energy (J)", 1)}


@dataclass(frozen=True)
class WhatIfAxes:
    """The two varied settings a what-if heatmap spans ("capacity" or a profile field path)."""

    x: str
    y: str
    values: tuple[str, ...] = ()


@dataclass
class Figure:
    key: str
    title: str
    caption: str
    png: bytes


@dataclass
class Report:
    title: str
    summary: list[str]
    notes: list[str]
    ranking: pd.DataFrame
    failed: pd.DataFrame
    runs: pd.DataFrame
    figures: list[Figure] = field(default_factory=list)


# ---- building ----------------------------------------------------------------------------------
def _figure(report: Report, key: str, title: str, caption: str, make: Callable[[], Any]) -> None:
    fig = make()
    report.figures.append(Figure(key, title, caption, plots.png_bytes(fig)))


def detect_axes(runs: pd.DataFrame) -> WhatIfAxes | None:
    """Two settings that vary across the runs (profile fields first, then capacity), if there are two."""
    ok = frames.ok_runs(runs)
    settings = frames.settings_columns(ok)
    axes = [c for c in settings.columns if settings[c].nunique() > 1]
    if ok["capacity_share"].nunique() > 1:
        axes.append(frames.CAPACITY_AXIS)
    if len(axes) < 2:
        return None
    return WhatIfAxes(axes[0], axes[1])


def build(results: ResultSet, title: str = "moesim report", whatif: WhatIfAxes | None = None) -> Report:
    runs = results.runs
    ok = frames.ok_runs(runs)
    failed = runs[runs["status"] != "ok"]
    timed = ok[ok["engine"] == "timed"]
    notes = list(results.notes)
    summary = [
        f"{len(runs)} runs ({len(ok)} ok, {len(failed)} failed); {len(timed)} timed, {len(ok) - len(timed)} count-only",
        "traces: " + ", ".join(sorted(set(runs["trace"]))) if len(runs) else "no runs",
    ]
    profiles = sorted(p for p in set(runs["profile"]) if p)
    if profiles:
        summary.append("hardware profiles: " + ", ".join(profiles))
    if len(ok) and len(timed) == 0:
        notes.append("count-only runs: hit and miss counts, no timing (TTFT/TPOT, stalls and energy come from "
                     "timed runs: a hardware profile and the timing engine)")
    if len(ok) and not ok["offline"].any() and ok["belady_misses"].isna().all():
        notes.append("no Belady run among the results: the distance to the miss bound is empty "
                     "(add belady to the eviction policies)")
    if (ok["lossy"]).any():
        notes.append("lossy miss handling (low-bit fetch, dropped experts) changes the model's output: "
                     "those runs are marked lossy")
    report = Report(title=title, summary=summary, notes=notes, ranking=ranking_table(runs), failed=failed,
                    runs=frames.reading_order(runs))
    if ok.empty:
        return report

    mrc = frames.mrc_frame(runs)
    if len(mrc):
        _figure(report, "mrc", "Miss-ratio curves",
                "Hit rate against cache capacity (share of all routed expert bytes) per policy; dashed: offline "
                "bounds such as Belady.", lambda: plots.plot_miss_ratio_curves(mrc))
    breakdown = frames.miss_breakdown_frame(runs)
    if len(breakdown) and breakdown[["compulsory", "capacity_misses", "collision"]].to_numpy().sum() > 0:
        _figure(report, "misses", "Misses by kind",
                "Compulsory (first use), capacity and collision (evicted earlier in the same pass) misses.",
                lambda: plots.plot_miss_breakdown(breakdown))
    latency = frames.latency_frame(runs, results.links)
    if len(latency):
        _, fixed = frames.comparable_slice(timed)
        _figure(report, "latency", "Latency breakdown",
                "Per run: compute, CPU wait and stall (the wall time, left bar) and copy-engine busy time per "
                "link (right bar, overlapping compute); the black line is the time bound."
                + (f" Shown: {', '.join(fixed)}." if fixed else ""),
                lambda: plots.plot_latency_breakdown(latency))
    if len(results.timeline):
        # the run with the most stall shows copies and compute interacting best
        with_timeline = ok[ok["run_id"].isin(set(results.timeline["run_id"]))]
        pick = with_timeline.assign(_stall=with_timeline["stall_s"].astype(float).fillna(0)) \
            .sort_values(["_stall", "run_id"], ascending=[False, True], kind="mergesort")
        run_id = pick["run_id"].iloc[0] if len(pick) else sorted(set(results.timeline["run_id"]))[0]
        window = results.timeline[results.timeline["run_id"] == run_id]
        labels = frames.run_labels(ok)
        label = labels[ok["run_id"] == run_id].iloc[0] if (ok["run_id"] == run_id).any() else run_id
        _figure(report, "timeline", f"Timeline: {label}",
                "A window of passes: the compute stream (dense, expert, stall) and each copy engine or the SSD "
                "queue (demand copies orange, prefetch copies green).", lambda: plots.plot_timeline(window))
    heat = frames.layer_heatmap_frame(runs, results.layers)
    if len(heat):
        _figure(report, "layers", "Hit rate per layer", "Hit rate of each layer (columns) for each run (rows).",
                lambda: plots.plot_layer_heatmap(heat))
    axes = whatif or detect_axes(runs)
    if axes is not None:
        values = list(axes.values) or (["tpot_mean_s", "hit_rate"] if len(timed) else ["hit_rate"])
        for value in values:
            wf = frames.whatif_frame(runs, axes.x, axes.y, value)
            if wf[value].notna().any():
                label, scale = METRIC_LABELS.get(value, (value, 1))
                _figure(report, f"whatif-{value}", f"What-if: {label} over {axes.x} x {axes.y}",
                        f"{label} at each grid point, one panel per policy.",
                        lambda wf=wf, label=label, scale=scale, value=value: plots.plot_whatif_heatmap(
                            wf, axes.x, axes.y, value, value_label=label, scale=scale,
                            x_label=_axis_label(axes.x), y_label=_axis_label(axes.y),
                            x_ticks=frames.axis_ticks(runs, axes.x), y_ticks=frames.axis_ticks(runs, axes.y)))
    pf = frames.prefetch_frame(runs)
    if len(pf) and pf["precision"].notna().any() and pf["tpot_mean_s"].notna().any():
        _figure(report, "prefetch", "Prefetch accuracy vs speed",
                "Precision of each prefetcher against TPOT; colour: coverage (share of would-be misses it served).",
                lambda: plots.plot_prefetch_accuracy(pf))
    return report


def _axis_label(axis: str) -> str:
    return "cache capacity" if axis == frames.CAPACITY_AXIS else axis


# ---- formatting --------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)


def table_rows(df: pd.DataFrame, columns: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c in columns if c in df.columns and not (df[c].isna() | (df[c].astype(str) == "")).all()]
    rows = [[_fmt(v) for v in r] for r in df[cols].head(MAX_TABLE_ROWS).itertuples(index=False, name=None)]
    return cols, rows


def _html_table(df: pd.DataFrame, columns: Sequence[str]) -> str:
    cols, rows = table_rows(df, columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    more = f"<p class='note'>{len(df) - MAX_TABLE_ROWS} more rows not shown.</p>" if len(df) > MAX_TABLE_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _md_table(df: pd.DataFrame, columns: Sequence[str]) -> str:
    cols, rows = table_rows(df, columns)
    if not cols:
        return ""
    lines = ["| " + " | ".join(markdown_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(markdown_cell(v) for v in r) + " |" for r in rows]
    if len(df) > MAX_TABLE_ROWS:
        lines.append(f"\n{len(df) - MAX_TABLE_ROWS} more rows not shown.")
    return "\n".join(lines)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.note{color:#8a5300;font-size:.9em}
"""


def to_html(report: Report) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(report.title)}</h1>"]
    parts += [f"<p>{html.escape(s)}</p>" for s in report.summary]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in report.notes]
    if len(report.ranking):
        parts.append("<h2>Policy ranking and distance to the bounds</h2>")
        parts.append(_html_table(report.ranking, list(report.ranking.columns)))
    for fig in report.figures:
        data = base64.b64encode(fig.png).decode("ascii")
        parts.append(f"<h2>{html.escape(fig.title)}</h2><figure id='{html.escape(fig.key)}'>"
                     f"<img alt='{html.escape(fig.title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    if len(report.failed):
        parts.append("<h2>Failed runs</h2>")
        parts.append(_html_table(report.failed, ["policy", "trace", "profile", "capacity", "scope", "mode", "seed",
                                                 "error", "run_id"]))
    parts.append("<h2>All runs</h2>")
    parts.append(_html_table(report.runs, RUN_COLUMNS))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def to_markdown(report: Report) -> str:
    lines = [f"# {markdown_line(report.title)}", ""]
    lines += [f"- {markdown_line(s)}" for s in report.summary]
    lines += [f"- note: {markdown_line(n)}" for n in report.notes]
    if len(report.ranking):
        lines += ["", "## Policy ranking and distance to the bounds", "", _md_table(report.ranking,
                                                                                   list(report.ranking.columns))]
    if report.figures:
        lines += ["", "## Figures (in the HTML report)", ""]
        lines += [f"- {f.title}: {f.caption}" for f in report.figures]
    if len(report.failed):
        lines += ["", "## Failed runs", "", _md_table(report.failed, ["policy", "trace", "profile", "capacity",
                                                                     "error", "run_id"])]
    lines += ["", "## All runs", "", _md_table(report.runs, RUN_COLUMNS), ""]
    return "\n".join(lines)


def write_report(results: ResultSet, html_path: str | os.PathLike[str], md_path: str | os.PathLike[str] | None = None,
                 title: str = "moesim report", whatif: WhatIfAxes | None = None) -> Report:
    """Build the report of `results` and write it as HTML (and Markdown), atomically."""
    report = build(results, title, whatif)
    files = {os.fspath(html_path): to_html(report)}
    where = {os.fspath(html_path): "--out"}
    if md_path is not None:
        if os.path.realpath(md_path) == os.path.realpath(html_path):
            raise UserError(f"{md_path} is also the --out file: give two different paths", "--md")
        files[os.fspath(md_path)] = to_markdown(report)
        where[os.fspath(md_path)] = "--md"
    write_texts_atomic(files, where)  # one unit: never a new HTML beside an old Markdown
    return report
