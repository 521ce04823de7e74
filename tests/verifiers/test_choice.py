"""``choice`` on the hand-written case set (tests/verifiers/cases/choice.jsonl): every
case's verdict exactly. A case is ``pass`` (1.0), ``fail`` (0.0 with a letter read) or
``no_answer`` (0.0, counted as no answer: a bare list of options, a hedge, prose)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from winnow.verifiers.choice import choice, read_choice

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "cases" / "choice.jsonl").read_text().splitlines()
    if line.strip()
]


def test_the_case_set_covers_many_forms():
    assert len(CASES) >= 80 and len({c["form"] for c in CASES}) == len(CASES)
    assert {c["expected"] for c in CASES} == {"pass", "fail", "no_answer"}


@pytest.mark.parametrize("case", CASES, ids=[c["form"] for c in CASES])
def test_choice_verdict(case):
    scores = choice(["q"], [case["completion"]], answer=[case["reference"]])
    got = "no_answer" if scores.no_answer_at else ("pass" if scores[0] == 1.0 else "fail")
    assert got == case["expected"], f"{case['completion']!r}: read as {got}"
    assert scores[0] == (1.0 if case["expected"] == "pass" else 0.0)


@pytest.mark.parametrize("text", ["*" * 20000, "The answer is B. " + "A or B " * 4000, "answer " * 5000, "$" * 20000])
def test_read_choice_stays_linear_on_long_runs(text):
    start = time.perf_counter()
    read_choice(text)
    assert time.perf_counter() - start < 1.0  # a quadratic pattern took 6 s on the run of stars
