"""``choice``: the multiple-choice letter, read from the completion's explicit answer.

Letters A-J (MMLU-Pro has ten options). The rule, in order:

1. **Explicit statements** are read, and the last one in the text wins (a model that
   corrects itself is read by its correction): ``\\boxed{B}``; a cue then a letter
   (``The answer is B``, ``answer: (d)``, ``Answer - C``, ``Answer -> B``, ``the best option
   is C.``, ``I choose B``, ``I'd go with (C)``, ``I'd say B``, ``correct choice: **B**``,
   ``my choice: E``, ``it's B``, ``actually (C)``); a letter then a verdict (``(B) is
   correct``, ``B is the right answer``); a line that is only ``Option B``; ``Therefore, B.``
   where the letter ends the line.
2. **A hedge is no answer**: when two letters are joined by ``or`` or ``/`` (``either B or
   C``, ``B, C, or D``, ``B (or possibly C)``), or end a sentence joined by ``and`` (``Answer: B and C``), at
   or after the last statement, nothing is read (``not A or B`` and ``A and B are wrong``
   are no hedge).
3. Without a statement, **weaker forms** are read when they name one letter only: the
   completion that is a letter alone (``B``, ``(b).``), ``(B)``, ``**B**``, ``\\textbf{C}``,
   ``Option B``, a line starting ``B.``, ``B)`` or ``B:``, ``B.`` after two spaces. Two
   different letters there are a list of options (``A) 3\\nB) 4``, ``A. 1  B. 2``) or a
   comparison, not an answer; a letter set aside (``not (A)``, ``rather than (A)``,
   ``over D``) is not counted.

Case: a letter in parentheses, brackets, ``\\boxed{}`` or ``\\textbf{}`` is read in either
case. After a cue, a capital is read; a lower-case letter is read when it is wrapped
(``**d**``, ``$b$``, ``'a'``), punctuated (``answer is a,``) or ends its line (``answer:
a``), and ``b``-``h`` and ``j`` also before a word (``the answer is b because``). The
article in ``the answer is a prime`` and the pronoun in ``answer: I think it is C`` are no
letters (that one reads C).
"""

from __future__ import annotations

import re

from winnow.verifiers import Scores, references

LETTERS = "ABCDEFGHIJ"

_OPEN = r"(?:\*\*|__|\$|\\textbf\{|\\text\{|\\mathrm\{|[\"'“‘`])*\s*"
_LETTER = (
    r"(?:\(\s*([A-Ja-j])\s*\)|\[\s*([A-Ja-j])\s*\]"  # (b) [b]: either case
    r"|([A-HJ])(?!\w|['’]\w)|(I)(?!\w|['’]\w|\s+[a-z])"  # B: capitals; I not before a word
    r"|([a-j])(?=[.,;:!?)]|\*\*|\$|\}|[\"'”’`](?!\w)|[ \t]*$)"  # lower case: wrapped, punctuated, line end
    r"|([b-hj])(?=[ \t]+[A-Za-z]))"  # or before a word, but for the article a and the pronoun i
)
_CUE = (
    r"\b(?=[abcfgilopqrs])"  # the first letters of the cues below: the scan skips other positions fast
    r"(?:\b(?:answer|solution|response)(?:\s+(?:choice|option|letter))?(?:\s+(?:is|would\s+be|should\s+be|will\s+be|must\s+be))?"
    r"|\b(?:option|choice|letter|pick|one)\s+(?:is|would\s+be|should\s+be)"
    r"|\b(?:correct|right|best|final)\s+(?:option|choice|letter|one)"
    r"|\bI(?:\s+would|'d|\s+will|'ll)?\s+(?:choose|pick|select|go\s+with)|\bI(?:\s+would|'d)\s+say"
    r"|\b(?:choice|pick|selection)(?=\s*:)"
    r"|\b(?:choose|chose|pick|select|go\s+with|going\s+with)\b(?:\s+(?:option|choice|answer|letter))?"
    r"|\bit(?:'s|’s|\s+is|\s+must\s+be|\s+should\s+be)|\bactually\b,?)"
    r"(?:\s+(?:clearly|definitely|therefore|thus|then))?"
)
STATEMENTS = (
    re.compile(r"\\boxed\s*\{\s*(?:\\(?:text|textbf|mathrm|mathbf)\s*\{\s*)?\(?\s*([A-Ja-j])\s*\)?(?=[\s}).:,])"),
    re.compile(
        rf"(?im:{_CUE}\s*(?:->|=>|→|[:=\-–—]|\bis\b)?\s*(?:\b(?:option|choice|letter)\b\s*)?{_OPEN})(?-i:{_LETTER})"
    ),
    re.compile(
        r"(?:\(([A-Ja-j])\)|(?<![\w'’])(?:(?i:option|choice)\s+)?([A-HJ])(?![\w'’]))"
        r"(?i:\s+(?:is|seems|would\s+be)\s+(?:the\s+)?(?:correct|right|best|answer|true))"
    ),
    re.compile(r"(?im:^[\W_]*(?:option|choice)\s+)(?:\(([A-Ja-j])\)|([A-J]))[\W_]*$"),
    re.compile(rf"(?im:\b(?:so|therefore|thus|hence)\b[,:]?\s+{_OPEN})(?-i:{_LETTER})(?=[*$'\"]*[.!]?[ \t]*$)", re.M),
)
"""Explicit answer statements; a match's letter is its one capture group that matched."""

HEDGE = re.compile(
    rf"{_LETTER}(?:\s*,?\s*\(?\s*(?:\bor\b(?:\s+(?:possibly|maybe|perhaps))?|/)\s*{_OPEN}{_LETTER}"  # B or C, B (or maybe C)
    rf"|,?\s+and\s+{_OPEN}{_LETTER}(?=[*$'\"]*[ \t]*(?:[.,;!)]|$)))",  # B and C. (not "A and B are wrong")
    re.M,
)
_JOINS = re.compile(r"(?i:[a-j)\]*$'\"’”}]\s*,?\s*\(?\s*(?:or|and)\b|/)")
"""A cheap test that a hedge may be there: a letter or its wrapping, then ``or``, ``and`` or ``/``."""
NEGATED = re.compile(
    r"(?i:\b(?:not|neither|nor|than|over|instead\s+of|except|rule\s+out|ruling\s+out|eliminate)\s+(?:options?\s+)?)$"
)
"""Words before a letter that set it aside: such a mention is neither a hedge nor a weak answer."""

WEAK = (
    re.compile(r"\A[\W_]*(?:\(([A-Ja-j])\)|([A-Ja-j]))[\W_]*\Z"),
    re.compile(r"(?<![\w\\])\(([A-J])\)"),
    re.compile(r"\*\*\s*\(?([A-J])\)?\.?\s*\*\*|\\textbf\{\s*\(?([A-Ja-j])\)?\.?\s*\}"),
    re.compile(r"(?<![\w'’])(?i:option|choice)\s+(?:\(([A-Ja-j])\)|([A-J])(?![\w'’]))"),
    re.compile(r"(?m)^[ \t>#-]*(?:\*\*)?([A-J])(?:\*\*)?[ \t]*[.):]"),
    re.compile(r"(?:(?<=[ \t]{2})|(?<=\t))([A-J])[.):][ \t]"),  # options on one line: "A. 1  B. 2"
)
"""Weaker forms, read only when every one found names the same letter."""


def _letter(match: re.Match) -> str:
    return next(g for g in match.groups() if g).upper()


def read_choice(text: str) -> str | None:
    """The option letter a completion answers with, or None (see the module's rule).

    >>> [read_choice(t) for t in ["The answer is (b)", "answer: (d)", "the best option is C.", "Option B"]]
    ['B', 'D', 'C', 'B']
    >>> [read_choice(t) for t in ["I choose B", "Answer - C", "\\\\textbf{C}", "I'd go with (C) rather than (A)"]]
    ['B', 'C', 'C', 'C']
    >>> read_choice("\\\\boxed{B}. Wait, actually the answer is C")
    'C'
    >>> [read_choice(t) for t in ["A) 3\\nB) 4\\nC) 5", "either B or C", "The answer is B or C."]]
    [None, None, None]
    >>> [read_choice(t) for t in ["The answer is a prime number", "I think so", "answer: a"]]
    [None, None, 'A']
    """
    found = [(m.start(), _letter(m)) for pattern in STATEMENTS for m in pattern.finditer(text)]
    if found:
        start, letter = max(found)
        return None if _hedged(text, start) else letter
    weak = {_letter(m) for pattern in WEAK for m in pattern.finditer(text) if not _set_aside(text, m.start())}
    return weak.pop() if len(weak) == 1 else None


def _set_aside(text: str, at: int) -> bool:
    """Whether the letter mention at ``at`` follows a word that sets it aside (``not (A)``)."""
    return NEGATED.search(text[max(0, at - 40) : at]) is not None


def _hedged(text: str, start: int) -> bool:
    """Whether a hedge ends after the statement at ``start`` (it may hold that statement's letter)."""
    begin = max(0, start - 64)
    if not _JOINS.search(text, begin):  # no letter joined to another: nothing to look for
        return False
    return any(h.end() > start and not _set_aside(text, h.start()) for h in HEDGE.finditer(text, begin))


def reference_letter(reference) -> str | None:
    """``"B"``, ``"(B)"``, ``"b."`` or the index 1 -> ``"B"``; anything else -> None."""
    if isinstance(reference, int) and not isinstance(reference, bool):
        return LETTERS[reference] if 0 <= reference < len(LETTERS) else None
    if isinstance(reference, str):
        letter = reference.strip().strip("().:*").strip().upper()
        return letter if len(letter) == 1 and letter in LETTERS else None
    return None


def choice(prompts: list, completions: list[str], *, reference_column: str = "answer", **kw) -> Scores:
    """1.0 where the letter read equals the reference's, else 0.0; no letter (none stated, a
    hedge, a bare list of options): 0.0, counted in ``no_answer``; a row whose reference is
    no letter is unscored (None).

    >>> choice(["q"] * 3, ["(B)", "I think A.", "hmm"], answer=["B", "B", "B"])
    [1.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    no_answer: list[int] = []
    for i, (completion, reference) in enumerate(
        zip(completions, references(kw, reference_column, "choice"), strict=True)
    ):
        gold = reference_letter(reference)
        if gold is None:
            out.append(None)
            continue
        letter = read_choice(completion)
        if letter is None:
            no_answer.append(i)
        out.append(1.0 if letter == gold else 0.0)
    return Scores(out, no_answer_at=no_answer)
