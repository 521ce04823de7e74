"""``math``: the final answer checked against the reference with Hugging Face's math-verify.

The answer is what math-verify extracts: a ``\\boxed{}`` first, else the last expression,
so ``\\frac{1}{2}``, ``0.5`` and ``1/2`` agree, and ``1,000`` equals ``1000``. A GSM8K
reference (``... #### 72``) is read after its ``####``.
"""

from __future__ import annotations

import threading
from functools import lru_cache

from winnow.verifiers import Scores, references

PARSE_TIMEOUT_S = 5
"""math-verify's own limit per parse and per comparison (sympy can take a long time on
adversarial text). It uses SIGALRM, which only the main thread may set: elsewhere no limit."""


def math(prompts: list, completions: list[str], *, reference_column: str = "answer", **kw) -> Scores:
    """1.0 where the completion's final answer equals the reference, else 0.0.

    A completion with no expression to read is 0.0 and counted in ``no_answer``; a row whose
    reference is missing (null) or unreadable is unscored (None): the row, not the model, is at fault.

    >>> math(["p"] * 4, ["so x = \\\\boxed{\\\\frac{1}{2}}", "x is 0.5", "It is 2", "no idea"], answer=["1/2"] * 4)
    [1.0, 1.0, 0.0, 0.0]
    """
    from math_verify import parse, verify

    timeout = PARSE_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    out: list[float | None] = []
    no_answer = 0
    for completion, reference in zip(completions, references(kw, reference_column, "math"), strict=True):
        gold = _gold(_reference_text(reference), timeout) if reference is not None else None
        if not gold:
            out.append(None)
            continue
        answer = parse(completion, parsing_timeout=timeout)
        if not answer:
            no_answer += 1
            out.append(0.0)
            continue
        out.append(1.0 if verify(gold, answer, timeout_seconds=timeout) else 0.0)
    return Scores(out, no_answer=no_answer)


def _reference_text(reference) -> str:
    """A reference as text: a number as written, a GSM8K solution after its ``####``."""
    if isinstance(reference, bool):
        return ""
    text = str(reference)
    return text.rpartition("####")[2] if "####" in text else text


@lru_cache(maxsize=4096)
def _gold(text: str, timeout: int | None) -> list:
    """The parsed reference; cached, since every sample of a prompt shares it."""
    from math_verify import parse

    return parse(text, parsing_timeout=timeout) if text.strip() else []
