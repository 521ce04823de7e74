"""``exact``: the completion equals the reference once both are normalised.

Normalised: Unicode case folded, runs of whitespace made one space, punctuation and
whitespace at either end removed (``"  Paris. "`` equals ``"paris"``); punctuation inside
is kept (``"3.14"`` is not ``"314"``). A reference may be a list of accepted answers
(TriviaQA's aliases): any of them matches.
"""

from __future__ import annotations

import string

from winnow.verifiers import Scores, references

STRIP = string.punctuation + string.whitespace + "“”‘’«»"


def normalise(text: str) -> str:
    """Case folded, whitespace collapsed, punctuation stripped at the ends.

    >>> normalise("  The  Eiffel\\nTower! ")
    'the eiffel tower'
    """
    return " ".join(text.casefold().split()).strip(STRIP)


def exact(prompts: list, completions: list[str], *, reference_column: str = "answer", **kw) -> Scores:
    """1.0 where the normalised completion equals a normalised reference, else 0.0; an empty
    completion is 0.0, counted in ``no_answer``; a row without a reference is unscored (None).

    >>> exact(["q"] * 3, ["Paris.", "paris, france", " "], answer=["Paris", "Paris", "Paris"])
    [1.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    no_answer = 0
    for completion, reference in zip(completions, references(kw, reference_column, "exact"), strict=True):
        accepted = reference if isinstance(reference, list) else [reference]
        golds = {normalise(str(r)) for r in accepted if r is not None and not isinstance(r, bool | dict)}
        if not golds:
            out.append(None)
            continue
        answer = normalise(completion)
        if not answer:
            no_answer += 1
        out.append(1.0 if answer in golds else 0.0)
    return Scores(out, no_answer=no_answer)
