"""Word and sentence counts as IFEval's checkers make them: NLTK's Treebank tokenizer on
sentences it was hand-checked against, and the word and sentence counts."""

from __future__ import annotations

import pytest

from winnow.verifiers import text
from winnow.verifiers.text import count_sentences, count_words, sentences, treebank_tokens, word_tokens


@pytest.mark.parametrize(
    ("sentence", "tokens"),
    [
        ("I cannot go, gimme that.", ["I", "can", "not", "go", ",", "gim", "me", "that", "."]),
        (
            '"Hello," she said -- twice; it\'s 5:30 (really) [no] {x} <y>...',
            ["``", "Hello", ",", "''", "she", "said", "--", "twice", ";", "it", "'s", "5:30"]
            + ["(", "really", ")", "[", "no", "]", "{", "x", "}", "<", "y", ">", "..."],
        ),
        ("won't 'tis they're", ["wo", "n't", "'", "tis", "they", "'re"]),
        ("", []),
    ],
)
def test_treebank_tokens(sentence, tokens):
    assert treebank_tokens(sentence) == tokens


def test_words_and_sentences():
    assert count_words("It's 3 o'clock, isn't it?") == 8
    assert count_words("") == 0
    assert word_tokens("One here. Two there! Three?") == ["One", "here", ".", "Two", "there", "!", "Three", "?"]
    assert sentences("One. Two.") == ["One.", "Two."]
    assert (count_sentences("One. Two? Three!"), count_sentences("")) == (3, 0)


def test_punkt_is_reported_missing_when_its_tables_cannot_be_imported(monkeypatch):
    assert text.punkt_available() is True

    def missing():
        raise ImportError("No module named 'punkt'")

    monkeypatch.setattr(text, "_english", missing)
    assert text.punkt_available() is False
