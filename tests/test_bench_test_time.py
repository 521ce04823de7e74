"""benchmarks/bench_test_time.py: the methods read a hand-made sample matrix as worked out
here (which column each answers with, how many samples each reads, the tokens charged), and
rule then judge's rows read a scripted judge's verdicts as worked out here; the product
task's pilot questions are kept out of its measured ones; its --quick mode
runs end to end on the real model, with a served judge (slow)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import import_file

from winnow.rewards.fallback import parse_verdict, row_fields

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_test_time.py"


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(PATH.parent))  # the modules it imports from beside it
        yield import_file(PATH)
    del sys.modules["bench_test_time"]


def matrix(bench):
    """Two prompts, 8 samples each. Prompt 0 agrees on 4 from the start (right from sample 1
    on); prompt 1 never agrees (only sample 5 is right)."""
    answers = [
        ["3", "4", "4", "4", "4", "4", "4", "4"],
        ["1", "2", "3", None, "5", "6", "7", "8"],
    ]
    correct = np.array([[a == "4" for a in answers[0]], [j == 5 for j in range(8)]])
    tokens = np.arange(16).reshape(2, 8) + 1  # prompt 0: 1..8, prompt 1: 9..16
    texts = [[f"t{a}" for a in row] for row in answers]
    return bench.Matrix(correct=correct, tokens=tokens, texts=texts, answers=answers)


def test_methods_on_a_hand_made_matrix(bench):
    m = matrix(bench)
    one = bench.single(m)
    assert one.correct.tolist() == [7 / 8, 1 / 8] and one.tokens == 4.5 + 12.5 and one.samples == 2
    vote = bench.fixed("majority of 8", m, bench.voter(m), 8)
    # prompt 0 votes 4 (right); prompt 1's eight answers tie at one vote: the first, "1", wrong
    assert vote.correct.tolist() == [1.0, 0.0] and vote.samples == 16 and vote.tokens == sum(range(1, 17))
    # consensus 0.6: prompt 0 holds 3 of 4 after the first step; prompt 1 reads all 8
    stop = bench.stopped("consensus", m, ("consensus", 0.6), bench.voter(m), 8, 4)
    assert stop.correct.tolist() == [1.0, 0.0] and stop.samples == 4 + 8
    assert stop.tokens == (1 + 2 + 3 + 4) + sum(range(9, 17))
    oracle = bench.fixed("verifier", m, bench.verified(m), 8)
    assert oracle.correct.tolist() == [1.0, 1.0]
    first_pass = bench.stopped("pass", m, ("pass", 0.0), bench.verified(m), 8, 2)
    # prompt 0 passes at sample 1 (the first step of 2), prompt 1 at sample 5 (the third step)
    assert first_pass.samples == 2 + 6 and first_pass.correct.tolist() == [1.0, 1.0]
    assert first_pass.name == "pass (step 2)" and first_pass.tokens == (1 + 2) + (9 + 10 + 11 + 12 + 13 + 14)


def test_confidence_votes_and_confident_stopping_wait_out_the_warm_up(bench):
    m = matrix(bench)
    # prompt 1: sample 5 (the right "6") is far more confident than the rest together
    m.confidence = np.ones((2, 8))
    m.confidence[1, 5] = 20.0
    vote = bench.fixed("confidence", m, bench.confident_voter(m), 8)
    assert vote.correct.tolist() == [1.0, 1.0]
    # prompt 0 agrees from the first step, but the first step is the warm-up: it closes after 8
    # (share 7/8); prompt 1 closes once sample 5 is read, at 8 (20 of 27)
    stop = bench.stopped("cc", m, ("confident-consensus", 0.6), bench.confident_voter(m), 8, 4)
    assert stop.samples == 8 + 8 and stop.correct.tolist() == [1.0, 1.0] and stop.name == "cc (step 4)"


def test_the_band_holds_the_mean(bench):
    values = np.array([1.0, 0.0, 1.0, 1.0])
    low, high = bench.band(values)
    assert low <= 0.75 <= high
    assert bench.band(values, values) == (0.0, 0.0)


class ScriptedJudge:
    """Rule then judge with both halves scripted: each row's rule reading and judge reply
    (None: not asked), in the row fields ``RuleThenJudge`` records, 10 + 1 tokens a call."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def __call__(self, prompts, completions, **kw):
        self.calls.append((prompts, completions, kw))
        self.last_extras = []
        for rule, reply in self.script:
            verdict = None if reply is None else parse_verdict(reply)
            fields = row_fields(rule, verdict, reply)
            if reply is not None:
                fields["judge_usage"] = {"prompt_tokens": 10, "completion_tokens": 1}
            self.last_extras.append(fields)
        return [None] * len(completions)  # the benchmark reads the row fields only


def test_rule_then_judge_rows_on_a_hand_made_matrix(bench):
    from winnow.records import Prompt

    texts = [["\\boxed{4}", "four, that is 4", "\\boxed{5}", "it is 4"], ["\\boxed{6}", "", "seven", "\\boxed{8}"]]
    m = bench.Matrix(
        correct=np.zeros((3, 4), dtype=bool),
        tokens=np.arange(12).reshape(3, 4) + 1,
        texts=[*texts, ["x"] * 4],
        answers=[[None] * 4] * 3,
    )
    prompts = [Prompt(id=f"p{i}", text=f"q{i}", columns={"answer": a}) for i, a in enumerate(["4", "7", "1"])]
    # under fallback_on: fail the judge is asked about every non-empty row the rule does not pass
    judge = ScriptedJudge(
        [("pass", None), ("no_answer", "yes"), ("fail", "no"), ("no_answer", "hmm")]
        + [("fail", "yes"), ("no_answer", None), ("no_answer", "Yes."), ("fail", "No")]
    )
    r = bench.rejudge(m, prompts, judge, 2)  # the first 2 of 3 prompts
    ((asked_prompts, completions, kw),) = judge.calls
    assert completions == texts[0] + texts[1] and asked_prompts == ["q0"] * 4 + ["q1"] * 4
    assert kw["answer"] == ["4"] * 4 + ["7"] * 4 and kw["prompt_ids"] == ["p0"] * 4 + ["p1"] * 4
    assert bench.passes(r, None).tolist() == [[True, False, False, False], [False] * 4]
    # no-answer: only the rule's no_answer rows take the judge's verdict (row 0-3 is unclear)
    assert bench.passes(r, "no-answer").tolist() == [[True, True, False, False], [False, False, True, False]]
    assert bench.passes(r, "fail").tolist() == [[True, True, False, False], [True, False, True, False]]
    rows = bench.judged_methods(m, r, ["no-answer", "fail"])
    assert [x.name for x in rows] == [
        "one sample, rule only",
        "Best-of-4 by the verifier, rule only",
        "one sample, rule then judge (no-answer)",
        "Best-of-4 by the verifier, rule then judge (no-answer)",
        "one sample, rule then judge (fail)",
        "Best-of-4 by the verifier, rule then judge (fail)",
    ]
    assert [x.correct.tolist() for x in rows] == [
        [0.25, 0.0],
        [1.0, 0.0],
        [0.5, 0.25],
        [1.0, 1.0],
        [0.5, 0.5],
        [1.0, 1.0],
    ]
    # the samples of the first 2 prompts only: 1..8 tokens
    assert rows[1].samples == 8 and rows[1].tokens == sum(range(1, 9)) and rows[0].tokens == 2.5 + 6.5
    # agreement with the last integer: 0-1 (4, yes) agrees; 1-2 ("seven", yes) does not
    assert bench.judge_counts(m, prompts, r, "no-answer") == {
        "fallback_on": "no-answer",
        "judge_calls": 3,
        "judge_passes": 2,
        "judge_fails": 0,
        "judge_unclear": 1,
        "judge_overrides": 0,
        "judge_tokens": 33,
        "agree_with_last_number": 1,
        "passes_with_last_number": 1,
        "decided": 2,
    }
    # fail adds 0-2 (5, no: agrees), 1-0 (6, yes: an override, disagrees), 1-3 (8, no: agrees)
    assert bench.judge_counts(m, prompts, r, "fail") == {
        "fallback_on": "fail",
        "judge_calls": 6,
        "judge_passes": 3,
        "judge_fails": 2,
        "judge_unclear": 1,
        "judge_overrides": 1,
        "judge_tokens": 66,
        "agree_with_last_number": 3,
        "passes_with_last_number": 1,
        "decided": 5,
    }


def test_the_pilot_products_are_never_measured(bench):
    pilot, measured = bench.product_prompts(0, pilot=True), bench.product_prompts(100)
    assert len(pilot) == bench.PILOT == 12 and len(measured) == 81 - 12
    assert not {p.text for p in pilot} & {p.text for p in measured}
    assert len({p.text for p in pilot + measured}) == 81 and len({p.id for p in pilot + measured}) == 81
    assert [p.id for p in bench.product_prompts(3)] == ["m12", "m13", "m14"]
    assert all(p.columns["answer"] == str(int(a) * int(b)) for p in measured for a, b in [p.text[8:13].split(" * ")])


@pytest.mark.slow
def test_quick_mode_runs_with_the_real_model(bench, tmp_path):
    result = bench.main(["--quick", "--run-dir", str(tmp_path)])
    assert result["benchmark"] == "test_time" and result["passed"]
    assert [r["method"] for r in result["arithmetic"]][:2] == ["one sample", "majority of 8"]
    rows = result["arithmetic"] + result["constraints"] + result["arithmetic_judged"]
    assert all(r["band"][0] <= r["accuracy"] <= r["band"][1] for r in rows)
    assert [c["fallback_on"] for c in result["judge"]] == ["no-answer", "fail"]
    assert result["arithmetic_judged"][0]["method"] == "one sample, rule only"
    assert [r["method"] for r in result["products"]][:2] == ["one sample", "majority of 8"]
    assert [r["check"] for r in result["rows"]][2:] == [
        "(C) tokens, majority of 8 / confident-consensus:0.5 stopping (step 2)",
        "(C) accuracy, confident-consensus:0.5 stopping (step 2) - majority of 8: band's upper end",
    ]
