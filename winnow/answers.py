"""Final answers pulled out of completion texts, for votes and consensus.

``extract_answer`` is the default extractor: the last ``\\boxed{...}``, else the text after
the last "answer is" / "answer:", else the last number; None when there is none. Answers
are normalised so that plain spellings of one number vote together ("1,000", "1000.0" and
"1000" are one answer). A verifier with its own equivalence (math-verify for math) is
passed to the votes as ``equal`` instead (``winnow.select.vote_classes``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import cast

from winnow.errors import WinnowError
from winnow.loader import load

Extractor = Callable[[str], str | None]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The final answer of a completion, normalised; None if it states none.

    >>> extract_answer(r"so x = \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> extract_answer("The answer is: 1,000.")
    '1000'
    >>> extract_answer("3 apples and 4.50 dollars")
    '4.5'
    >>> extract_answer("no idea") is None
    True
    """
    boxed = _last_boxed(text)
    if boxed is not None:
        return normalise(boxed)
    said = _ANSWER_IS.findall(text)
    if said:
        line = said[-1].strip().splitlines()[0] if said[-1].strip() else ""
        return normalise(line) if line else None
    numbers = _NUMBER.findall(text)
    return normalise(numbers[-1]) if numbers else None


def normalise(answer: str) -> str | None:
    """Strip spaces, $ signs and a final period; a plain number in canonical form ("2.0" -> "2")."""
    answer = answer.strip().strip("$").strip().rstrip(".").strip()
    plain = answer.replace(",", "")
    if _NUMBER.fullmatch(plain):
        value = float(plain)
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return answer or None


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, braces balanced; None if absent or unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


MATH_TIMEOUT_S = 5.0
"""Seconds allowed for math-verify to read one answer, or to compare two (as the math
verifier allows): sympy can take minutes on an adversarial text, and a vote runs in any thread."""


def math_answer(text: str) -> str | None:
    """The final answer math-verify reads in a text (a ``\\boxed{}`` first, else the last
    expression), as written; None if it reads none or not within ``MATH_TIMEOUT_S`` (read in
    a bounded worker process, ``winnow.bounded``). Needs the ``verifiers`` extra.

    >>> math_answer("So the answer is 42."), math_answer("no idea")
    ('42', None)
    """
    from winnow.bounded import OUT_OF_TIME, bounded_map

    [answer] = bounded_map(f"{__name__}:_math_answer", [(text,)], MATH_TIMEOUT_S, setup=_MATH_SETUP)
    return None if answer is OUT_OF_TIME else answer


@lru_cache(maxsize=65536)
def math_equal(a: str, b: str) -> bool:
    """Whether math-verify holds two answers equal (``1/2``, ``0.5`` and ``\\frac{1}{2}`` are
    one); False when the comparison runs past ``MATH_TIMEOUT_S``.

    >>> math_equal("1/2", "0.5"), math_equal("1/2", "2")
    (True, False)
    """
    from winnow.bounded import bounded_map

    if a == b:
        return True
    [same] = bounded_map(f"{__name__}:_math_equal", [(a, b)], MATH_TIMEOUT_S, setup=_MATH_SETUP)
    return same is True  # not OUT_OF_TIME


_MATH_SETUP = f"{__name__}:_import_math_verify"


def _import_math_verify() -> None:
    """Run once in each bounded worker, outside the items' limits (sympy loads in ~1 s)."""
    import math_verify  # noqa: F401


def _math_answer(text: str) -> str | None:
    """In the bounded worker: math-verify's own SIGALRM limit is off (it would replace the worker's timer)."""
    from math_verify import parse

    parsed = parse(text, parsing_timeout=None)
    return str(parsed[-1]) if parsed else None


def _math_equal(a: str, b: str) -> bool:
    from math_verify import parse, verify

    return bool(
        verify(parse(f"${a}$", parsing_timeout=None), parse(f"${b}$", parsing_timeout=None), timeout_seconds=None)
    )


def answer_tools(spec: str) -> tuple[Extractor, Callable[[str, str], bool] | None]:
    """The extractor and the equivalence a vote uses: ``auto`` (``extract_answer``, ``==``),
    ``math`` (math-verify's reading and equality, the math verifier's own) or a
    ``module:function`` / ``file.py:function`` extractor (with ``==``)."""
    if spec == "math":
        return math_answer, math_equal
    return load_extractor(spec), None


def load_extractor(spec: str) -> Extractor:
    """``auto`` (``extract_answer``) or a ``module:function`` / ``file.py:function`` text -> str | None."""
    if spec == "auto":
        return extract_answer
    if ":" not in spec:
        raise WinnowError(f"adaptive.answer: use 'auto', 'math', 'module:function' or 'file.py:function', got {spec!r}")
    return cast(Extractor, load(spec))
