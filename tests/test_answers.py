"""Final answers out of texts: the default extractor's order (boxed, "answer is", last
number), the normal form of a number, the extractor specs, and math-verify's reading and
equality called in this process as the bounded worker calls them."""

from __future__ import annotations

import threading

import pytest

from winnow import answers
from winnow.answers import answer_tools, extract_answer, load_extractor, normalise
from winnow.errors import WinnowError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{3}", "3"),  # a box at the very start of the text
        (r"1 then \boxed{2} then \boxed{7} and 9", "7"),  # the last box wins over numbers after it
        (r"so \boxed{\frac{1}{2}} done", r"\frac{1}{2}"),  # braces inside a box are balanced
        (r"\boxed{a{b}c}", "a{b}c"),
        (r"\boxed{unclosed and 5", "5"),  # an unclosed box is no box
        (r"\boxed{X}", "X"),
        ("The answer is 12 apples. 13", "12 apples. 13"),  # the rest of the line after "answer is"
        ("The answer is 12 apples.", "12 apples"),
        ("answer: 4\nthen 5", "4"),
        ("answer is 1\nso the final answer is: 2", "2"),  # the last "answer is"
        ("The ANSWER IS 6", "6"),
        ("5 and the answer is ", None),  # said, but nothing after it: no answer
        ("The answer is 7\x0c8", "7"),  # the first line of what follows, by splitlines' rule
        ("3 apples and -4.50 dollars", "-4.5"),
        ("it costs 1,000", "1000"),
        ("about .5 of it", "0.5"),
        ("nothing here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (" $ 12. $ ", "12"),  # spaces, dollars, a final period, spaces again
        ("$x$", "x"),
        ("x.", "x"),
        ("1,000", "1000"),
        ("1000.0", "1000"),
        ("-2.50", "-2.5"),
        ("999999999999999", "999999999999999"),
        ("1000000000000000", "1000000000000000.0"),  # 1e15 and up keep float's spelling
        ("X", "X"),
        ("  ", None),
        ("$.$", None),
    ],
)
def test_normalise(answer, expected):
    assert normalise(answer) == expected


def test_load_extractor_specs():
    assert load_extractor("auto") is extract_answer
    assert answer_tools("auto") == (extract_answer, None)
    assert answer_tools("math") == (answers.math_answer, answers.math_equal)
    assert load_extractor("winnow.answers:normalise") is normalise
    with pytest.raises(WinnowError) as bad:
        load_extractor("normalise")
    assert str(bad.value) == (
        "adaptive.answer: use 'auto', 'math', 'module:function' or 'file.py:function', got 'normalise'"
    )


def test_math_verify_reading_and_equality_in_process():
    # what the bounded worker runs, called here so that a change to it shows in this process
    assert answers._math_answer(r"so x = \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert answers._math_answer("no idea") is None
    assert answers._math_equal("0.5", r"\frac{1}{2}") is True
    assert answers._math_equal("2", "3") is False


def test_math_verify_runs_off_the_main_thread_without_its_own_alarm():
    # math-verify's own limit is SIGALRM, which a thread other than the main one cannot set:
    # the bounded worker's limit replaces it, so it must be off
    box: dict = {}

    def call():
        box["answer"] = answers._math_answer(r"\boxed{\frac{1}{2}}")
        box["equal"] = answers._math_equal("0.5", r"\frac{1}{2}")

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(60)
    assert box == {"answer": r"\frac{1}{2}", "equal": True}


def test_math_answer_in_the_bounded_worker(monkeypatch):
    assert answers.math_answer("So the answer is 42.") == "42"
    assert answers.math_answer("no idea") is None
    # a text sympy takes seconds to read: out of time, so no answer
    monkeypatch.setattr(answers, "MATH_TIMEOUT_S", 0.5)
    long_sum = "+".join(f"x_{{{i}}}^{{{i}}}" for i in range(300))
    assert answers.math_answer(rf"\boxed{{{long_sum}}}") is None
