"""`moesim advise` as text: the answer first (best configuration per machine), then the details."""

from __future__ import annotations

from typing import Any

from moesim.advise.answer import OBJECTIVE_LABELS
from moesim.advise.space import NO_STORAGE_READS
from moesim.units import format_bytes

DIMENSION_ORDER = ("home", "lanes", "placement", "capacity", "eviction", "prefetch", "overlap", "miss")


def describe_config(config: dict[str, str]) -> str:
    """One line a person can act on: 'experts in dram, GPU cache 8.2 GiB, lru, prefetch markov'."""
    parts = []
    for key in DIMENSION_ORDER:
        value = config.get(key)
        if value is None:
            continue
        if key == "home":
            parts.append(f"experts in {value}")
        elif key == "lanes":
            if value != NO_STORAGE_READS:
                parts.append(f"{value} read lanes")
        elif key == "capacity":
            parts.append(f"cache {value}")
        elif key == "eviction":
            parts.append(f"evict {value}")
        elif key == "prefetch":
            parts.append("no prefetch" if value == "none" else f"prefetch {value}")
        elif key == "miss":
            parts.append("stall on miss" if value == "stall" else f"miss -> {value}")
        else:
            parts.append(f"{key} {value}")
    extra = [f"{k} {v}" for k, v in config.items() if k not in DIMENSION_ORDER]
    return ", ".join(parts + extra)


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e3:.2f} ms"


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def headline(row: dict[str, Any], objective: str) -> str:
    value = {"tpot": ms(row["tpot_s"]), "ttft": ms(row["ttft_s"]),
             "throughput": "n/a" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:.2f} tokens/s",
             "energy": "n/a" if row["energy_per_token_j"] is None else f"{row['energy_per_token_j']:.3f} J/token"}
    return value[objective]


def render_text(answer: dict[str, Any]) -> str:
    lines = [f"moesim advise: {answer['model']}, best {OBJECTIVE_LABELS[answer['objective']]} per machine",
             f"trace: {answer['trace']}"]
    for w in answer["warnings"]:
        lines.append(f"warning: {w}")
    for m in answer["machines"]:
        lines.append("")
        lines.extend(_machine_lines(m, answer["objective"]))
    ranked = machine_ranking(answer)
    if len(ranked) > 1:
        lines.append("")
        lines.append(f"machines by best {OBJECTIVE_LABELS[answer['objective']]}: "
                     + ", ".join(f"{name} {value}" for name, value in ranked))
    lines.append("")
    prepared = answer.get("prepare_s")
    lines.append(f"answered in {answer['elapsed_s']:.1f} s (budget {answer['budget_s']:.0f} s"
                 + (f"; {prepared:.1f} s of it preparing the trace" if prepared is not None else "") + "). "
                 "Times are moesim's predictions for this trace; TTFT starts from an empty expert cache.")
    return "\n".join(lines)


def machine_ranking(answer: dict[str, Any]) -> list[tuple[str, str]]:
    """(profile, best value) from the best machine to the worst: the "what to buy" line."""
    objective = answer["objective"]
    key = {"tpot": "tpot_s", "ttft": "ttft_s", "throughput": "tokens_per_s", "energy": "energy_per_token_j"}[objective]
    rows = [(m["profile"], m["best"][objective]) for m in answer["machines"]
            if objective in m["best"] and m["best"][objective].get(key) is not None]
    rows.sort(key=lambda r: -r[1][key] if objective == "throughput" else r[1][key])
    return [(name, headline(row, objective)) for name, row in rows]


def _machine_lines(m: dict[str, Any], objective: str) -> list[str]:
    mem = f"VRAM free {format_bytes(m['vram_free_bytes'])}"
    if m["dram_free_bytes"] is not None:
        mem += f", DRAM free {format_bytes(m['dram_free_bytes'])}"
    if m["cache_max_bytes"] is not None:
        mem += f", expert cache at most {format_bytes(m['cache_max_bytes'])}"
    out = [f"== {m['profile']} ({mem})"]
    best = m["best"].get(objective)
    base = m["baseline"]
    if best is None:
        out.append("  no configuration could be timed: " + "; ".join(m["notes"] or ["see warnings"]))
        return out
    label = OBJECTIVE_LABELS[objective]
    out.append(f"  best {label}: {headline(best, objective)}  <- {describe_config(best['config'])}")
    if base is not None:
        out.append(f"    baseline (LRU, no prefetch, largest cache): {headline(base, objective)}; "
                   f"gain {ratio(best.get('gain_over_baseline'))}")
    if objective in ("tpot", "ttft"):
        key = f"{objective}_over_bound"
        bound = best.get(f"{objective}_bound_s")
        out.append(f"    time bound {ms(bound)}: the best is {ratio(best.get(key))} the bound")
    out.append(f"    TPOT {ms(best['tpot_s'])}, TTFT {ms(best['ttft_s'])}, "
               f"{_num(best['tokens_per_s'], '.2f')} tokens/s; VRAM {format_bytes(best['vram_bytes'])}, "
               f"DRAM {format_bytes(best['dram_bytes'])}; {format_bytes(best['decode_bytes_per_token'] or 0)} moved "
               f"per decoded token, {_num(best['energy_per_token_j'], '.3f')} J per output token")
    for opt in best.get("engine_options", []):
        note = f"  ({opt['note']})" if opt.get("note") else ""
        out.append(f"    {opt['engine']}: {opt['options']}{note}")
    for change in best.get("engine_changes", []):
        out.append(f"    needs an engine change: {change}")
    for other, row in m["best"].items():
        if other == objective or row["config"] == best["config"]:
            continue
        out.append(f"  best {OBJECTIVE_LABELS[other]} among those timed: {headline(row, other)}  <- "
                   f"{describe_config(row['config'])}")
    s = m["searched"]
    out.append(f"  searched {s['configurations']} configurations: {s['timed']} timed, {s['pruned_by_bound']} "
               f"pruned by the time bound, {s['not_reached']} not reached ({s['seconds']:.1f} s)")
    for w in m["warnings"]:
        out.append(f"  warning: {w}")
    return out


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)
