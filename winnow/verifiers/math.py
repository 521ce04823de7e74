"""``math``: the final answer checked against the reference with Hugging Face's math-verify.

The answer is what math-verify extracts from the completion: a ``\\boxed{}`` first, else
the last expression, so ``\\frac{1}{2}``, ``0.5`` and ``1/2`` agree, and ``1,000`` equals
``1000``.

The reference is read as datasets write it (:func:`gold_text` gives the rule): a GSM8K
solution after its ``####``; text already in math delimiters (``$...$``, ``\\(...\\)``,
``\\[...\\]``, ``\\boxed{}``) exactly as math-verify reads it; raw LaTeX, as MATH-style
answer columns store it (``2\\pi``, ``(0, 1]``, ``\\{1, 2, 3\\}``, ``\\dfrac{3}{4}``), as
LaTeX, which math-verify reads only inside delimiters; a JSON number as its exact decimal.
A reference that is not a scalar (a dict, a list) or cannot be read is unscored.

Every reading and comparison runs in a worker process with a time limit
(:mod:`winnow.bounded`), so an adversarial expression that would keep sympy
busy for hours costs at most ``timeout_s`` (plus a second's grace), on any thread.
"""

from __future__ import annotations

import numbers
import re
from decimal import Decimal
from functools import lru_cache

from winnow.bounded import OUT_OF_TIME, bounded_map
from winnow.verifiers import Scores, references

TIMEOUT_S = 5.0
"""Seconds allowed for reading one reference, and for reading and comparing one completion."""

_DELIMITED = re.compile(r"(?<!\\)\$.*?(?<!\\)\$|\\\(|\\\[|\\boxed", re.DOTALL)
_LATEX_MARK = re.compile(r"[\\^_{}]")
# names an expression writes without a backslash, and the LaTeX for each (sqrt(2) reads as it is)
_COMMANDS = {n: "\\" + n for n in ("pi", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp")}
_COMMANDS |= {"oo": "\\infty", "inf": "\\infty", "infinity": "\\infty"}
_NAME = re.compile(r"(?<![A-Za-z\\])(?:" + "|".join(sorted(_COMMANDS, key=len, reverse=True)) + r")(?![A-Za-z])")
# a run of prose: words of two letters or more, each with a space, a bracket or a stop on
# either side ("2xy+3" is math: x times y; "Monday." and "2 and 3" are words)
_WORD = r"(?<![^\s(])[A-Za-z]{2,}(?![^\s.,;:!?)])"
_WORDS = re.compile(rf"{_WORD}(?:\s+{_WORD})*")
# words between two numbers, as in "12 dollars and 50 cents": no single number is the answer
_NUMBER_WORDS_NUMBER = re.compile(r"\d\s+([A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*)\s+[-+]?\.?\d")
_CONNECTORS = frozenset({"and", "or"})
_EXPONENT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def math(
    prompts: list, completions: list[str], *, reference_column: str = "answer", timeout_s: float = TIMEOUT_S, **kw
) -> Scores:
    """1.0 where the completion's final answer equals the reference, else 0.0.

    Returns list[float | None], len = completions. A completion with no expression to read
    is 0.0 and counted in ``no_answer``; one whose reading or comparison runs past
    ``timeout_s`` is 0.0 (not verified) and not counted there. A row whose reference is
    missing (null), not a scalar, unreadable, or not read within ``timeout_s`` is unscored
    (None): the row, not the model, is at fault.

    >>> math(["p"] * 4, ["so x = \\\\boxed{\\\\frac{1}{2}}", "x is 0.5", "It is 2", "no idea"], answer=["1/2"] * 4)
    [1.0, 1.0, 0.0, 0.0]
    >>> math(["p"] * 3, ["\\\\boxed{2\\\\pi}", "\\\\boxed{2}", "\\\\boxed{72}"], answer=["2\\\\pi", "2\\\\pi", {"x": 72}])
    [1.0, 0.0, None]
    """
    golds = [gold_text(r) for r in references(kw, reference_column, "math")]
    distinct = list(dict.fromkeys(g for g in golds if g is not None))
    read = bounded_map(f"{__name__}:_readable", [(g,) for g in distinct], timeout_s, setup=_SETUP)
    readable = {g for g, ok in zip(distinct, read, strict=True) if ok is True}  # not OUT_OF_TIME
    scored = [i for i, g in enumerate(golds) if g in readable]
    verdicts = bounded_map(f"{__name__}:_check", [(completions[i], golds[i]) for i in scored], timeout_s, setup=_SETUP)
    out: list[float | None] = [None] * len(completions)
    no_answer: list[int] = []
    for i, verdict in zip(scored, verdicts, strict=True):
        if verdict is None:
            no_answer.append(i)
        out[i] = 0.0 if verdict is None or verdict is OUT_OF_TIME else verdict
    return Scores(out, no_answer_at=no_answer)


def gold_text(reference) -> str | None:
    """The text handed to math-verify's ``parse`` for a reference; None if it is unscored.

    - a number (JSON int or float): its exact decimal, without an exponent;
    - a string, after its ``####`` if it has one (GSM8K):
      - with math delimiters (``$...$``, ``\\(``, ``\\[``, ``\\boxed``): as it is;
      - with LaTeX marks (a backslash, ``^``, ``_``, braces): as LaTeX, between ``$``;
      - else as an expression, written as LaTeX: ``**`` as ``^``, ``pi``/``sin``/``log``/...
        as commands, ``oo``/``inf`` as ``\\infty``, a lone ``$`` (a currency sign)
        escaped, and each run of words (``dollars``, ``and``, ``Monday``) as ``\\text{}``,
        which math-verify drops after a number and keeps as a word alone; but words
        other than ``and``/``or`` between two numbers (``12 dollars and 50 cents``) leave
        no one number to check against: None;
    - anything else (null, a bool, a dict, a list, NaN, an empty string): None.

    >>> [gold_text(r) for r in [72, 0.00005, 1e20, "#### 1,000", "2\\\\pi", "(0, 1]", "$5", "$x^2$", "5e-05"]]
    ['72', '0.00005', '100000000000000000000', '$1,000$', '$2\\\\pi$', '$(0, 1]$', '$\\\\$5$', '$x^2$', '0.00005']
    >>> [gold_text(r) for r in ["Monday", "5 dollars", "2 and 3", "2*pi", "x**2", "sqrt(2)/2"]]
    ['$\\\\text{Monday}$', '$5 \\\\text{dollars}$', '$2 \\\\text{and} 3$', '$2*\\\\pi$', '$x^2$', '$sqrt(2)/2$']
    >>> [gold_text(r) for r in [{"x": 5}, [1, 2], True, None, float("nan"), " ", "#### ", "3 cats 4 dogs"]]
    [None, None, None, None, None, None, None, None]
    """
    if isinstance(reference, bool) or not isinstance(reference, str | numbers.Real):
        return None
    if isinstance(reference, numbers.Integral):
        return str(int(reference))
    if isinstance(reference, numbers.Real):
        return _decimal(repr(float(reference)))
    text = reference.rpartition("####")[2] if "####" in reference else reference
    text = " ".join(text.split())  # inline $...$ stops at a line break
    if not text:
        return None
    if _DELIMITED.search(text):
        return text
    if _EXPONENT.fullmatch(text):
        return _decimal(text)
    if not _LATEX_MARK.search(text):
        if any(m.group(1).lower() not in _CONNECTORS for m in _NUMBER_WORDS_NUMBER.finditer(text)):
            return None
        text = re.sub(r"(?<!\\)\$", r"\\$", text.replace("**", "^"))
        text = _NAME.sub(lambda m: _COMMANDS[m.group(0)], text)
        text = _WORDS.sub(lambda m: f"\\text{{{m.group(0)}}}", text)
    return f"${text}$"


def _decimal(number: str) -> str | None:
    """A number's exact decimal, without an exponent; None for NaN and infinities."""
    value = Decimal(number)
    if not value.is_finite():
        return None
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# ---- run in the bounded worker --------------------------------------------------------------

_SETUP = f"{__name__}:_import_math_verify"


def _import_math_verify() -> None:
    """Once per worker, before its first item: sympy's import (about a second) is not an item's time."""
    import logging

    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled", once per worker


@lru_cache(maxsize=4096)
def _gold(text: str) -> list:
    """The parsed reference; cached, since every sample of a prompt shares it. math-verify's
    own SIGALRM limit is off: it would replace the worker's timer."""
    from math_verify import parse

    return parse(text, parsing_timeout=None)


def _readable(text: str) -> bool:
    return bool(_gold(text))


def _check(completion: str, text: str) -> float | None:
    """1.0 or 0.0; None when the completion holds no expression."""
    from math_verify import parse, verify

    answer = parse(completion, parsing_timeout=None)
    if not answer:
        return None
    return 1.0 if verify(_gold(text), answer, timeout_seconds=None) else 0.0
