"""Prompt files for `moesim record`: token ids or text, one prompt per line.

Formats, chosen by extension:
- `.jsonl` (or `.json` with one value per line): each non-empty line is a JSON list of token ids
  (`[1, 15, 7]`), a JSON string (text), or an object with `input_ids` / `token_ids` / `tokens`
  (ids) or `text` / `prompt` (text). Token ids let you record without a tokenizer, and let you apply
  any chat template beforehand.
- anything else: plain UTF-8 text, one prompt per non-empty line.
Text prompts need a tokenizer (the model directory's, or `--tokenizer PATH`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from moesim.errors import UserError

_ID_KEYS = ("input_ids", "token_ids", "tokens")
_TEXT_KEYS = ("text", "prompt")


@dataclass(frozen=True)
class Prompt:
    """One prompt: exactly one of `text` and `token_ids` is set; `line` is its 1-based line number."""

    line: int
    text: str | None = None
    token_ids: tuple[int, ...] | None = None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_prompts(path: str | Path) -> list[Prompt]:
    """Parse a prompts file; UserError naming the file and line for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such file", str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from None
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    prompts: list[Prompt] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        prompts.append(_parse_json_line(raw, number, where) if jsonl else Prompt(line=number, text=raw))
    if not prompts:
        raise UserError("holds no prompts", str(path))
    return prompts


def _parse_json_line(raw: str, number: int, where: str) -> Prompt:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg})", where) from None
    if isinstance(value, dict):
        for key in _ID_KEYS:
            if key in value:
                return Prompt(line=number, token_ids=_ids(value[key], where))
        for key in _TEXT_KEYS:
            if key in value:
                if not isinstance(value[key], str) or not value[key]:
                    raise UserError(f"field {key!r} must be a non-empty string", where)
                return Prompt(line=number, text=value[key])
        raise UserError(f"object needs one of {', '.join(_ID_KEYS + _TEXT_KEYS)}", where)
    if isinstance(value, str):
        if not value:
            raise UserError("empty prompt", where)
        return Prompt(line=number, text=value)
    if isinstance(value, list):
        return Prompt(line=number, token_ids=_ids(value, where))
    raise UserError("expected a list of token ids, a string or an object", where)


def _ids(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise UserError("token ids must be a non-empty list of integers", where)
    for i, tok in enumerate(value):
        if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
            raise UserError(f"token {i} is {tok!r}, not a non-negative integer", where)
    return tuple(value)


def tokenize(prompts: list[Prompt], tokenizer: object | None, vocab_size: int, source: str) -> list[list[int]]:
    """Token ids of every prompt; text goes through `tokenizer` (a Hugging Face tokenizer).

    Ids are checked against the model's vocabulary so a wrong file fails here, naming its line,
    rather than deep inside the model's embedding.
    """
    out: list[list[int]] = []
    for p in prompts:
        where = f"{source}:{p.line}"
        if p.token_ids is not None:
            ids = list(p.token_ids)
        else:
            if tokenizer is None:
                raise UserError("a text prompt needs a tokenizer; the model directory has none "
                                "(give --tokenizer PATH, or write token ids)", where)
            ids = [int(t) for t in tokenizer(p.text)["input_ids"]]  # type: ignore[operator]
            if not ids:
                raise UserError("the tokenizer turned this prompt into no tokens", where)
        bad = [t for t in ids if t >= vocab_size]
        if bad:
            raise UserError(f"token id {bad[0]} is outside the model's vocabulary (size {vocab_size})", where)
        out.append(ids)
    return out
