"""benchmarks/bench_test_time.py: the methods read a hand-made sample matrix as worked out
here (which column each answers with, how many samples each reads, the tokens charged), and
its --quick mode runs end to end on the real model (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_test_time.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_test_time", PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_test_time"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
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


@pytest.mark.slow
def test_quick_mode_runs_with_the_real_model(bench, tmp_path):
    result = bench.main(["--quick", "--run-dir", str(tmp_path)])
    assert result["benchmark"] == "test_time" and result["passed"]
    assert [r["method"] for r in result["arithmetic"]][:2] == ["one sample", "majority of 8"]
    assert all(r["band"][0] <= r["accuracy"] <= r["band"][1] for r in result["arithmetic"] + result["constraints"])
