"""Expert-activation CSV dumps: `Layer ID, Batch Number, Token, Activated Expert IDs` (e.g. DeepSeek-V2-Lite).

One row per token and layer: the layer, the batch (one forward pass), the token (its text or
vocabulary id, which is not its position) and the expert ids it activated (a list such as
"[3, 17, 40]" or "3 17 40"). Headers are matched without regard to case, spaces or underscores.

- A batch is one pass (`--pass-by column:Batch Number`); `--option batch_is=request` makes each
  batch its own request as well (dumps of independent prompts: one prefill pass each).
- Positions are counted per request and layer in row order (`--option token_is=position` when
  the Token column holds positions instead).
- Phase: the first pass of a request is prefill when it holds more than one token, later passes
  decode; `--option phase=...` / `prompt_len` override.
- Only layers that appear are kept (DeepSeek-V2-Lite's dense layer 0 never does), their numbers
  in meta.layer_ids; `--option model=deepseek-v2-lite` gives the catalog's expert size.
"""

from __future__ import annotations

import re
from pathlib import Path

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.log_import import ROW_OPTIONS, FileFacts, frames_to_rows, pass_options, rows_to_trace
from moesim.traces.importers.log_read import expand_inputs, read_log
from moesim.traces.importers.options import Options
from moesim.traces.format.trace import Trace

NAME = "activation-csv"
SUMMARY = "expert-activation CSV: Layer ID, Batch Number, Token, Activated Expert IDs (DeepSeek-V2-Lite dumps)"
OPTIONS = {
    "batch_is": "pass (default: a batch is one forward pass of one sequence) or request (each batch its own "
                "request and prefill pass)",
    "token_is": "text (default: the Token column is the token's text or id; positions are counted) or position",
    **{k: v for k, v in ROW_OPTIONS.items() if k not in ("layer_from_filename", "request_from_filename")},
}
MANY_FILES = True
HEADERS = {"layer_id": "layer", "batch_number": "batch", "token": "token", "activated_expert_ids": "experts"}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def sniff(path: Path) -> bool:
    try:
        if not path.is_file() or path.suffix.lower() != ".csv":
            return False
        with path.open("rb") as handle:
            head = handle.read(2048).decode("utf-8", errors="replace")
    except OSError:
        return False
    header = next((line for line in head.splitlines() if line.strip() and not line.startswith("#")), "")
    names = {_norm(c) for c in header.split(",")}
    return {"layer_id", "activated_expert_ids"} <= names


def load(path: Path, options: Options) -> Trace:
    paths = expand_inputs(path)
    files = [read_log(p, ()) for p in paths]
    for f in files:
        named = {_norm(str(c)): str(c) for c in f.frame.columns}
        missing = [h for h in ("layer_id", "batch_number", "activated_expert_ids") if h not in named]
        if missing:
            raise UserError(f"no column {', '.join(missing)} (columns: {', '.join(map(str, f.frame.columns))[:200]})",
                            f.name)
        f.frame = f.frame.rename(columns={named[h]: v for h, v in HEADERS.items() if h in named})
    batch_is = options.text("batch_is", "pass", choices=("pass", "request"))
    token_is = options.text("token_is", "text", choices=("text", "position"))
    columns = {"layer": "layer", "experts": "experts", "pass": "batch"}
    if batch_is == "request":
        columns["request"] = "batch"
    if token_is == "position":
        if "token" not in files[0].frame.columns:
            raise UserError("--option token_is=position: no Token column", files[0].name)
        columns["position"] = "token"
    rule, _, _ = pass_options(options, columns)
    collected = frames_to_rows(files, [FileFacts() for _ in files], columns, options, rule)
    return rows_to_trace(collected, options, columns, {}, NAME, paths,
                         more_provenance={"batch_is": batch_is, "token_is": token_is})


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    return [Example.file("csv", "activations.csv",
                         'Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,"[0, 1]"\n1,0,b,"[2, 3]"\n'
                         '2,0,a,"[1, 2]"\n2,0,b,"[0, 3]"\n1,1,c,"[3, 0]"\n2,1,c,"[2, 1]"\n')]
