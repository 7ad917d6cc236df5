"""Report plots. Each takes one tidy DataFrame (columns in docs/metrics.md, "Plot inputs") and
returns a matplotlib Figure drawn with the Agg canvas: no display, no pyplot state, safe in workers.

`png_bytes(fig)` renders one to PNG without a timestamp or version stamp, so the same data gives
the same bytes.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

KIND_COLOURS = {
    "dense": "#9e9e9e",
    "expert": "#1f77b4",
    "stall": "#d62728",
    "demand": "#ff7f0e",
    "prefetch": "#2ca02c",
}
COMPONENT_COLOURS = {"compute": "#1f77b4", "cpu_wait": "#9467bd", "stall": "#d62728"}
LINK_COLOURS = ["#ff7f0e", "#2ca02c", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
# What a person calls each link of a hardware profile (moesim/sim/topology.py names them).
LINK_NAMES = {
    "h2d": "host DRAM -> GPU (PCIe)",
    "d2h": "GPU -> host DRAM (PCIe)",
    "c2c": "host DRAM -> GPU (NVLink-C2C)",
    "ssd_h": "SSD -> host DRAM",
    "ssd_d": "flash/SSD -> device memory",
}
MIN_TICK_RATIO = 1.35  # log-axis ticks closer than this factor would print on top of each other


def link_name(link: str) -> str:
    """'flash/SSD -> device memory (ssd_d)': the plain name first, the profile's key after it."""
    return f"{LINK_NAMES[link]} ({link})" if link in LINK_NAMES else link


def lane_name(lane: str) -> str:
    """Timeline lanes are '<link> engine N' or '<link> queue'; name the link plainly."""
    head, _, rest = lane.partition(" ")
    return f"{LINK_NAMES[head]}: {rest}" if head in LINK_NAMES and rest else lane


def spaced_ticks(values: Sequence[float], min_ratio: float = MIN_TICK_RATIO) -> list[float]:
    """The data's own x values as ticks, skipping any within `min_ratio` of the last one kept
    (a log axis's default minor labels collide: '0.9%1%', '8%9%10%')."""
    kept: list[float] = []
    for v in sorted({float(x) for x in values if x > 0}):
        if not kept or v / kept[-1] >= min_ratio:
            kept.append(v)
    return kept


def new_figure(width: float = 7.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _require(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {', '.join(missing)}")


def _panels(df: pd.DataFrame, panel: str | None) -> list[tuple[str, pd.DataFrame]]:
    from moesim.reports.frames import natural_key

    if panel is None or panel not in df.columns:
        return [("", df)]
    groups = [(str(k), g) for k, g in df.groupby(panel, sort=False)]
    return sorted(groups, key=lambda kv: natural_key(kv[0]))


def _grid(fig: Figure, n: int, max_cols: int = 3) -> list:
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


# ---- miss-ratio curves -------------------------------------------------------------------------
def plot_miss_ratio_curves(df: pd.DataFrame, x: str = "capacity_share", y: str = "hit_rate",
                           panel: str | None = "panel") -> Figure:
    """Hit rate against capacity, one line per policy; offline policies (Belady) dashed as bounds.

    Columns: policy, `x` (capacity_share, a fraction of all routed bytes, or capacity_bytes),
    `y` (hit_rate), offline (bool); optional `panel` (one subplot per value, e.g. the trace).
    """
    _require(df, ["policy", x, y, "offline"], "miss-ratio curves")
    panels = _panels(df, panel)
    fig = new_figure(6.0 * min(len(panels), 3), 4.0 * math.ceil(len(panels) / 3))
    for ax, (name, part) in zip(_grid(fig, len(panels)), panels):
        for i, ((policy, offline), g) in enumerate(part.groupby(["policy", "offline"], sort=True)):
            g = g.sort_values(x)
            # markers differ so that policies with identical curves (LRU and Least-Stale often) stay visible
            style = dict(linestyle="--", color="black", marker="x") if offline else \
                dict(marker="osD^vP*"[i % 7], markersize=8 - (i % 4), alpha=0.9)
            label = f"{policy} (bound)" if offline else policy
            ax.plot(g[x].astype(float), 100 * g[y].astype(float), label=label, **style)
        values = part[x].astype(float)
        log = bool(len(values) and values.min() > 0 and values.max() / values.min() >= 10)
        if log:
            ax.set_xscale("log")
        if x == "capacity_share":
            share = FuncFormatter(lambda v, _: f"{100 * v:.3g}%")
            # ticks at the capacities that were run, spaced so that labels never touch
            ax.set_xticks(spaced_ticks(values) if log else sorted(set(values)))
            ax.xaxis.set_major_formatter(share)
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="x", which="both", labelsize=8)
            ax.set_xlabel("cache capacity (share of all routed expert bytes)")
        else:
            ax.set_xlabel(x)
        ax.set_ylabel("hit rate (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.set_title(name or "hit rate vs capacity")
        ax.legend(fontsize=8)
    return fig


# ---- miss types --------------------------------------------------------------------------------
def plot_miss_breakdown(df: pd.DataFrame) -> Figure:
    """Misses split into compulsory / capacity / collision, one stacked bar per label.

    Columns: label, compulsory, capacity_misses, collision.
    """
    _require(df, ["label", "compulsory", "capacity_misses", "collision"], "miss breakdown")
    fig = new_figure(max(6.0, 0.5 * len(df) + 2), 4.0)
    ax = fig.subplots()
    pos = np.arange(len(df))
    bottom = np.zeros(len(df))
    for col, colour in (("compulsory", "#7f7f7f"), ("capacity_misses", "#1f77b4"), ("collision", "#d62728")):
        values = df[col].astype(float).to_numpy()
        ax.bar(pos, values, bottom=bottom, color=colour, label=col.replace("_misses", ""))
        bottom += values
    ax.set_xticks(pos, df["label"].astype(str), rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("misses")
    ax.set_title("misses by kind")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# ---- latency breakdown -------------------------------------------------------------------------
def plot_latency_breakdown(df: pd.DataFrame) -> Figure:
    """Per label, where the time went: a stacked bar of compute / CPU wait / stall (the run's wall
    time) beside one bar per link of how long that link was busy, with the time bound as a black line.

    A link with N copy engines or queue slots can be busy N x the wall time when busy time is summed
    over them; the right bars show busy time per engine or slot (utilisation x wall time), so they
    never exceed the left bar, and print the utilisation above them.

    Columns: label, component ("compute", "cpu_wait", "stall", or "copy <link>"), seconds, bound_s;
    optional utilization (for "copy" rows: busy share of N engines x wall time).
    """
    _require(df, ["label", "component", "seconds", "bound_s"], "latency breakdown")
    labels = list(dict.fromkeys(df["label"].astype(str)))
    fig = new_figure(max(6.0, 1.1 * len(labels) + 2), 4.8)
    ax = fig.subplots()
    links = sorted({c for c in df["component"] if str(c).startswith("copy ")})
    n_bars = 1 + len(links)
    width = 0.8 / n_bars
    link_colour = {c: LINK_COLOURS[i % len(LINK_COLOURS)] for i, c in enumerate(links)}
    shown: set[str] = set()
    for i, label in enumerate(labels):
        part = df[df["label"].astype(str) == label]
        left = i - 0.4 + width / 2
        bottom = 0.0
        for comp in ("compute", "cpu_wait", "stall"):
            sec = float(part.loc[part["component"] == comp, "seconds"].sum())
            if sec <= 0:
                continue
            ax.bar(left, sec * 1e3, width, bottom=bottom * 1e3, color=COMPONENT_COLOURS[comp],
                   label=None if comp in shown else comp)
            shown.add(comp)
            bottom += sec
        for j, comp in enumerate(links, start=1):
            rows = part[part["component"] == comp]
            sec = float(rows["seconds"].sum())
            if sec <= 0:
                continue
            name = f"{link_name(comp[len('copy '):])} busy"
            ax.bar(left + j * width, sec * 1e3, width, color=link_colour[comp], label=None if name in shown else name)
            shown.add(name)
            if "utilization" in rows.columns and rows["utilization"].notna().any():
                util = float(rows["utilization"].dropna().iloc[0])
                ax.annotate(f"{100 * util:.0f}%", (left + j * width, sec * 1e3), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
        bound = part["bound_s"].astype(float).dropna()
        if len(bound):
            ax.hlines(float(bound.iloc[0]) * 1e3, i - 0.4, i + 0.4, colors="black", linewidth=2,
                      label=None if "time bound" in shown else "time bound")
            shown.add("time bound")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("time (ms)")
    ax.set_title("latency breakdown: wall time (stacked) | each link's busy time per engine or queue slot "
                 "(% = utilisation)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# ---- timeline ----------------------------------------------------------------------------------
def plot_timeline(df: pd.DataFrame) -> Figure:
    """A window of passes: the compute stream (dense, expert, stall) and each copy engine or the SSD
    queue (demand copies orange, prefetch copies green), against time.

    Columns: lane, kind, start_s, end_s; optional pass (thin lines where passes start).
    """
    _require(df, ["lane", "kind", "start_s", "end_s"], "timeline")
    lanes = ["compute"] if (df["lane"] == "compute").any() else []
    lanes += sorted(set(df["lane"]) - {"compute"})
    fig = new_figure(10.0, 1.0 + 0.6 * len(lanes))
    ax = fig.subplots()
    t0 = float(df["start_s"].min()) if len(df) else 0.0
    for row, lane in enumerate(lanes):
        part = df[df["lane"] == lane]
        for kind, g in part.groupby("kind", sort=True):
            spans = list(zip((g["start_s"] - t0) * 1e3, (g["end_s"] - g["start_s"]) * 1e3))
            ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=KIND_COLOURS.get(str(kind), "#444444"),
                           alpha=0.85 if lane == "compute" else 0.6, label=str(kind))
    if "pass" in df.columns and (df["lane"] == "compute").any():
        starts = df[df["lane"] == "compute"].groupby("pass")["start_s"].min()
        for s in starts.iloc[1:]:
            ax.axvline((float(s) - t0) * 1e3, color="black", linewidth=0.5, alpha=0.4)
    ax.set_yticks(range(len(lanes)), [lane_name(str(lane)) for lane in lanes])
    ax.invert_yaxis()
    ax.set_xlabel("time from window start (ms)")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles))
    # above the plot, not over the bars it explains
    ax.legend(unique.values(), unique.keys(), fontsize=8, ncol=len(unique), loc="lower right",
              bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title("timeline: compute stream and copies", loc="left")
    return fig


# ---- per-layer heatmap -------------------------------------------------------------------------
def plot_layer_heatmap(df: pd.DataFrame, value: str = "hit_rate") -> Figure:
    """Hit rate per layer (columns) for each label (rows).

    Columns: label, layer, `value` (hit_rate).
    """
    _require(df, ["label", "layer", value], "layer heatmap")
    grid = df.pivot_table(index="label", columns="layer", values=value, aggfunc="mean", sort=True)
    grid = grid.reindex(list(dict.fromkeys(df["label"])))  # rows in the order the frame gives them
    fig = new_figure(max(6.0, 0.25 * grid.shape[1] + 3), max(2.5, 0.35 * grid.shape[0] + 1.5))
    ax = fig.subplots()
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                      interpolation="nearest")
    ax.set_yticks(range(grid.shape[0]), grid.index.astype(str), fontsize=8)
    step = max(1, grid.shape[1] // 16)
    ax.set_xticks(range(0, grid.shape[1], step), [str(c) for c in grid.columns[::step]])
    ax.set_xlabel("layer")
    fig.colorbar(image, ax=ax, label=value.replace("_", " "))
    ax.set_title(f"{value.replace('_', ' ')} per layer")
    return fig


# ---- what-if heatmaps --------------------------------------------------------------------------
def _tick(v: float, names: dict[float, str] | None) -> str:
    return (names or {}).get(float(v)) or f"{v:.3g}"


def _digits(vmin: float, vmax: float) -> int:
    """Significant digits that tell apart values spread over [vmin, vmax]."""
    top = max(abs(vmin), abs(vmax))
    if top == 0 or vmax == vmin:
        return 3
    return int(min(6, 3 + max(0, math.ceil(-math.log10((vmax - vmin) / top)))))


def plot_whatif_heatmap(df: pd.DataFrame, x: str, y: str, value: str, panel: str | None = "policy",
                        x_label: str | None = None, y_label: str | None = None,
                        value_label: str | None = None, scale: float = 1.0,
                        x_ticks: dict[float, str] | None = None, y_ticks: dict[float, str] | None = None) -> Figure:
    """`value` over a grid of two varied settings, one panel per `panel` value, cells annotated.

    Columns: `x`, `y` (numbers: the varied settings), `value` (a metric), optional `panel`.
    `scale` multiplies values for display (1e3 shows seconds as ms); `x_ticks`/`y_ticks` name the
    grid values as the user wrote them ("16 GB/s").
    """
    _require(df, [x, y, value], "what-if heatmap")
    panels = _panels(df, panel)
    fig = new_figure(5.0 * min(len(panels), 3), 4.0 * math.ceil(len(panels) / 3))
    finite = df[value].astype(float).to_numpy() * scale
    finite = finite[np.isfinite(finite)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = None
    axes = _grid(fig, len(panels))
    for ax, (name, part) in zip(axes, panels):
        grid = part.pivot_table(index=y, columns=x, values=value, aggfunc="mean", sort=True) * scale
        data = grid.to_numpy(dtype=float)
        image = ax.imshow(data, origin="lower", aspect="auto", cmap="magma_r", vmin=vmin, vmax=vmax,
                          interpolation="nearest")
        ax.set_xticks(range(grid.shape[1]), [_tick(float(v), x_ticks) for v in grid.columns], rotation=45,
                      fontsize=8)
        ax.set_yticks(range(grid.shape[0]), [_tick(float(v), y_ticks) for v in grid.index], fontsize=8)
        digits = _digits(vmin, vmax)
        for (r, c), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.{digits}g}", ha="center", va="center", fontsize=7,
                        color="white" if (v - vmin) > 0.5 * (vmax - vmin) else "black")
        ax.set_xlabel(x_label or x)
        ax.set_ylabel(y_label or y)
        ax.set_title(name or (value_label or value))
    if image is not None:
        fig.colorbar(image, ax=axes, label=value_label or value)
    return fig


# ---- prefetch accuracy vs speed ----------------------------------------------------------------
def plot_prefetch_accuracy(df: pd.DataFrame, speed: str = "tpot_mean_s", speed_label: str = "TPOT (ms)",
                           scale: float = 1e3) -> Figure:
    """How prefetch accuracy turns into speed: precision (x) against `speed` (y), point colour the
    coverage, one line per series (e.g. eviction policy), each point labelled with its prefetcher.

    Columns: precision, coverage, `speed`, label, series.
    """
    _require(df, ["precision", "coverage", speed, "label", "series"], "prefetch accuracy plot")
    fig = new_figure(7.0, 4.5)
    ax = fig.subplots()
    points = None
    for series, g in df.groupby("series", sort=True):
        g = g.sort_values("precision")
        ax.plot(g["precision"].astype(float), g[speed].astype(float) * scale, color="#999999", linewidth=1,
                zorder=1)
        points = ax.scatter(g["precision"].astype(float), g[speed].astype(float) * scale,
                            c=g["coverage"].astype(float), cmap="viridis", vmin=0, vmax=1, zorder=2,
                            label=str(series))
    # name each prefetcher once, at its fastest point
    for label, g in df.groupby("label", sort=True):
        best = g.loc[g[speed].astype(float).idxmin()]
        ax.annotate(str(label), (float(best["precision"]), float(best[speed]) * scale), fontsize=7,
                    xytext=(3, -10), textcoords="offset points")
    if points is not None:
        fig.colorbar(points, ax=ax, label="coverage (misses avoided by prefetch)")
    ax.set_xlabel("prefetch precision (used / issued)")
    ax.set_ylabel(speed_label)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title("prefetch accuracy vs speed")
    return fig
