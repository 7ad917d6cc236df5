"""Writes a validation: Parquet tables, summary.json and one self-contained HTML report, all atomically.

Layout of the output directory:
    runs.parquet      one row per (policy, capacity, prefetch): counts real vs sim, errors, throughput
    steps.parquet     per run and pass: measured and simulated step time, error
    rankings.parquet  per (capacity, prefetch): policy order real vs sim, Kendall tau
    summary.json      the overall verdict
    report.html       the same, readable: counts, step errors, metric | real | sim | diff % per run, and
                      two plots (step times real vs sim; mean step per run), in moesim.reports' style
    report.md         the verdict and the metric | real | sim | diff % tables (for results/ READMEs)
Parquet files carry the summary, versions and the trace hash in their schema metadata (b"moesim").
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from moesim.atomic_io import atomic_path, write_text_atomic
from moesim.kernels.validate import Validation
from moesim.reports.plots import new_figure, png_bytes
from moesim.reports.render import CSS


def write_validation(validation: Validation, out_dir: str | Path) -> dict[str, str]:
    """Write every output under `out_dir`; returns name -> path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from moesim.cli_version import versions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"summary": validation.summary, "versions": versions()}, sort_keys=True,
                      allow_nan=False).encode()
    paths: dict[str, str] = {}
    for name, frame in (("runs", validation.runs), ("steps", validation.steps), ("rankings", validation.rankings)):
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata({b"moesim": meta})
        path = out / f"{name}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        paths[name] = str(path)
    summary_path = out / "summary.json"
    write_text_atomic(summary_path, json.dumps(validation.summary, indent=2, sort_keys=True, allow_nan=False) + "\n")
    paths["summary"] = str(summary_path)
    report_path = out / "report.html"
    write_text_atomic(report_path, render_html(validation))
    paths["report"] = str(report_path)
    md_path = out / "report.md"
    write_text_atomic(md_path, render_markdown(validation))
    paths["markdown"] = str(md_path)
    return paths


# ---- HTML ----------------------------------------------------------------------------------------
_STYLE = CSS + """td.l,th.l{text-align:left}.bad{background:#fdd}.ok{background:#dfd}details{margin:.3em 0}"""


def render_html(validation: Validation) -> str:
    s = validation.summary
    runs = validation.runs
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>moesim validate</title>"
             f"<style>{_STYLE}</style></head><body>",
             "<h1>moesim validate: executor vs simulator</h1>",
             _kv([("trace hash", s.get("trace_hash")), ("trace model", s.get("trace_model")),
                  ("profile", f"{s.get('profile')} ({s.get('profile_source')})"), ("device", s.get("device")),
                  ("miss handling", s.get("miss")), ("scope", s.get("scope")), ("runs", s.get("runs")),
                  ("rounds per run (step times: median)", s.get("rounds"))])]
    if s.get("note"):
        parts.append(f"<p class='note'>{html.escape(s['note'])}</p>")
    verdict = [("decisions identical in every run", _yes(s.get("all_identical"))),
               ("step MAPE mean / max", f"{_pct(s['step_mape']['mean'])} / {_pct(s['step_mape']['max'])}"),
               ("step MPE (bias) mean", _pct(s["step_mpe"]["mean"])),
               ("step MAPE without host gaps, mean", _pct(s["device_step_mape"]["mean"])),
               ("policy ranking preserved", _yes(s.get("rankings_preserved"))),
               ("Kendall tau (min)", _num(s.get("kendall_tau_min")))]
    if s.get("acceptance"):
        verdict += [(f"acceptance: {k}", _yes(v)) for k, v in s["acceptance"].items()]
    parts += ["<h2>Verdict</h2>", _kv(verdict)]
    if validation.mismatches:
        parts.append("<p class='note bad'>Decisions differ:<br>" + "<br>".join(html.escape(m) for m in
                                                                              validation.mismatches) + "</p>")
    if len(runs):
        parts += ["<h2>Counts (must be identical)</h2>", _table(
            ["run", "capacity", "identical", "hits real", "hits sim", "misses real", "misses sim", "copies real",
             "copies sim", "bytes real", "bytes sim", "evictions real", "evictions sim", "first difference"],
            ([r["label"], r["capacity"], _yes(r["identical"]), r["real_hits"], r["sim_hits"], r["real_misses"],
              r["sim_misses"], r["real_demand_copies"] + r["real_prefetch_copies"],
              r["sim_demand_copies"] + r["sim_prefetch_copies"], _bytes(r["real_bytes"]), _bytes(r["sim_bytes"]),
              r["real_evictions"], r["sim_evictions"], r["first_difference"] or "-"]
             for r in runs.to_dict("records")), left=(0, 1, 13))]
        parts += ["<h2>Step latency (one step = one pass; error = (sim - real) / real)</h2>", _table(
            ["run", "capacity", "steps", "MAPE", "MPE", "MAPE w/o host gaps", "|err| p50", "|err| p99", "p50 real",
             "p50 sim", "p50 err", "p99 real", "p99 sim", "p99 err"],
            ([r["label"], r["capacity"], r["step_n"], _pct(r["step_mape"]), _pct(r["step_mpe"]),
              _pct(r["device_step_mape"]),
              _pct(r["step_ape_p50"]), _pct(r["step_ape_p99"]), _sec(r["step_real_p50"]), _sec(r["step_sim_p50"]),
              _pct(r["step_p50_error"]), _sec(r["step_real_p99"]), _sec(r["step_sim_p99"]), _pct(r["step_p99_error"])]
             for r in runs.to_dict("records")), left=(0, 1))]
        parts.append("<h2>Per run: metric | real | sim | diff %</h2>")
        for r in runs.to_dict("records"):
            parts.append(f"<details><summary>{html.escape(r['label'])} @ {html.escape(r['capacity'])}</summary>")
            parts.append(_table(["metric", "real", "sim", "diff %"], _metric_rows(r), left=(0,)))
            parts.append("</details>")
    for title, caption, png in _figures(validation):
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(title)}</h2><figure><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>")
    if len(validation.rankings):
        parts += ["<h2>Policy ranking by mean step time (fastest first)</h2>", _table(
            ["capacity", "prefetch", "real order", "sim order", "Kendall tau", "same order", "smallest real gap",
             "run-to-run spread"],
            ([r["capacity"], r["prefetch"], r["real_order"], r["sim_order"], _num(r["kendall_tau"]),
              _yes(r["same_order"]), _pct(r["smallest_real_gap"]), _pct(r["run_to_run_spread"])]
             for r in validation.rankings.to_dict("records")), left=(0, 1, 2, 3))]
    if len(runs):
        parts += ["<h2>Transfers</h2>", _table(
            ["run", "capacity", "H2D copies", "H2D throughput", "median per copy", "calibrated",
             "measured / calibrated",
             "issued H2D bytes", "NVML RX bytes", "NVML / issued", "energy real (NVML)", "energy sim"],
            ([r["label"], r["capacity"], r["h2d_copies"], _bw(r["h2d_throughput_Bps"]), _bw(r["h2d_median_copy_Bps"]),
              _bw(r["calibrated_Bps"]), _num(r["h2d_over_calibrated"]), _bytes(r["issued_h2d_bytes"]),
              _bytes(r["nvml_rx_bytes"]), _num(r["nvml_over_issued"]), _joules(r["real_energy_J"]),
              _joules(r["sim_energy_J"])] for r in runs.to_dict("records")), left=(0, 1))]
    parts.append("<p>NVML PCIe counters average over 20 ms and energy updates every 20-100 ms: read them over "
                 "windows of a second or more. Files: runs.parquet, steps.parquet, rankings.parquet, "
                 "summary.json.</p></body></html>")
    return "\n".join(parts)


def _figures(validation: Validation) -> list[tuple[str, str, bytes]]:
    """Step times measured vs simulated (all runs), and each run's mean step on both sides."""
    steps, runs = validation.steps, validation.runs
    out = []
    ok = steps[(steps["real_s"] > 0) & (steps["sim_s"] > 0)] if len(steps) else steps
    if len(ok):
        fig = new_figure(6.0, 5.0)
        ax = fig.add_subplot()
        for (label, cap), group in ok.groupby(["label", "capacity"], sort=False):
            ax.scatter(group["real_s"] * 1e3, group["sim_s"] * 1e3, s=10, label=f"{label} @ {cap}")
        lo = float(min(ok["real_s"].min(), ok["sim_s"].min())) * 1e3
        hi = float(max(ok["real_s"].max(), ok["sim_s"].max())) * 1e3
        ax.plot([lo, hi], [lo, hi], color="#444", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured step (ms)")
        ax.set_ylabel("simulated step (ms)")
        if ok.groupby(["label", "capacity"]).ngroups <= 12:
            ax.legend(fontsize=7)
        out.append(("Step times: simulated vs measured", "One point per pass and run; on the line the simulator "
                    "matches the device.", png_bytes(fig)))
    if len(runs):
        fig = new_figure(7.0, 0.3 * len(runs) + 1.5)
        ax = fig.add_subplot()
        y = np.arange(len(runs))
        names = [f"{r['label']} @ {r['capacity']}" for r in runs.to_dict("records")]
        real = runs["real_step_mean_s"].astype(float).to_numpy() * 1e3
        sim = runs["sim_step_mean_s"].astype(float).to_numpy() * 1e3
        ax.barh(y - 0.2, real, height=0.4, label="measured", color="#1f77b4")
        ax.barh(y + 0.2, sim, height=0.4, label="simulated", color="#ff7f0e")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mean step (ms)")
        ax.legend(fontsize=7)
        out.append(("Mean step per run", "The ranking compares these within each capacity and prefetch setting.",
                    png_bytes(fig)))
    return out


def render_markdown(validation: Validation) -> str:
    """The verdict and, per run, metric | real | sim | diff % (LLMServingSim's summary table)."""
    s = validation.summary
    lines = ["# moesim validate: executor vs simulator", "",
             f"- trace {s.get('trace_hash', '')[:16]} (model {s.get('trace_model')}), profile {s.get('profile')} "
             f"({s.get('profile_source')}), device {s.get('device')}, miss {s.get('miss')}, scope {s.get('scope')}",
             f"- decisions identical in every run: {_plain(s.get('all_identical'))}",
             f"- step MAPE mean {_pct(s['step_mape']['mean'])}, max {_pct(s['step_mape']['max'])}; "
             f"MPE mean {_pct(s['step_mpe']['mean'])}",
             f"- policy ranking preserved: {_plain(s.get('rankings_preserved'))} (min Kendall tau "
             f"{_num(s.get('kendall_tau_min'))})"]
    if s.get("note"):
        lines.append(f"- note: {s['note']}")
    for r in validation.runs.to_dict("records"):
        lines += ["", f"## {r['label']} @ {r['capacity']}", "", "| metric | real | sim | diff % |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(str(v) for v in row)} |" for row in _metric_rows(r)]
    if len(validation.rankings):
        lines += ["", "## Ranking (fastest first)", "", "| capacity | prefetch | real | sim | Kendall tau |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['capacity']} | {r['prefetch']} | {r['real_order']} | {r['sim_order']} | "
                  f"{_num(r['kendall_tau'])} |" for r in validation.rankings.to_dict("records")]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def _metric_rows(r: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, name, fmt in (("total_s", "total time", _sec), ("step_mean_s", "mean step", _sec),
                           ("ttft_mean_s", "TTFT mean", _sec), ("tpot_mean_s", "TPOT mean", _sec),
                           ("stall_s", "stall", _sec), ("expert_s", "expert compute", _sec),
                           ("dense_s", "dense compute", _sec)):
        rows.append([name, fmt(r[f"real_{key}"]), fmt(r[f"sim_{key}"]), _pct(r[f"err_{key}"])])
    rows.append(["step p50", _sec(r["step_real_p50"]), _sec(r["step_sim_p50"]), _pct(r["step_p50_error"])])
    rows.append(["step p99", _sec(r["step_real_p99"]), _sec(r["step_sim_p99"]), _pct(r["step_p99_error"])])
    for key in ("hits", "misses", "bytes"):
        real, sim = r[f"real_{key}"], r[f"sim_{key}"]
        rows.append([key, real, sim, _pct((sim - real) / real if real else (0.0 if sim == real else None))])
    rows.append(["late prefetches (prefetch copy still in flight at the gate)", r["real_late_prefetch"],
                 r["sim_late_prefetch"], "-"])
    rows.append(["host gaps (device idle between cells)", _sec(r["real_gap_s"]), "-", "-"])
    return rows


def _kv(pairs: Iterable[tuple[str, Any]]) -> str:
    return _table(["", ""], ([k, v] for k, v in pairs), left=(0, 1), show_header=False)


def _table(columns: list[str], rows: Iterable[list[Any]], left: tuple[int, ...] = (), show_header: bool = True) -> str:
    out = ["<table>"]
    if show_header:
        out.append("<tr>" + "".join(f"<th{' class=l' if i in left else ''}>{html.escape(h)}</th>"
                                    for i, h in enumerate(columns)) + "</tr>")
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            text = value if isinstance(value, _Html) else html.escape(_text(value))
            cls = " class=l" if i in left else ""
            if isinstance(value, _Html) and value.cls:
                cls = f" class='{value.cls}{' l' if i in left else ''}'"
            cells.append(f"<td{cls}>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class _Html(str):
    cls = ""


def _yes(value: Any) -> _Html:
    if value is None:
        out = _Html("n/a")
    else:
        out = _Html("yes" if value else "NO")
        out.cls = "ok" if value else "bad"
    return out


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not np.isfinite(value)) or pd.isna(value)


def _pct(value: Any) -> str:
    return "-" if _missing(value) else f"{100 * float(value):+.1f} %"


def _num(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.3f}"


def _sec(value: Any) -> str:
    if _missing(value):
        return "-"
    v = float(value)
    return f"{v * 1e3:.3f} ms" if abs(v) < 1 else f"{v:.3f} s"


def _bytes(value: Any) -> str:
    if _missing(value):
        return "-"
    v = float(value)
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if v >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{int(v)} B"


def _bw(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value) / 1e9:.2f} GB/s"


def _joules(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.2f} J"
