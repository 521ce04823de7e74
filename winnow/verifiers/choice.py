"""``choice``: the multiple-choice letter, read the way answers are written.

In order, the last of: ``\\boxed{B}``; ``answer is B`` / ``Answer: (B)``; ``(B)``; a line
starting ``B.``, ``B)`` or ``B:``; and a completion that is the letter alone. Letters A-J
(MMLU-Pro has ten options). The reference is a letter (``B``, ``(B)``) or a 0-based option
index (MMLU's ``answer`` column holds 0-3).
"""

from __future__ import annotations

import re

from winnow.verifiers import Scores, references

LETTERS = "ABCDEFGHIJ"
PATTERNS = (
    re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{\s*)?\(?([A-J])\)?\s*\}?\s*\}"),
    re.compile(r"(?i:answer)\s*(?:(?i:is)|:)?\s*:?\s*(?:(?i:option)\s*)?\**\s*\(?([A-J])\)?(?![A-Za-z0-9])"),
    re.compile(r"\(([A-J])\)"),
    re.compile(r"(?m)^\s*\**([A-J])\**\s*[.):]"),
    re.compile(r"^\W*([A-J])\W*$"),
)
"""Answer forms, most explicit first; the first form found wins, its last occurrence is taken."""


def read_choice(text: str) -> str | None:
    """The option letter a completion answers with, or None.

    >>> [read_choice(t) for t in ["(B)", "B. Paris", "so \\\\boxed{B}", "The answer is B", "Paris"]]
    ['B', 'B', 'B', 'B', None]
    """
    for pattern in PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1]
    return None


def reference_letter(reference) -> str | None:
    """``"B"``, ``"(B)"``, ``"b."`` or the index 1 -> ``"B"``; anything else -> None."""
    if isinstance(reference, int) and not isinstance(reference, bool):
        return LETTERS[reference] if 0 <= reference < len(LETTERS) else None
    if isinstance(reference, str):
        letter = reference.strip().strip("().:*").strip().upper()
        return letter if len(letter) == 1 and letter in LETTERS else None
    return None


def choice(prompts: list, completions: list[str], *, reference_column: str = "answer", **kw) -> Scores:
    """1.0 where the letter read equals the reference's, else 0.0; no letter: 0.0, counted in
    ``no_answer``; a row whose reference is no letter is unscored (None).

    >>> choice(["q"] * 3, ["(B)", "I think A.", "hmm"], answer=["B", "B", "B"])
    [1.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    no_answer = 0
    for completion, reference in zip(completions, references(kw, reference_column, "choice"), strict=True):
        gold = reference_letter(reference)
        if gold is None:
            out.append(None)
            continue
        letter = read_choice(completion)
        if letter is None:
            no_answer += 1
        out.append(1.0 if letter == gold else 0.0)
    return Scores(out, no_answer=no_answer)
