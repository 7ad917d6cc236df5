"""stratamoe-lab RouterTrace v2 JSON (github.com/Labeeb2339/stratamoe-lab, evidence/<model>/).

router-trace.v2.json: {version: 2, tokens, layers, expertsPerLayer, topK, source: {...},
selections[token][layer][rank]: expert id}. The capture-metadata.json beside it gives
prompt_spans (token_start, token_end_exclusive per prompt), the sparse encoder block indices and
the SHA-256 of the trace file, which is checked. Each prompt becomes one request served by one
prefill pass; the captures are encoder-only, so there is no decode. Without the metadata file all
tokens form one request.

Sizes: the file has none; they come from the model catalog entry of source.model.id
(switch-base-8: two 768 x 3072 matrices per expert in fp32, the dtype of the capture), else from
--option expert_bytes=..., else 1-byte placeholders marked in meta.extra.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from moesim.errors import UserError
from moesim.traces.importers import Example
from moesim.traces.importers.assemble import Routes, assemble
from moesim.traces.importers.common import object_bytes, provenance, read_text
from moesim.traces.importers.options import Options
from moesim.traces.format.trace_meta import PREFILL, TraceMeta

NAME = "stratamoe"
SUMMARY = "stratamoe-lab RouterTrace v2 JSON (selections[token][layer][rank]) with capture-metadata.json"
OPTIONS = {
    "expert_bytes": "bytes per expert: one size or one per layer (e.g. '18 MiB'); default from the model catalog",
    "metadata": "path of the capture metadata (default: capture-metadata.json beside the trace; 'none' to ignore)",
}
TRACE_FILE = "router-trace.v2.json"
METADATA_FILE = "capture-metadata.json"


def sniff(path: Path) -> bool:
    if path.is_dir():
        return (path / TRACE_FILE).is_file()
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b'"selections"' in head or b'"expertsPerLayer"' in head


def load(path: Path, options: Options) -> Any:
    if path.is_dir():
        path = path / TRACE_FILE
    where = str(path)
    raw = read_text(path)
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"not valid JSON ({exc})", where) from None
    if not isinstance(doc, dict):
        raise UserError("the top level must be a JSON object", where)
    if doc.get("version") != 2:
        raise UserError(f"field 'version': expected 2, got {doc.get('version')!r}", where)
    n_tokens = _positive_int(doc, "tokens", where, allow_zero=False)
    n_layers = _positive_int(doc, "layers", where)
    n_experts = _positive_int(doc, "expertsPerLayer", where)
    top_k = _positive_int(doc, "topK", where)
    if n_layers > np.iinfo(np.int16).max or n_experts > np.iinfo(np.int32).max or top_k > n_experts:
        raise UserError("fields 'layers', 'expertsPerLayer' or 'topK' are out of range", where)
    selections = _selections(doc.get("selections"), n_tokens, n_layers, top_k, n_experts, where)

    metadata, meta_path = _metadata(path, options)
    spans = [(0, n_tokens)]
    layer_ids = None
    prompt_ids = None
    if metadata is not None:
        meta_where = str(meta_path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        named = metadata.get("trace_sha256")
        if named is not None and named != digest:
            raise UserError(f"field 'trace_sha256' names another file than {path.name} (its SHA-256 is {digest})",
                            meta_where)
        spans, prompt_ids = _spans(metadata.get("prompt_spans"), n_tokens, meta_where)
        blocks = metadata.get("sparse_encoder_block_indices")
        if blocks is not None:
            if (not isinstance(blocks, list) or len(blocks) != n_layers
                    or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in blocks)):
                raise UserError(f"field 'sparse_encoder_block_indices' must list {n_layers} layer numbers", meta_where)
            layer_ids = list(blocks)

    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    model_info = source.get("model") if isinstance(source.get("model"), dict) else {}
    model = model_info.get("id") if isinstance(model_info.get("id"), str) else None
    extra: dict[str, Any] = {}
    sizes, size_note = object_bytes(options, model, n_layers, n_experts, extra)
    if prompt_ids is not None:
        extra["prompt_ids"] = prompt_ids
    capture = source.get("capture") if isinstance(source.get("capture"), dict) else {}
    meta = TraceMeta(
        n_layers=n_layers,
        n_experts=n_experts,
        top_k=top_k,
        object_bytes=sizes,
        model=model,
        layer_ids=layer_ids,
        provenance=provenance(
            "stratamoe RouterTrace v2", path, hashlib.sha256(path.read_bytes()).hexdigest(),
            model_revision=_text(model_info, "revision"),
            capture_dtype=_text(capture, "dtype"),
            scenario=_text(doc, "scenario"),
            selection_basis=_text(metadata or {}, "selection_basis"),
            object_bytes_from=size_note,
            metadata_file=meta_path.name if metadata is not None else None,
        ),
        extra=extra,
    )
    return assemble(_routes(selections, spans), meta, where, line_word="token")


def _text(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


def _positive_int(doc: dict[str, Any], key: str, where: str, allow_zero: bool = False) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        raise UserError(f"field '{key}' must be a positive integer, got {value!r}", where)
    return value


def _selections(raw: Any, n_tokens: int, n_layers: int, top_k: int, n_experts: int, where: str) -> np.ndarray:
    """selections as an int64 array [tokens, layers, top_k]; the first malformed entry is named."""
    if not isinstance(raw, list) or len(raw) != n_tokens:
        got = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise UserError(f"field 'selections' must list {n_tokens} tokens, has {got}", where)
    for t, per_layer in enumerate(raw):
        if not isinstance(per_layer, list) or len(per_layer) != n_layers:
            raise UserError(f"field 'selections[{t}]' must list {n_layers} layers", where)
        for layer, ranks in enumerate(per_layer):
            if (not isinstance(ranks, list) or len(ranks) != top_k
                    or not all(isinstance(e, int) and not isinstance(e, bool) for e in ranks)):
                raise UserError(f"field 'selections[{t}][{layer}]' must list {top_k} integer expert ids", where)
            for e in ranks:
                if not 0 <= e < n_experts:
                    raise UserError(f"field 'selections[{t}][{layer}]': expert {e} outside 0..{n_experts - 1}", where)
    return np.asarray(raw, dtype=np.int64)


def _metadata(path: Path, options: Options) -> tuple[dict[str, Any] | None, Path]:
    choice = options.text("metadata")
    if choice == "none":
        return None, path
    meta_path = Path(choice) if choice else path.parent / METADATA_FILE
    if not meta_path.is_file():
        if choice:
            raise UserError("no such file", f"--option metadata={choice}")
        return None, meta_path
    try:
        data = json.loads(read_text(meta_path))
    except (ValueError, RecursionError) as exc:
        raise UserError(f"not valid JSON ({exc})", str(meta_path)) from None
    if not isinstance(data, dict):
        raise UserError("the top level must be a JSON object", str(meta_path))
    return data, meta_path


def _spans(raw: Any, n_tokens: int, where: str) -> tuple[list[tuple[int, int]], list[str] | None]:
    """Prompt spans, which must tile 0..n_tokens in order."""
    if raw is None:
        return [(0, n_tokens)], None
    if not isinstance(raw, list) or not raw:
        raise UserError("field 'prompt_spans' must be a non-empty list", where)
    spans, ids = [], []
    expected = 0
    for i, span in enumerate(raw):
        if not isinstance(span, dict):
            raise UserError(f"field 'prompt_spans[{i}]' must be an object", where)
        start, end = span.get("token_start"), span.get("token_end_exclusive")
        integers = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
        if not integers or start != expected or end <= start:
            raise UserError(f"field 'prompt_spans[{i}]': tokens {start!r}..{end!r} do not continue at {expected}",
                            where)
        spans.append((start, end))
        ids.append(str(span.get("id", i)))
        expected = end
    if expected != n_tokens:
        raise UserError(f"field 'prompt_spans' covers {expected} tokens; the trace has {n_tokens}", where)
    return spans, ids


def _routes(selections: np.ndarray, spans: list[tuple[int, int]]) -> Routes:
    """One prefill pass per prompt; rows layer-major inside it (all tokens of layer 0, then 1, ...)."""
    n_layers, top_k = selections.shape[1], selections.shape[2]
    tok, lay, req, pos, first = [], [], [], [], []
    for r, (start, end) in enumerate(spans):
        length = end - start
        tok.append(np.tile(np.arange(start, end), n_layers))
        lay.append(np.repeat(np.arange(n_layers), length))
        req.append(np.full(length * n_layers, r))
        pos.append(np.tile(np.arange(length), n_layers))
        f = np.zeros(length * n_layers, dtype=bool)
        f[0] = True
        first.append(f)
    token = np.concatenate(tok)
    layer = np.concatenate(lay)
    n = token.size
    return Routes(
        line=token,
        new_pass=np.concatenate(first),
        phase=np.full(n, PREFILL, dtype=np.int64),
        request=np.concatenate(req),
        position=np.concatenate(pos),
        layer=layer,
        expert_offsets=np.arange(n + 1, dtype=np.int64) * top_k,
        expert=selections[token, layer].reshape(-1),
    )


def examples() -> list[Example]:
    """Small valid inputs (the fuzz tests load them and mutated copies: moesim/traces/importers/__init__.py)."""
    import json

    return [Example.file("json", "t.json", json.dumps(
        {"version": 2, "tokens": 3, "layers": 2, "expertsPerLayer": 4, "topK": 1, "source": {"model": {"id": "toy"}},
         "selections": [[[1], [2]], [[3], [0]], [[2], [2]]]}))]
