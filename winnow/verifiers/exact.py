"""``exact``: the completion equals the reference once both are normalised.

Normalised: Unicode case folded, runs of whitespace made one space, punctuation and
whitespace at either end removed (``"  Paris. "`` equals ``"paris"``); punctuation inside
is kept (``"3.14"`` is not ``"314"``). A reference may be a list of accepted answers
(TriviaQA's aliases): any of them matches.

A reference is a string, or a number written out in full (``0.00005``, never ``5e-05``).
A row is unscored (None) when no accepted answer is left to compare: the reference is
null, empty or only whitespace and punctuation, a boolean, an object, a nested list or a
NaN. The row, not the model, is at fault; an empty completion against a real reference is
0.0 and counted as no answer.
"""

from __future__ import annotations

import string
from decimal import Decimal

from winnow.verifiers import Scores, references

STRIP = string.punctuation + string.whitespace + "“”‘’«»"


def normalise(text: str) -> str:
    """Case folded, whitespace collapsed, punctuation stripped at the ends.

    >>> normalise("  The  Eiffel\\nTower! ")
    'the eiffel tower'
    """
    return " ".join(text.casefold().split()).strip(STRIP)


def reference_text(reference) -> str | None:
    """One accepted answer as text, or None when it is no answer to compare.

    >>> [reference_text(r) for r in ["Paris", 42, 0.00005, 2.5, True, None, {"x": 1}, [1], float("nan")]]
    ['Paris', '42', '0.00005', '2.5', None, None, None, None, None]
    """
    if isinstance(reference, str):
        return reference
    if isinstance(reference, int) and not isinstance(reference, bool):
        return str(reference)
    if isinstance(reference, float) and Decimal(repr(reference)).is_finite():
        return format(Decimal(repr(reference)), "f")  # the shortest round-trip digits, no exponent
    return None


def exact(prompts: list, completions: list[str], *, reference_column: str = "answer", **kw) -> Scores:
    """1.0 where the normalised completion equals a normalised reference, else 0.0; an empty
    completion is 0.0, counted in ``no_answer``; a row without a reference to compare (see
    the module's rule) is unscored (None).

    >>> exact(["q"] * 4, ["Paris.", "paris, france", " ", ""], answer=["Paris", "Paris", "Paris", " "])
    [1.0, 0.0, 0.0, None]
    """
    out: list[float | None] = []
    no_answer: list[int] = []
    for i, (completion, reference) in enumerate(
        zip(completions, references(kw, reference_column, "exact"), strict=True)
    ):
        accepted = reference if isinstance(reference, list) else [reference]
        golds = {normalise(text) for text in map(reference_text, accepted) if text is not None} - {""}
        if not golds:  # nothing to compare with: the row's fault, not the model's
            out.append(None)
            continue
        answer = normalise(completion)
        if not answer:
            no_answer.append(i)
        out.append(1.0 if answer in golds else 0.0)
    return Scores(out, no_answer_at=no_answer)
