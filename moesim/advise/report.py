"""`moesim advise --out DIR`: advise.json, runs.csv and one self-contained advise.html.

The page opens with the answer (best configuration per machine, its gain over the baseline, its
distance to the time bound, engine options and warnings), then one figure per machine (the
fastest configurations timed, the baseline and the bound), and the table of every timed run last.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from moesim.advise.answer import OBJECTIVE_LABELS
from moesim.advise.render import describe_config, headline, machine_ranking, ms, ratio
from moesim.atomic_io import write_texts_atomic
from moesim.reports import plots
from moesim.reports.render import CSS, answer_html
from moesim.units import format_bytes

TOP_N = 12  # configurations per machine in the figure


def runs_frame(answer: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for m in answer["machines"]:
        for r in m["runs"]:
            flat = {"profile": m["profile"], **{f"{k}": v for k, v in r["config"].items()}}
            flat.update({k: v for k, v in r.items() if k not in ("config", "profile", "engine_options")})
            rows.append(flat)
    return pd.DataFrame(rows)


def summary_lines(answer: dict[str, Any]) -> tuple[list[str], list[str]]:
    objective = answer["objective"]
    lines, warnings = [], [f"{w}" for w in answer["warnings"]]
    for m in answer["machines"]:
        best = m["best"].get(objective)
        if best is None:
            lines.append(f"{m['profile']}: nothing could be timed ({'; '.join(m['notes'])})")
            continue
        text = (f"{m['profile']}: {OBJECTIVE_LABELS[objective]} {headline(best, objective)} with "
                f"{describe_config(best['config'])}")
        if m["baseline"] is not None:
            text += (f"; baseline (LRU, no prefetch) {headline(m['baseline'], objective)}, gain "
                     f"{ratio(best.get('gain_over_baseline'))}")
        if objective in ("tpot", "ttft") and best.get(f"{objective}_bound_s") is not None:
            text += (f"; {ratio(best.get(f'{objective}_over_bound'))} the time bound "
                     f"({ms(best.get(f'{objective}_bound_s'))})")
        text += f"; VRAM {format_bytes(best['vram_bytes'])}, DRAM {format_bytes(best['dram_bytes'])}"
        for opt in best.get("engine_options", []):
            text += f"; {opt['engine']}: {opt['options']}"
        for change in best.get("engine_changes", []):
            text += f"; needs an engine change: {change}"
        lines.append(text)
        warnings += [f"{m['profile']}: {w}" for w in m["warnings"]]
    ranked = machine_ranking(answer)
    if len(ranked) > 1:
        lines.append(f"machines by best {OBJECTIVE_LABELS[objective]}: " + ", ".join(f"{n} {v}" for n, v in ranked))
    if answer["synthetic_trace"] and not any("synthetic" in w for w in warnings):
        warnings.append("synthetic trace")
    return lines, warnings


def machine_figure(m: dict[str, Any], objective: str) -> Any:
    """The fastest configurations timed on one machine, the baseline marked, the bound as a line."""
    key = {"tpot": "tpot_s", "ttft": "ttft_s", "throughput": "tokens_per_s", "energy": "energy_per_token_j"}[objective]
    runs = [r for r in m["runs"] if r.get(key) is not None]
    reverse = objective == "throughput"
    runs = sorted(runs, key=lambda r: ((-r[key]) if reverse else r[key], r["index"]))[:TOP_N]
    base = m["baseline"]
    if base is not None and base.get(key) is not None and all(r["config"] != base["config"] for r in runs):
        runs.append(base)
    scale, unit = ((1e3, "ms") if key.endswith("_s") else (1.0, key.replace("_", " ")))
    fig = plots.new_figure(9.0, 0.9 + 0.32 * max(len(runs), 1))
    ax = fig.subplots()
    labels = [describe_config(r["config"]) for r in runs]
    values = [r[key] * scale for r in runs]
    colours = ["#7f7f7f" if base is not None and r["config"] == base["config"] else "#1f77b4" for r in runs]
    ax.barh(range(len(runs)), values, color=colours)
    ax.set_yticks(range(len(runs)), [label if len(label) < 90 else label[:87] + "..." for label in labels],
                  fontsize=7)
    ax.invert_yaxis()
    bound = (runs[0].get(f"{objective}_bound_s") if runs and objective in ("tpot", "ttft") else None)
    if bound:
        ax.axvline(bound * scale, color="black", linewidth=2, label="time bound")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(f"{OBJECTIVE_LABELS[objective]} ({unit}); grey: baseline (LRU, no prefetch)")
    ax.set_title(f"{m['profile']}: fastest configurations timed", fontsize=10, loc="left")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def to_html(answer: dict[str, Any], figures: list[tuple[str, bytes]], runs: pd.DataFrame) -> str:
    lines, warnings = summary_lines(answer)
    title = f"moesim advise: {answer['model']}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>", answer_html(lines, warnings)]
    parts.append(f"<p>trace: {html.escape(answer['trace'])}; objective {OBJECTIVE_LABELS[answer['objective']]}; "
                 f"searched in {answer['elapsed_s']:.1f} s of a {answer['budget_s']:.0f} s budget.</p>")
    for m in answer["machines"]:
        s = m["searched"]
        parts.append(f"<p>{html.escape(m['profile'])}: {s['configurations']} configurations, {s['timed']} timed, "
                     f"{s['pruned_by_bound']} pruned by the time bound, {s['not_reached']} not reached.</p>")
    for name, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(name)}</h2><figure><img alt='{html.escape(name)}' "
                     f"src='data:image/png;base64,{data}'></figure>")
    parts.append("<h2>Every timed configuration</h2>")
    parts.append(runs.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.4g}"))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_advise_report(answer: dict[str, Any], out: str | Path) -> dict[str, Any]:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    runs = runs_frame(answer)
    figures = [(f"{m['profile']}: fastest configurations", plots.png_bytes(machine_figure(m, answer["objective"])))
               for m in answer["machines"] if m["runs"]]
    # one unit: never a new report beside an old answer
    write_texts_atomic({folder / "advise.json": json.dumps(answer, indent=2, sort_keys=True, default=float) + "\n",
                        folder / "runs.csv": runs.to_csv(index=False),
                        folder / "advise.html": to_html(answer, figures, runs)})
    return {"html": str(folder / "advise.html"), "json": str(folder / "advise.json"),
            "csv": str(folder / "runs.csv"), "figures": len(figures)}
