"""Sentence and word splitting that needs no downloaded data.

IFEval's checkers (``lm_eval/tasks/ifeval/instructions_util.py``) count sentences with
nltk's punkt model and tokenize words for ``change_case:capital_word_frequency`` with
``nltk.word_tokenize``; both need punkt's data, a download that offline machines lack.
The functions here stand in for them and say where they depart:

- :func:`count_words` is exact: IFEval counts ``nltk.tokenize.RegexpTokenizer(r"\\w+")``
  tokens, which is ``re.findall(r"\\w+", text)``.
- :func:`count_sentences` follows punkt's rule (a sentence ends at ``.``, ``?`` or ``!``,
  optionally followed by closing quotes or brackets, then whitespace or the end) with a
  fixed abbreviation list in place of punkt's learned one. It departs from punkt on
  abbreviations outside the list, on an ellipsis (a boundary here only before an
  upper-case letter) and on punkt's orthographic heuristics for rare words.
- :func:`word_tokens` follows the Treebank tokenizer behind ``nltk.word_tokenize`` where
  it matters for counting upper-case words: punctuation is split off, hyphenated words
  stay whole and contractions are split (``DON'T`` -> ``DO``, ``N'T``).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")

# A run of sentence-final punctuation, closing quotes/brackets, then whitespace or the end.
_SENTENCE_END = re.compile(r"""[.?!]+["'”’)\]]*(?=\s|$)""")

# Tokens that punkt's English model treats as abbreviations: a period after them does
# not end a sentence. Lower case, without the final period.
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st vs etc e.g i.e inc ltd co corp no nos fig figs approx dept est
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
    u.s u.k u.n a.m p.m ph.d cf al ed eds vol vols pp gen col lt capt sgt rev gov sen rep
    ave blvd rd mt ft hr hrs min sec cm km kg mg ml oz lb lbs""".split()
)

# Treebank splits these characters off as tokens of their own; hyphens, apostrophes
# inside words and periods inside words (U.S.A) stay.
_PUNCT_SPLIT = re.compile(r"""([,;:!?()\[\]{}<>"“”`@#$%&*+=/\\|~^]|\.(?=\s|$)|\.\.\.)""")
_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'m|'d|'re|'ve|'ll)$")


def count_words(text: str) -> int:
    """Number of ``\\w+`` tokens, exactly as IFEval counts words.

    >>> count_words("Hello, world! It's 3pm.")
    5
    """
    return len(_WORD.findall(text))


def sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, punkt-style (see the module docstring).

    >>> sentences("Dr. Smith arrived. He sat down! Did he? Yes")
    ['Dr. Smith arrived.', 'He sat down!', 'Did he?', 'Yes']
    """
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        run = m.group().rstrip("\"'”’)]")
        before = text[start : m.start()]
        words = before.split()
        last = words[-1].lower().lstrip("\"'“‘([") if words else ""
        if run == "." and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
            continue  # "Dr." or an initial such as "J." does not end a sentence
        if ".." in run:
            nxt = text[m.end() :].lstrip()
            if not nxt[:1].isupper():
                continue  # an ellipsis inside a sentence
        piece = text[start : m.end()].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def count_sentences(text: str) -> int:
    """Number of sentences (:func:`sentences`).

    >>> count_sentences("One. Two? Three!")
    3
    """
    return len(sentences(text))


def word_tokens(text: str) -> list[str]:
    """Treebank-style word tokens (see the module docstring).

    >>> word_tokens('I DON\\'T know, "WELL-KNOWN" U.S.A.')
    ['I', 'DO', "N'T", 'know', ',', '"', 'WELL-KNOWN', '"', 'U.S.A', '.']
    """
    tokens: list[str] = []
    for chunk in _PUNCT_SPLIT.sub(r" \1 ", text).split():
        m = _CLITIC.match(chunk)
        if m:
            tokens.extend(m.groups())
        else:
            tokens.append(chunk)
    return tokens
