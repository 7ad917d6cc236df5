"""Prompt files for `moesim record`: every accepted form, and one-line errors naming the line."""

from __future__ import annotations

import pytest

from moesim.errors import UserError
from moesim.traces.record.prompts import Prompt, read_prompts, tokenize


def test_jsonl_accepts_id_lists_strings_and_objects(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('[1, 2, 3]\n\n"hello"\n{"input_ids": [4]}\n{"text": "hi"}\n{"prompt": "yo", "x": 1}\n')
    assert read_prompts(f) == [
        Prompt(line=1, token_ids=(1, 2, 3)),
        Prompt(line=3, text="hello"),
        Prompt(line=4, token_ids=(4,)),
        Prompt(line=5, text="hi"),
        Prompt(line=6, text="yo"),
    ]


def test_plain_text_is_one_prompt_per_non_empty_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("first prompt\n\n  second one \n")
    assert read_prompts(f) == [Prompt(line=1, text="first prompt"), Prompt(line=3, text="  second one ")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2", "not valid JSON"),
        ("[1, -2]", "token 1 is -2"),
        ("[1, true]", "token 1 is True"),
        ("[]", "non-empty list"),
        ('{"ids": [1]}', "object needs one of"),
        ('""', "empty prompt"),
        ("3", "expected a list of token ids"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    f = tmp_path / "p.jsonl"
    f.write_text("[7]\n" + line + "\n")
    with pytest.raises(UserError, match=rf"p.jsonl:2: .*{message}"):
        read_prompts(f)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_prompts(tmp_path / "none.jsonl")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(UserError, match="holds no prompts"):
        read_prompts(tmp_path / "e.txt")


def test_tokenize_checks_ids_against_the_vocabulary_and_needs_a_tokenizer_for_text():
    prompts = [Prompt(line=1, token_ids=(1, 2)), Prompt(line=2, text="a b")]
    fake = lambda text: {"input_ids": [len(w) for w in text.split()]}  # noqa: E731
    assert tokenize(prompts, fake, 10, "p") == [[1, 2], [1, 1]]
    with pytest.raises(UserError, match="p:2: a text prompt needs a tokenizer"):
        tokenize(prompts, None, 10, "p")
    with pytest.raises(UserError, match="p:1: token id 2 is outside the model's vocabulary \\(size 2\\)"):
        tokenize(prompts[:1], None, 2, "p")
