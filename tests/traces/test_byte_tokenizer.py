"""The byte-level BPE behind ToL workloads built from text."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim.errors import UserError
from moesim.traces.synth.byte_tokenizer import ByteTokenizer
from moesim.traces.synth.tol import corpus_sequences


def test_the_textbook_example_merges_aa_then_ab_then_their_pair():
    # Wikipedia's BPE example: aaabdaaabac -> ZabdZabac (Z=aa) -> ZYdZYac (Y=ab) -> XdXac (X=ZY)
    tok, ids = ByteTokenizer.train_and_encode("aaabdaaabac", 259)
    a, b = ord("a"), ord("b")
    assert tok.merges == ((a, a), (a, b), (256, 257))
    assert ids.tolist() == [258, ord("d"), 258, a, ord("c")]


def test_overlapping_runs_merge_left_to_right():
    tok = ByteTokenizer(merges=((97, 97),))
    assert tok.encode("aaaaa").tolist() == [256, 256, 97]


def test_without_merges_ids_are_the_utf8_bytes():
    text = "naïve café ✓"
    assert ByteTokenizer().encode(text).tolist() == list(text.encode("utf-8"))


def test_training_stops_when_no_pair_repeats():
    tok = ByteTokenizer.train("abcdef", 1000)
    assert tok.merges == () and tok.vocab_size == 256


def test_too_small_a_vocabulary_is_a_user_error():
    with pytest.raises(UserError, match="at least 256"):
        ByteTokenizer.train("abc", 100)


def test_merges_never_cross_a_word_boundary():
    tok, _ = corpus_sequences(1024)
    word_like = re.compile(rb"^( ?[^\s]+|\s+)$")
    for i in range(256, tok.vocab_size):
        piece = tok.decode([i]).encode("utf-8")
        assert word_like.match(piece), piece


def test_corpus_tokenizer_is_deterministic_and_compresses():
    tok_a, seqs_a = corpus_sequences(1024)
    tok_b, seqs_b = corpus_sequences(1024)
    assert tok_a == tok_b and all(np.array_equal(x, y) for x, y in zip(seqs_a, seqs_b))
    assert tok_a.vocab_size == 1024
    n_bytes = sum(len(tok_a.decode(s).encode()) for s in seqs_a)
    assert sum(s.size for s in seqs_a) < n_bytes / 2.5  # BPE shortens the text well below its bytes


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_any_text_round_trips(text):
    tok, _ = corpus_sequences(512)
    assert tok.decode(tok.encode(text)) == text
