"""maj@k and weighted@k are exact: equal to ``winnow.select.majority`` applied to every
k-subset, on small random cases, and to hand-computed values."""

from __future__ import annotations

import itertools
import math
import time
import warnings

import numpy as np
import pytest

from winnow import select as sel
from winnow.report import votes
from winnow.report.votes import vote_at_k, vote_rows


def brute(answers, passed, k, weights=None) -> float:
    """The share of k-subsets (in sample order) whose vote's sample passes."""
    n = len(answers)
    hits = 0
    for subset in itertools.combinations(range(n), k):
        sub = [answers[j] for j in subset]
        rewards = None if weights is None else [weights[j] for j in subset]
        pick = sel.majority(sub, rewards=rewards)
        hits += pick >= 0 and bool(passed[subset[pick]])
    return hits / math.comb(n, k)


def test_maj_at_1_of_two_fours_and_a_five_is_two_thirds():
    assert vote_at_k([["4", "4", "5"]], np.array([[1, 1, 0]], dtype=bool), [1])[0] == pytest.approx(2 / 3, abs=1e-15)


def test_votes_with_k_equal_n_are_the_whole_row_vote():
    answers = [["a", "b", "b", None], ["x", "y", "x", "y"], [None, None, None, None]]
    passed = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1]], dtype=bool)
    # row 0: b wins (2 votes), fails; row 1: x and y tie, x first, fails; row 2: no answer, fails.
    assert vote_at_k(answers, passed, [4]).tolist() == [0.0]
    weights = np.array([[0.9, 0.1, 0.1, 0.0], [0.1, 0.5, 0.1, 0.5], [1, 1, 1, 1]], dtype=float)
    # weighted: row 0 a 0.9 > b 0.2 -> passes; row 1 y 1.0 > x 0.2 -> passes (its best member 1).
    assert vote_at_k(answers, passed, [4], weights=weights).tolist() == [pytest.approx(2 / 3, abs=1e-15)]


def test_maj_at_1_is_the_pass_rate_of_answered_samples():
    passed = np.array([[1, 0, 0, 1, 0]], dtype=bool)
    assert vote_at_k([["a", "b", "c", "d", None]], passed, [1])[0] == pytest.approx(2 / 5, abs=1e-15)


def test_maj_at_2_hand_computed_tie_to_the_earlier_answer():
    # subsets of ["a", "b", "b"] (a passes): {0,1} a-b tie, a first: pass; {0,2}: pass; {1,2}: b wins: fail.
    assert vote_at_k([["a", "b", "b"]], np.array([[1, 0, 0]], dtype=bool), [2])[0] == pytest.approx(2 / 3)


def random_case(rng, n):
    answers = [None if rng.random() < 0.15 else "abcd"[rng.integers(0, rng.integers(1, 5))] for _ in range(n)]
    passed = rng.random(n) < 0.5
    step = [1, 4, 16, 0][rng.integers(0, 4)]  # rewards of a few values: many exact ties between totals
    weights = rng.integers(-step, 2 * step + 1, n) / step if step else rng.normal(size=n)  # 0: continuous
    weights[rng.random(n) < 0.1] = np.nan
    return answers, passed, weights


@pytest.mark.parametrize("seed", range(40))
def test_exact_votes_equal_brute_force_over_every_subset(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    answers, passed, weights = random_case(rng, n)
    ks = list(range(1, n + 1))
    maj, _ = vote_rows([answers], passed[None], ks)
    wtd, estimated = vote_rows([answers], passed[None], ks, weights=weights[None])
    assert not estimated.any()
    np.testing.assert_allclose(maj[0], [brute(answers, passed, k) for k in ks], rtol=0, atol=1e-12)
    np.testing.assert_allclose(wtd[0], [brute(answers, passed, k, list(weights)) for k in ks], rtol=0, atol=1e-12)


def test_maj_with_equal_answers_grouped_by_equal():
    answers = [["1", "01", "2"]]
    passed = np.array([[1, 1, 0]], dtype=bool)
    same = vote_at_k(answers, passed, [1, 3], equal=lambda a, b: int(a) == int(b))
    np.testing.assert_allclose(same, [2 / 3, 1.0])


def test_sixty_four_samples_every_k_is_fast_and_sums_right():
    rng = np.random.default_rng(0)
    answers = [[str(x) for x in rng.integers(0, 6, 64)] for _ in range(3)]
    passed = np.array([[a == "0" for a in row] for row in answers])
    weights = passed.astype(float)  # a verifier's 0/1 rewards
    start = time.perf_counter()
    maj, est_m = vote_rows(answers, passed, range(1, 65))
    wtd, est_w = vote_rows(answers, passed, range(1, 65), weights=weights)
    assert time.perf_counter() - start < 10  # about 0.2 s per prompt and statistic on one core
    assert not est_m.any() and not est_w.any()
    np.testing.assert_allclose(maj[:, 0], passed.mean(axis=1), atol=1e-12)  # maj@1 is the pass rate
    assert np.all((wtd[:, -1] == 1.0) == passed.any(axis=1))  # 0/1 weights: k = N passes iff one passes


def test_continuous_rewards_are_exact_on_small_classes_and_estimated_on_large_ones():
    rng = np.random.default_rng(2)
    small = [["a", "b", "c"] * 4]  # classes of 4: at most 15 totals each
    passed = rng.random((1, 12)) < 0.5
    rows, estimated = vote_rows(small, passed, [3], weights=rng.random((1, 12)))
    assert not estimated.any()
    _, estimated = vote_rows([["a"] * 40], rng.random((1, 40)) < 0.5, [2], weights=rng.random((1, 40)))
    assert estimated.all()  # a class of 40 reaches too many distinct totals


def test_a_class_with_too_many_distinct_totals_is_estimated(monkeypatch):
    monkeypatch.setattr(votes, "MAX_CELLS", 10)
    rng = np.random.default_rng(1)
    answers = [["a"] * 6 + ["b"] * 2]
    passed = np.array([[1] * 6 + [0] * 2], dtype=bool)
    rows, estimated = vote_rows(answers, passed, [1, 8], weights=rng.random((1, 8)))
    assert estimated.tolist() == [True]
    assert rows[0, 0] == pytest.approx(0.75, abs=0.05)


def test_votes_group_by_equal_in_vote_rows_too():
    # "1" and "01" are one answer under equal, and it passes; apart, the failing "2" that came first wins
    answers, passed = [["2", "1", "01"]], np.array([[0, 1, 1]], dtype=bool)
    same = {"equal": lambda a, b: int(a) == int(b)}
    assert vote_at_k(answers, passed, [3]).tolist() == [0.0]
    assert vote_at_k(answers, passed, [3], **same).tolist() == [1.0]
    assert vote_rows(answers, passed, [3], **same)[0].tolist() == [[1.0]]
    weights = np.array([[0.9, 0.5, 0.5]])  # 1 weighs 1.0 together, 0.5 apart
    assert vote_rows(answers, passed, [3], weights=weights)[0].tolist() == [[0.0]]
    assert vote_rows(answers, passed, [3], weights=weights, **same)[0].tolist() == [[1.0]]


def test_no_prompts_and_empty_rows():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty slice
        none = vote_at_k([], np.zeros((0, 0), dtype=bool), [1, 2])
    assert none.shape == (2,) and np.isnan(none).all()
    rows, estimated = vote_rows([[]], np.zeros((1, 0), dtype=bool), [], weights=np.zeros((1, 0)))
    assert rows.shape == (1, 0) and estimated.tolist() == [False] and estimated.dtype == bool
    assert vote_rows([[]], np.zeros((1, 0), dtype=bool), [])[1].tolist() == [False]


@pytest.mark.parametrize("seed", range(12))
def test_estimated_votes_over_the_whole_row_are_the_row_vote(monkeypatch, seed):
    """k = N: every random subset is the whole row, so the estimate is exact."""
    monkeypatch.setattr(votes, "MAX_CELLS", 1)  # every prompt estimated
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 7))
    answers, passed, weights = random_case(rng, n)
    maj, est_m = vote_rows([answers], passed[None], [n], draws=5)
    wtd, est_w = vote_rows([answers], passed[None], [n], weights=weights[None], draws=5)
    assert est_m.tolist() == est_w.tolist() == [True] and est_m.dtype == bool
    assert maj.tolist() == [[brute(answers, passed, n)]]
    assert wtd.tolist() == [[brute(answers, passed, n, list(weights))]]


def test_estimated_votes_skip_draws_without_a_voter_and_follow_draws_and_seed(monkeypatch):
    monkeypatch.setattr(votes, "MAX_CELLS", 1)
    answers, passed = [[None, "a"]], np.array([[0, 1]], dtype=bool)  # maj@1 is 1/2
    rows, _ = vote_rows(answers, passed, [1])
    assert rows[0, 0] == pytest.approx(0.5, abs=0.15)
    assert rows.tolist() == vote_rows(answers, passed, [1], draws=200, seed=0)[0].tolist()
    assert rows.tolist() != vote_rows(answers, passed, [1], draws=201)[0].tolist()
    # whole-row votes: with replacement a draw could repeat a sample and miss another
    answers, passed = [["a", "b", "b"]], np.array([[1, 0, 0]], dtype=bool)
    assert vote_rows(answers, passed, [3])[0].tolist() == [[0.0]]


def test_an_infinite_reward_is_estimated():
    answers, passed = [["a", "b"]], np.array([[1, 0]], dtype=bool)
    rows, estimated = vote_rows(answers, passed, [2], weights=np.array([[np.inf, 1.0]]))
    assert estimated.tolist() == [True] and rows.tolist() == [[1.0]]


@pytest.mark.parametrize(
    ("answers", "weights", "cells"),
    [
        (["a", "a"], None, 24),  # one class of 2: 3 sizes x 2 totals x 2 positions x 2
        (["a"], None, 4),  # one class of 1: 2 sizes x 1 total x 1 position x 2
        (["a", "a", "b"], [0.25, 0.25, 1.0], 36),  # class a: 3 sizes x 3 totals (1, 2, 4 quarters) x 2 x 2
    ],
)
def test_a_prompt_is_counted_exactly_up_to_max_cells(monkeypatch, answers, weights, cells):
    passed = np.array([[True] + [False] * (len(answers) - 1)])
    w = None if weights is None else np.array([weights])
    monkeypatch.setattr(votes, "MAX_CELLS", cells)
    rows, estimated = vote_rows([answers], passed, [1], weights=w)
    assert estimated.tolist() == [False]
    assert rows[0, 0] == pytest.approx(1 / len(answers), abs=1e-15)
    monkeypatch.setattr(votes, "MAX_CELLS", cells - 1)
    assert vote_rows([answers], passed, [1], weights=w)[1].tolist() == [True]
