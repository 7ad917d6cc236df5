"""Move moesim/traces/ into sub-packages by concern and rewrite every reference to the old modules.

    python scripts/dev/reorganise_traces.py            # move what is still at an old path, rewrite text
    python scripts/dev/reorganise_traces.py --check    # say what would change; exit 1 if anything would

Idempotent: run it again on a tree that is already moved (or on a merge of branches that still import
the old names) and it moves nothing already moved and rewrites only the references that are still old.
It `git mv`s modules (so history follows them) and rewrites, in moesim/, tests/, bench/, scripts/,
docs/, .ci/, README.md, NOTICE, Makefile and pyproject.toml:
  - `from moesim.traces.OLD import a, b` (split by where each name now lives, for a split module),
  - `from moesim.traces import OLD` and dotted names `moesim.traces.OLD[.symbol]` (imports, `python -m`,
    importlib strings, monkeypatch targets, docstrings),
  - file citations `moesim/traces/OLD.py` and `traces/OLD.py`, and moved data files.
A module imported whole from a split module (`from moesim.traces import stats`) is rewritten to its
main part and reported, because attribute uses of the moved names need a look by hand.

A `.py` file left at the top of moesim/traces/ that the table does not name is reported (add it to
MODULE_MOVES); `parquet_*.py` files go to format/ by rule.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = "moesim.traces"

# old module (under moesim.traces) -> new module (under moesim.traces), by concern.
MODULE_MOVES: dict[str, str] = {
    # format: the in-memory Trace, moesim's Parquet files, loading/saving, the bundled traces
    "trace": "format.trace",
    "io": "format.io",
    "info": "format.info",
    "grouping": "format.grouping",
    "bundled": "format.bundled",
    "parquet_carry": "format.parquet_carry",
    "parquet_checks": "format.parquet_checks",
    "parquet_chunk": "format.parquet_chunk",
    "parquet_codec": "format.parquet_codec",
    "parquet_layout": "format.parquet_layout",
    "parquet_read": "format.parquet_read",
    "parquet_write": "format.parquet_write",
    "cli_io": "format.cli_io",
    "cli_input": "format.cli_input",
    # importers (already a package): the doctor that says a log was imported wrong joins them
    "doctor": "importers.doctor",
    # synth: synthetic MoE traces, fitting them to real ones, token-indexed (ToL) workloads
    "synthetic": "synth.synthetic",
    "synth_config": "synth.synth_config",
    "fit": "synth.fit",
    "tol": "synth.tol",
    "byte_tokenizer": "synth.byte_tokenizer",
    "cli_synth": "synth.cli_synth",
    "cli_tol": "synth.cli_tol",
    # record: routing traces from a Hugging Face checkpoint
    "recorder": "record.recorder",
    "routing_rules": "record.routing_rules",
    "prompts": "record.prompts",
    "cli_record": "record.cli_record",
    # models: the catalog of model specs (the YAML files stay in moesim/traces/models/)
    "catalog": "models.catalog",
    "model_spec": "models.model_spec",
    "model_files": "models.model_files",
    "gguf_shapes": "models.gguf_shapes",
    "cli_models": "models.cli_models",
    # stats: trace statistics (the old module is split; its main part is stats.summary)
    "stats": "stats.summary",
}

# Names that moved out of a module into another when an oversized module was split:
# module (old dotted name, or its new main part) -> {new module: its names}. Full dotted names.
# (Private helpers that became shared lost their underscore: _sort_order -> sort_order, _check_phase,
# _cell_mask, _access_mask, _per_layer_mean, _RoutingHooks, _TraceParts, _import_transformers, _expand likewise;
# a caller of an old private name is fixed by hand.)
_SPLITS: dict[str, dict[str, str]] = {
    # traces/trace.py (530 lines) -> format/{trace_meta,trace,trace_checks,build}.py
    "moesim.traces.format.trace": {
        "moesim.traces.format.trace_meta": "PREFILL DECODE PHASE_NAMES KIND_MOE KIND_TOL TraceMeta expert_dtype",
        "moesim.traces.format.build": "build_trace simple_trace",
    },
    # traces/recorder.py (566 lines) -> record/{recorder,hf_model,hooks}.py
    "moesim.traces.record.recorder": {
        "moesim.traces.record.hf_model": "MoeLayer supported_architectures load_model load_tokenizer moe_layers "
                                         "expert_bytes",
    },
    # traces/synthetic.py (474 lines) -> synth/{schedule,synthetic}.py
    "moesim.traces.synth.synthetic": {
        "moesim.traces.synth.schedule": "Schedule draw_lengths build_schedule expand",
    },
    # traces/stats.py (691 lines) -> stats/{arrays,popularity,predictors,working_set,summary}.py
    "moesim.traces.stats.summary": {
        "moesim.traces.stats.arrays": "unique_sorted first_index sort_order",
        "moesim.traces.stats.popularity": "PHASES cell_phase check_phase cell_mask access_mask layer_expert_counts "
                                          "distinct_per_layer entropy_bits topk_coverage hottest_experts",
        "moesim.traces.stats.predictors": "DEFAULT_LAGS CROSS_LAYER_MAX_EXPERTS TokenRows token_rows row_overlap "
                                          "DecodeSequences decode_sequences per_layer_mean lag_overlap static_coverage "
                                          "CrossLayer cross_layer_predictability PredictorStats predictor_stats",
        "moesim.traces.stats.working_set": "PassObjectUses pass_object_uses reuse_bucket_labels reuse_distance_histogram "
                                           "pass_working_set pass_working_set_bytes cell_distinct_experts",
    },
}
SYMBOL_MOVES: dict[str, dict[str, str]] = {
    module: {symbol: target for target, names in parts.items() for symbol in names.split()}
    for module, parts in _SPLITS.items()
}

# data files: old path -> new path (relative to the repository root)
DATA_MOVES: dict[str, str] = {
    "moesim/traces/data/tol_corpus.txt": "moesim/traces/synth/data/tol_corpus.txt",
}

PACKAGE_DOCS: dict[str, str] = {
    "format": "The trace format: the in-memory Trace, moesim's Parquet files, loading and saving, bundled traces.",
    "synth": "Synthetic traces: seeded MoE routing, fitting a synthetic trace to a real one, token-indexed workloads.",
    "record": "Recording routing traces from a local Hugging Face MoE checkpoint (the `record` extra).",
    "models": "The model catalog: MoE model shapes (YAML files in this folder, config.json, GGUF) and their bytes and FLOPs.",
    "stats": "Trace statistics: how concentrated, how repetitive and how large a routing trace is.",
}

SKIP_MARKER = "reorganise_traces: " + "leave this file alone"
SCAN_DIRS = ("moesim", "tests", "bench", "scripts", "docs", ".ci")
SCAN_FILES = ("README.md", "NOTICE", "Makefile", "pyproject.toml")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".json", ".txt", ".cfg", ".ini", ".sh", ".c", ".h", ".rst", ""}


def full(name: str) -> str:
    return f"{PKG}.{name}"


def module_moves() -> dict[str, str]:
    """Old full dotted name -> new full dotted name, with the parquet_* rule for modules the table lacks."""
    moves = {full(old): full(new) for old, new in MODULE_MOVES.items()}
    for path in sorted((ROOT / "moesim" / "traces").glob("parquet_*.py")):
        moves.setdefault(full(path.stem), full(f"format.{path.stem}"))
    return moves


def symbol_moves(moves: dict[str, str]) -> dict[str, dict[str, str]]:
    """SYMBOL_MOVES keyed by both a split module's old name and its main part's new name."""
    out: dict[str, dict[str, str]] = {}
    for module, table in SYMBOL_MOVES.items():
        out.setdefault(module, {}).update(table)
        if module in moves:
            out.setdefault(moves[module], {}).update(table)
        for old, new in moves.items():
            if new == module:
                out.setdefault(old, {}).update(table)
    return out


def module_path(dotted: str) -> Path:
    return Path(*dotted.split(".")).with_suffix(".py")


# ---------------------------------------------------------------------------------------------- moves

def git(*args: str) -> None:
    subprocess.run(["git", *args], cwd=ROOT, check=True)


def move_files(moves: dict[str, str], dry: bool) -> list[str]:
    done: list[str] = []
    pairs = [(module_path(old), module_path(new)) for old, new in moves.items()]
    pairs += [(Path(old), Path(new)) for old, new in DATA_MOVES.items()]
    for old, new in pairs:
        if not (ROOT / old).exists():
            continue
        if (ROOT / new).exists():
            parts = sorted({str(module_path(m)) for m in SYMBOL_MOVES.get(".".join(new.with_suffix("").parts), {})
                            .values()})
            split = f" (it was split: see also {', '.join(parts)})" if parts else ""
            sys.exit(f"reorganise_traces: both {old} and {new} exist{split}; merge the old file's changes into the "
                     "new one by hand, delete the old one, then run this again")
        done.append(f"git mv {old} {new}")
        if not dry:
            (ROOT / new).parent.mkdir(parents=True, exist_ok=True)
            git("mv", str(old), str(new))
    for package, doc in PACKAGE_DOCS.items():
        init = ROOT / "moesim" / "traces" / package / "__init__.py"
        if not init.exists() and (init.parent.exists() or done):
            done.append(f"create {init.relative_to(ROOT)}")
            if not dry:
                init.parent.mkdir(parents=True, exist_ok=True)
                init.write_text(f'"""{doc}"""\n', encoding="utf-8")
                git("add", str(init.relative_to(ROOT)))
    return done


def unmapped_modules(moves: dict[str, str]) -> list[str]:
    keep = {"__init__.py", "cli_traces.py"}
    return [str(p.relative_to(ROOT)) for p in sorted((ROOT / "moesim" / "traces").glob("*.py"))
            if p.name not in keep and full(p.stem) not in moves]


# -------------------------------------------------------------------------------------------- rewrites

_FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from[ \t]+(?P<mod>moesim(?:\.\w+)+)[ \t]+import[ \t]+"
    r"(?P<names>\([^)]*\)|[^\n#]*?)(?P<comment>[ \t]*#[^\n]*)?$", re.MULTILINE)


def _parse_names(text: str) -> list[tuple[str, str | None]]:
    body = text.strip()
    if body.startswith("("):
        body = body[1:-1]
    body = re.sub(r"#[^\n]*", "", body)
    names = []
    for part in body.replace("\n", " ").split(","):
        part = part.strip()
        if not part:
            continue
        bits = part.split()
        names.append((bits[0], bits[2] if len(bits) == 3 and bits[1] == "as" else None))
    return names


def _format_import(indent: str, module: str, names: list[tuple[str, str | None]], comment: str) -> str:
    parts = [f"{n} as {a}" if a else n for n, a in names]
    line = f"{indent}from {module} import {', '.join(parts)}{comment}"
    if len(line) <= 120:
        return line
    body = "".join(f"{indent}    {p},\n" for p in parts)
    return f"{indent}from {module} import ({comment}\n{body}{indent})"


class Rewriter:
    def __init__(self, moves: dict[str, str]) -> None:
        self.moves = moves
        self.symbols = symbol_moves(moves)
        # the modules inside each new package, so an already-new dotted name is never moved again
        self.new_children: dict[str, set[str]] = {}
        for new in list(moves.values()) + [m for t in SYMBOL_MOVES.values() for m in t.values()]:
            parent, _, child = new.rpartition(".")
            self.new_children.setdefault(parent, set()).add(child)
        names = sorted({m for m in list(moves) + list(self.symbols)}, key=len, reverse=True)
        self.dotted = re.compile(r"(?<![\w.])(?P<mod>" + "|".join(re.escape(n) for n in names)
                                 + r")(?:\.(?P<sym>\w+))?(?!\w)")
        old_stems = sorted((m.rpartition(".")[2] for m in moves), key=len, reverse=True)
        self.paths = re.compile(r"(?<![\w.])(?<!tests/)(?P<pre>moesim/)?traces/(?P<stem>"
                                + "|".join(map(re.escape, old_stems)) + r")\.py\b")
        self.warnings: list[str] = []

    def target(self, module: str, symbol: str | None) -> str:
        if symbol is not None and symbol in self.symbols.get(module, {}):
            return self.symbols[module][symbol]
        return self.moves.get(module, module)

    def _from_import(self, match: re.Match[str], where: str) -> str:
        module, indent, comment = match["mod"], match["indent"], match["comment"] or ""
        names = _parse_names(match["names"])
        if module == PKG:  # from moesim.traces import io, stats
            if not any(full(n) in self.moves for n, _ in names):
                return match.group(0)
            lines, rest = [], []
            for name, alias in names:
                if full(name) not in self.moves:
                    rest.append((name, alias))
                    continue
                new = self.moves[full(name)]
                if full(name) in self.symbols or new in self.symbols:
                    self.warnings.append(f"{where}: imports split module {full(name)} whole; check its attribute uses")
                parent, _, child = new.rpartition(".")
                lines.append(_format_import(indent, parent, [(child, alias or (name if child != name else None))], ""))
            if rest:
                lines.insert(0, _format_import(indent, module, rest, ""))
            lines[0] += comment
            return "\n".join(lines)
        if module not in self.moves and module not in self.symbols:
            return match.group(0)
        groups: dict[str, list[tuple[str, str | None]]] = {}
        for name, alias in names:
            if name in self.new_children.get(module, set()):  # a package that took an old module's name
                groups.setdefault(module, []).append((name, alias))
            else:
                groups.setdefault(self.target(module, name), []).append((name, alias))
        if len(groups) == 1 or all(new == module for new in groups):
            new = next(iter(groups))
            if new == module:
                return match.group(0)
            start, end = match.span("mod")
            text = match.group(0)
            offset = match.start()
            return text[: start - offset] + new + text[end - offset:]
        inner = re.match(r"\([ \t]*(#[^\n]*)", match["names"])  # `import (  # noqa: E402`
        comment = comment or (f"  {inner[1]}" if inner else "")
        lines = [_format_import(indent, new, group, comment if "noqa" in comment else "") for new, group in groups.items()]
        if "noqa" not in comment:
            lines[0] += comment
        return "\n".join(lines)

    def _dotted(self, match: re.Match[str]) -> str:
        module, symbol = match["mod"], match["sym"]
        if symbol is None and re.match(r"[ \t]+import\b", match.string[match.end():]):
            return match.group(0)  # `from PKG import ...`: the from-import pass decided it
        if symbol is not None and symbol in self.new_children.get(module, set()):
            return match.group(0)  # already the new name (a package that took an old module's name)
        new = self.target(module, symbol)
        if symbol is not None and symbol in self.symbols.get(module, {}):
            return f"{new}.{symbol}"
        if new == module:
            return match.group(0)
        return new + (f".{symbol}" if symbol is not None else "")

    def _path(self, match: re.Match[str]) -> str:
        new = self.moves[full(match["stem"])]
        rel = new[len(PKG) + 1:].replace(".", "/")
        return f"{match['pre'] or ''}traces/{rel}.py"

    def rewrite(self, text: str, where: str) -> str:
        text = _FROM_IMPORT.sub(lambda m: self._from_import(m, where), text)
        text = self.dotted.sub(self._dotted, text)
        text = self.paths.sub(self._path, text)
        for old, new in DATA_MOVES.items():
            text = text.replace(old, new)
            text = re.sub(r"(?<![\w./])" + re.escape(old[len("moesim/"):]), new[len("moesim/"):], text)
        return text


def scanned_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", "--", *SCAN_DIRS, *SCAN_FILES], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    me = Path(__file__).resolve()
    files = []
    for rel in listed:
        path = ROOT / rel
        if rel and path.is_file() and path.resolve() != me and (path.suffix in TEXT_SUFFIXES):
            files.append(path)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything would change")
    args = parser.parse_args(argv)
    moves = module_moves()
    changed = move_files(moves, dry=args.check)
    rewriter = Rewriter(moves)
    for path in scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        if SKIP_MARKER in text:  # a file that holds old paths on purpose (this tool's test)
            continue
        new = rewriter.rewrite(text, str(path.relative_to(ROOT)))
        if new != text:
            changed.append(f"rewrite {path.relative_to(ROOT)}")
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for line in changed:
        print(line)
    for line in dict.fromkeys(rewriter.warnings):
        print(f"warning: {line}", file=sys.stderr)
    for rel in unmapped_modules(moves):
        print(f"warning: {rel} is not in MODULE_MOVES; add where it belongs and run again", file=sys.stderr)
    if not changed:
        print("reorganise_traces: nothing to do")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
