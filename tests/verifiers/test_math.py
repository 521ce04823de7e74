"""The math verifier against a case set with known truth, its references as datasets write
them, and its time limit on expressions that keep sympy busy for hours, on any thread;
the ifeval searches for a row's own patterns, bounded the same way."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from winnow.bounded import GRACE_S, OUT_OF_TIME, bounded_map
from winnow.errors import WinnowError
from winnow.verifiers.ifeval import check_row
from winnow.verifiers.math import math

pytest.importorskip("math_verify")

CASES = Path(__file__).parent / "cases" / "math.jsonl"
# a power tower and a nested factorial: sympy works on either for hours
PATHOLOGICAL = [r"so \boxed{9^{9^{9^{9}}}}", r"so \boxed{((10!)!)!}"]


def test_every_case_gets_its_known_verdict():
    rows = [json.loads(line) for line in CASES.read_text().splitlines()]
    assert len(rows) >= 100
    got = math(["q"] * len(rows), [r["completion"] for r in rows], answer=[r["reference"] for r in rows])
    wrong = [(r["class"], r["reference"], r["completion"], r["expected"], v) for r, v in zip(rows, got, strict=True)]
    assert [w for w in wrong if w[3] != w[4]] == []


def test_the_case_set_covers_every_class():
    classes = {json.loads(line)["class"] for line in CASES.read_text().splitlines()}
    assert {"pi", "interval", "inequality", "scientific", "set", "tuple", "dfrac", "currency", "sqrt"} <= classes
    assert {"polynomial", "text", "json_number", "non_scalar", "unreadable", "gsm8k", "fraction"} <= classes
    assert {"decimal", "thousands", "delimited"} <= classes


def test_raw_latex_references_are_read_whole_not_by_their_last_number():
    completions = [r"\boxed{2\pi}", r"\boxed{2}", r"\boxed{(0, 1]}", r"\boxed{1}", r"\boxed{x > 2}", r"\boxed{2}"]
    refs = [r"2\pi", r"2\pi", "(0, 1]", "(0, 1]", "x > 2", "x > 2"]
    assert math(["q"] * 6, completions, answer=refs) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_json_numbers_exactly_and_non_scalars_unscored():
    scores = math(
        ["q"] * 5,
        [r"\boxed{0.00005}", r"\boxed{5}", r"\boxed{72}", r"\boxed{3}", "4"],
        answer=[0.00005, 0.00005, {"x": 5, "y": 72}, [1, 2, 3], True],
    )
    assert scores == [1.0, 0.0, None, None, None] and scores.no_answer == 0


def _timed(call) -> tuple[list, float]:
    start = time.monotonic()
    return call(), time.monotonic() - start


@pytest.mark.parametrize("where", ["main thread", "worker thread"])
def test_a_pathological_expression_costs_at_most_its_limit(where):
    math(["q"], ["1"], answer=["1"])  # the worker started, math-verify imported
    completions = [*PATHOLOGICAL, r"\boxed{5}"]

    def call():
        return math(["q"] * 3, completions, answer=["5"] * 3, timeout_s=1.0)

    if where == "main thread":
        scores, took = _timed(call)
    else:
        box: dict = {}
        thread = threading.Thread(target=lambda: box.update(result=_timed(call)))
        thread.start()
        thread.join(60)
        scores, took = box["result"]
    # not verified in time: 0.0, not no_answer; the item after them is checked as usual
    assert scores == [0.0, 0.0, 1.0] and scores.no_answer == 0
    assert took < 2 * (1.0 + GRACE_S) + 1.5, took


def test_workers_are_started_once_and_reused():
    from winnow import bounded

    math(["q"], ["1"], answer=["1"])
    pids = {w.process.pid for w in bounded._POOL.idle}
    for _ in range(3):
        assert math(["q"] * 4, ["1", "2", "3", "x"], answer=["1", "2", "4", "5"]) == [1.0, 1.0, 0.0, 0.0]
    assert {w.process.pid for w in bounded._POOL.idle} == pids


def test_a_call_stuck_where_no_signal_reaches_is_killed_and_the_batch_goes_on():
    # system() waits in C for its child: the worker's timer cannot interrupt it, the caller kills the worker
    results, took = _timed(lambda: bounded_map("os:system", [("sleep 5",), ("exit 3",)], timeout_s=0.3))
    assert results[0] is OUT_OF_TIME and results[1] != 0
    assert took < 0.3 + GRACE_S + 2.0, took


def test_a_reference_that_runs_out_of_time_is_unscored():
    long_sum = "+".join(f"x_{{{i}}}^{{{i}}}" for i in range(300))  # seconds for sympy to read
    scores, took = _timed(lambda: math(["q"] * 2, [r"\boxed{5}"] * 2, answer=[long_sum, "5"], timeout_s=0.5))
    assert scores == [None, 1.0] and took < 0.5 + GRACE_S + 1.5, took


def test_a_catastrophic_keyword_pattern_is_bounded_and_named():
    start = time.monotonic()
    with pytest.raises(WinnowError, match=r"the pattern '\(a\|aa\)\+\$' took longer than 0.5 s to search"):
        check_row("a" * 40 + "b", ["keywords:existence"], [{"keywords": ["(a|aa)+$"]}])
    assert time.monotonic() - start < 10
    # the pattern IFEval's users hit: the regex engine answers it at once
    assert check_row("a" * 40 + "b", ["keywords:existence"], [{"keywords": ["(a+)+$"]}]) == [False]


def test_a_math_vote_is_bounded_off_the_main_thread(monkeypatch):
    # votes (adaptive steps, maj@k) read and compare answers with math-verify in any thread
    from winnow import answers

    monkeypatch.setattr(answers, "MATH_TIMEOUT_S", 1.0)
    answers.math_equal.cache_clear()
    box: dict = {}

    def call():
        box["result"] = _timed(lambda: (answers.math_equal("9^{9^{9^{9}}}", "5"), answers.math_answer("so 0.5")))

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(60)
    (same, answer), took = box["result"]
    assert same is False and answer == "0.5"
    assert took < 1.0 + GRACE_S + 2.0, took


def test_the_worker_side_reads_and_checks_in_this_process_and_off_the_main_thread():
    # what the bounded worker runs, called here so that a change to it shows in this process;
    # in a thread, as math-verify's own SIGALRM limit (which only the main thread may set) is off
    import logging

    from winnow.verifiers import math as verifier

    box: dict = {}
    logging.getLogger("math_verify").setLevel(logging.NOTSET)  # as a fresh worker has it

    def call():
        verifier._import_math_verify()
        box["readable"] = [verifier._readable(t) for t in ("$x^2$", "$$", "hello")]
        box["checks"] = [verifier._check(c, "$0.5$") for c in (r"so \boxed{\frac{1}{2}}", "It is 2", "no idea")]

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(60)
    assert box == {"readable": [True, False, False], "checks": [1.0, 0.0, None]}
    assert logging.getLogger("math_verify").level == logging.ERROR


@pytest.mark.parametrize(
    ("reference", "text"),
    [
        (72, "72"),
        (True, None),
        (100.0, "100"),
        (2.5, "2.5"),
        (0.5, "0.5"),
        (1e20, "100000000000000000000"),
        ("5e-05", "0.00005"),  # numbers in exponent form: their exact decimal
        ("1e2", "100"),
        ("2.50e0", "2.5"),
        ("2.0e0", "2"),
        ("inf", "$\\infty$"),
        ("Natalia sold 48 clips. #### 72", "$72$"),  # GSM8K: after the last ####
        ("a #### b #### 3", "$3$"),
        ("2*pi", "$2*\\pi$"),
        ("x^2", "$x^2$"),  # a LaTeX mark: as it is, between $
        ("x**2", "$x^2$"),  # a power written as in Python
        ("2 and 3", "$2 \\text{and} 3$"),
        ("2 OR 3", "$2 \\text{OR} 3$"),
        ("12 dollars and 50 cents", None),  # words between numbers: no one number
        ("$5", "$\\$5$"),  # a currency sign, escaped
    ],
)
def test_gold_text(reference, text):
    from winnow.verifiers.math import gold_text

    assert gold_text(reference) == text
