"""Verifiers: rewards that check a completion against its prompt row's reference.

A verifier follows the one reward contract (``winnow.rewards``):
``f(prompts, completions, **kw) -> list[float | None]``. The prompt row's other columns
(the reference answer, the unit tests, the instructions to check) arrive as keyword
arguments, one list per column aligned with ``completions``, as TRL passes dataset
columns to its reward functions. Options of a verifier are keyword-only arguments with
defaults.

A verifier returns :class:`Scores`: the rewards, plus how many completions held no answer
to check (scored 0.0), so that the score stage can count them in its summary.
"""

from __future__ import annotations

from collections.abc import Iterable


class Scores(list):
    """Rewards of one batch (list[float | None], len = completions) and ``no_answer``.

    ``no_answer`` counts the completions that held nothing to check (no final answer, no
    code block); each of them is in the list as 0.0.

    >>> s = Scores([1.0, 0.0, 0.0], no_answer=1)
    >>> s, s.no_answer
    ([1.0, 0.0, 0.0], 1)
    """

    def __init__(self, values: Iterable[float | None] = (), no_answer: int = 0) -> None:
        super().__init__(values)
        self.no_answer = no_answer


def references(kw: dict, column: str, verifier: str) -> list:
    """The reference column a verifier checks against (one value per completion).

    Raises KeyError naming the column and the columns there are; the score stage reports it.
    """
    if column not in kw:
        have = sorted(k for k in kw if k not in ("prompt_ids", "sample_indices"))
        raise KeyError(
            f"verifier {verifier!r} reads the reference from column {column!r}, which the prompts do not have "
            f"(columns: {', '.join(have) or 'none'}); set --reference-column"
        )
    return kw[column]
