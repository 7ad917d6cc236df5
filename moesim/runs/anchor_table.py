"""docs/fidelity.md's "Published anchors" section: every anchor row, fitted or predicted, with its error.

Rows come from moesim/runs/anchors.py (`run_anchors`): the figures are fitted on the dual-socket
KTransformers rows and every other row is predicted with them; a second fit on the single-socket
rows, predicting the dual-socket ones, checks that the figures do not depend on which pair they came from.
"""

from __future__ import annotations

from moesim.runs.anchors import (FIT, FIRST_MOE_LAYER, MODEL, N_LAYERS_TOTAL, SOURCE, AnchorRow, anchor_trace,
                                 decode_seconds, run_anchors)

TOLERANCE = 0.20  # issue 14: the KTransformers anchors within 20 %


def _err(predicted_s: float, measured_tok_s: float) -> float:
    """Error in decode speed (tokens/s predicted over measured, minus one; rounded so an exact fit reads 0.0)."""
    return round(1.0 / predicted_s / measured_tok_s - 1.0, 9) + 0.0


def anchor_section(decode_tokens: int = 32) -> list[str]:
    fit, rows = run_anchors(decode_tokens)
    singles = tuple(r.anchor.name for r in rows if "single socket" in r.anchor.name)
    swapped, swapped_rows = run_anchors(decode_tokens, fit_on=singles)
    f = fit.figures  # type: ignore[attr-defined]
    from moesim.hw_profiles.loader import load_profile

    ceilings = sorted({load_profile(r.anchor.profile).processors["cpu"].memory_bandwidth / 1e9 for r in rows}, reverse=True)
    reach = ", ".join(f"{f.efficiency * c:.0f} GB/s of {c:g}" for c in ceilings)
    moe_layers = N_LAYERS_TOTAL - FIRST_MOE_LAYER
    lines = ["", "## Published anchors (no traces)", "",
             f"Source: {SOURCE}. DeepSeek-V3 Q4_K_M, 500-token prompt, synthetic trace with the model's shapes "
             "and Q4_K_M expert and dense sizes (moesim/runs/anchors.py); tolerance 20 % on decode speed (issue 14). "
             "Two CPU figures are fitted on the two dual-socket KTransformers rows (8 and 6 experts) and carried, "
             "unchanged, to every other row (moesim/runs/anchor_fit.py): the single-socket rows change the machine "
             "(one socket's memory, numactl -N 1 -m 1), not the figures. Fitted rows are not tests.", "",
             "| anchor | profile | placement | role | measured decode | datasheet ceilings (nothing fitted) | "
             "with the fitted figures | error | pass |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(_row(r))
    lines += ["", "| fitted figure | value | what it is |", "|---|---|---|",
              f"| CPU memory-bandwidth efficiency | {f.efficiency:.3f} | share of the profile's datasheet DRAM bandwidth "
              f"the expert kernels reach: {reach} |",
              f"| CPU call overhead | {f.call_overhead * 1e6:.0f} us | per CPU expert call, one per MoE layer and token "
              f"({moe_layers * f.call_overhead * 1e3:.1f} ms a token): KTransformers' per-layer hand-off |", "",
              f"Fitted on {', '.join(fit.rows)} (two figures, two rows: determined exactly; residuals "  # type: ignore[attr-defined]
              + ", ".join(f"{x * 100:+.1f} %" for x in fit.residuals) + ")."]  # type: ignore[attr-defined]
    lines += [f"Note: {n}" for n in fit.notes]  # type: ignore[attr-defined]
    g = swapped.figures  # type: ignore[attr-defined]
    dual = [r for r in swapped_rows if "dual socket" in r.anchor.name and r.anchor.name.startswith("KTransformers")]
    lines += ["", f"Fitted the other way round (on the single-socket rows) the figures are {g.efficiency:.3f} and "
              f"{g.call_overhead * 1e6:.0f} us, and the dual-socket rows are predicted "
              + " and ".join(f"{_err(r.predicted_s, r.anchor.decode_tok_s) * 100:+.1f} %" for r in dual) + "."]
    lines += ["", _lesson(rows, f.efficiency, f.call_overhead, decode_tokens)]
    return lines


def gpu_seconds(row: AnchorRow, decode_tokens: int) -> float:
    """Seconds a decode token spends off the CPU's expert work: the row timed with a CPU a million times faster."""
    from moesim.hw_profiles.loader import load_profile
    from moesim.runs.anchor_fit import Figures, apply_figures

    fast = apply_figures(load_profile(row.anchor.profile), Figures(1e6, 0.0), "probe", flops_scale=1e6)
    return decode_seconds(row.anchor, anchor_trace(decode_tokens, experts=row.anchor.experts), fast)


def graph_nodes_per_token(framework: str = "llama.cpp") -> int:
    """Kernels (ggml graph nodes) per decode token under `framework`'s counts for DeepSeek-V3's layers."""
    from moesim.sim.compute.processors import kernels
    from moesim.traces.models.catalog import load_model

    spec = load_model(MODEL)
    moe = sum(kernels(framework, op) for op in ("attention", "router", "shared", "experts_grouped"))
    dense = kernels(framework, "attention") + kernels(framework, "dense_ffn")
    n_moe = spec.n_moe_layers
    return n_moe * moe + (spec.n_layers - n_moe) * dense + kernels(framework, "embedding") + kernels(framework, "lm_head")


def full_kv_bytes_per_token(context: int = 500) -> float:
    """Extra KV bytes a decode token reads when MLA caches the full K and V (f16) instead of the latent."""
    from moesim.traces.models.catalog import load_model

    spec = load_model(MODEL)
    full = spec.n_heads * (spec.qk_nope_head_dim + spec.qk_rope_head_dim + spec.v_head_dim)
    latent = spec.kv_lora_rank + spec.qk_rope_head_dim
    return 2.0 * (full - latent) * context * N_LAYERS_TOTAL


def _row(r: AnchorRow) -> str:
    a = r.anchor
    sheet = _err(r.datasheet_s, a.decode_tok_s)
    err = _err(r.predicted_s, a.decode_tok_s)
    role = "fitted" if r.fitted else "predicted"
    ok = "fitted (not a test)" if r.fitted else ("yes" if abs(err) <= TOLERANCE else "no")
    figures = "" if a.engine_figures else " (efficiency only)"
    return (f"| {a.name} ({a.engine}) | {a.profile} | `{a.placement}`: {a.where} | {role} | "
            f"{a.decode_tok_s:g} tok/s ({1e3 / a.decode_tok_s:.0f} ms/token) | {1 / r.datasheet_s:.2f} tok/s "
            f"({sheet * 100:+.0f} %) | {1 / r.predicted_s:.2f} tok/s{figures} | {err * 100:+.1f} % | {ok} |")


def _lesson(rows: list[AnchorRow], efficiency: float, overhead: float, decode_tokens: int) -> str:
    kt = {r.anchor.name: 1e3 / r.anchor.decode_tok_s for r in rows}
    d8, d6 = kt["KTransformers V0.2, dual socket, 8 experts"], kt["KTransformers V0.2, dual socket, 6 experts"]
    s8, s6 = kt["KTransformers V0.2, single socket, 8 experts"], kt["KTransformers V0.2, single socket, 6 experts"]
    per_dual, per_single = 4 * (d8 - d6), 4 * (s8 - s6)  # 8 experts' share: 4 x the 2 experts' difference
    llama = [r for r in rows if r.anchor.placement.startswith("cpu-only")]
    llama_err = " and ".join(f"{_err(r.predicted_s, r.anchor.decode_tok_s) * 100:+.0f} %" for r in llama)
    fit_rows = [r for r in rows if r.anchor.role == FIT]
    sheet = min(_err(r.datasheet_s, r.anchor.decode_tok_s) for r in rows if r.anchor.engine_figures)
    gpu_ms = gpu_seconds(fit_rows[0], decode_tokens) * 1e3
    nodes = graph_nodes_per_token()
    gaps = [(1.0 / r.anchor.decode_tok_s - r.predicted_s) / nodes * 1e6 for r in llama]
    return (
        "What these rows teach: the published table pins both figures without any trace. Two experts fewer save "
        f"{d8 - d6:.1f} ms a token on two sockets and {s8 - s6:.1f} ms on one, so the eight experts' reads cost "
        f"about {per_dual:.0f} and {per_single:.0f} ms (twice as long on one socket, as bandwidth says) and "
        f"{d8 - per_dual:.0f} / {s8 - per_single:.0f} ms of each token is a cost that grows with neither experts "
        f"nor sockets. moesim charges {gpu_ms:.0f} ms of it to the GPU (MLA attention, shared experts, dense layers, LM "
        f"head at their Q4_K_M bytes); the fit puts the rest at {overhead * 1e6:.0f} us per MoE layer on the CPU "
        "call, and the rows cannot say whether that is the CPU pool waking and synchronising, the GPU's kernels or "
        f"the hand-off between them. The expert kernels (llamafile's, V0.2) reach {efficiency * 100:.0f} % of the DDR5 "
        f"ceiling. On datasheet ceilings alone every KTransformers row is predicted at least {sheet * 100:.0f} % too "
        "fast. An earlier version of this table (+62 % / +37 % on two rows) read the experts at the catalog's fp8 "
        "size (44 MB an expert instead of Q4_K_M's 25-29 MB: the synthetic config re-resolved the model's sizes) "
        "and the dense weights at fp8, which hid part of the ceiling's error. The llama.cpp rows now run the "
        "placement llama.cpp ran (cpu-only: attention, dense layers and LM head on the CPU too, no GPU), with its "
        "pages interleaved over both nodes or on one node (the source does not say which; with four UPI links "
        "the interleaved layout is DRAM-bound and so as fast as local), and they still miss by "
        f"{llama_err}: they carry only the efficiency, which was fitted on llamafile's kernels, not ggml's; "
        "llama.cpp's DeepSeek path of early 2025 cached the full K and V rather than MLA's latent (about "
        f"{full_kv_bytes_per_token() / 1e9:.1f} GB more to read a token at 500 positions; moesim models the absorbed form); and a ggml graph node costs a "
        f"thread barrier across 64 threads on two sockets ({nodes:,} nodes a token under the llama.cpp "
        "framework's counts), a figure no reference here gives, so the profile's CPU kernel overhead is 0. "
        f"Closing the gap would take {min(gaps):.0f}-{max(gaps):.0f} us per node; a measured llama.cpp run would fit it the way the "
        "KTransformers rows fit the hand-off.")
