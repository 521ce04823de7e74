"""RSO (statistical rejection sampling) and preference pairs: distributions within stated
tolerances, limits in beta, NaN handling, and the chapter's example by hand."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CHAPTER

from winnow import select as sel
from winnow.errors import WinnowError

nan = np.nan
R = np.array(CHAPTER)  # the chapter's 5 x 4 example
# Chi-square critical values at p = 0.001 (tables): a correct sampler fails one in 1,000 seeds
# of this test, and the seeds are fixed, so the test is deterministic.
CHI2_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}
ROW = np.array([0.2, nan, 0.9, 0.5, -0.3, 0.9])
SEEDS, COPIES = 200, 100  # 20,000 draws: 200 seeds x 100 copies of the row


def first_pick_counts(sampler, row: np.ndarray, beta: float) -> np.ndarray:
    """How often each column is accepted first, over SEEDS seeds x COPIES rows: int (N,)."""
    counts = np.zeros(row.size, dtype=np.int64)
    for seed in range(SEEDS):
        picked = sampler(np.tile(row, (COPIES, 1)), beta, 1, seed)[:, 0]
        counts += np.bincount(picked, minlength=row.size)
    return counts


def chi_square(counts: np.ndarray, target: np.ndarray) -> float:
    """Pearson's statistic over the cells with target > 0 (df = cells - 1)."""
    expected = target * counts.sum()
    cells = target > 0
    return float(((counts[cells] - expected[cells]) ** 2 / expected[cells]).sum())


def tilted(row: np.ndarray, beta: float) -> np.ndarray:
    """exp(r / beta) normalised over the scored candidates: the RSO target for k = 1."""
    w = np.where(np.isnan(row), 0.0, np.exp((np.nan_to_num(row, nan=0.0) - np.nanmax(row)) / beta))
    return w / w.sum()


def fixed_order_scan(rewards, beta, k, seed):
    """The paper's reference loop for k = 1: scan the columns in order, accept each with
    probability exp((r - r_max) / beta), rescan until one is accepted. Biased to early columns."""
    rng = np.random.default_rng(seed)
    out = np.full((rewards.shape[0], 1), -1)
    for i, row in enumerate(rewards):
        r_max = np.nanmax(row)
        while out[i, 0] < 0:
            for j, r in enumerate(row):
                if not np.isnan(r) and rng.random() < np.exp((r - r_max) / beta):
                    out[i, 0] = j
                    break
    return out


# ---------------------------------------------------------------- rso


@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_rso_first_pick_follows_the_tilted_policy(beta):
    counts = first_pick_counts(sel.rso, ROW, beta)
    target = tilted(ROW, beta)
    assert counts[1] == 0  # NaN never chosen
    df = int((target > 0).sum()) - 1
    assert chi_square(counts, target) < CHI2_999[df]
    # and cell by cell: within 4 standard errors of a binomial proportion over 20,000 draws
    trials = counts.sum()
    assert trials == SEEDS * COPIES
    bound = 4 * np.sqrt(target * (1 - target) / trials)
    assert np.all(np.abs(counts / trials - target) <= bound)


def test_a_fixed_order_scan_fails_the_same_test():
    # The same test on the paper's in-order scan: the columns before the best are favoured.
    beta = 0.25
    counts = first_pick_counts(fixed_order_scan, ROW, beta)
    target = tilted(ROW, beta)
    assert chi_square(counts, target) > 10 * CHI2_999[4]
    assert counts[0] / counts.sum() > target[0] * 1.5


def test_rso_second_pick_follows_the_tilted_policy_over_the_rest():
    # P(a then b) = w_a / W * w_b / (W - w_a): sampling without replacement from exp(r / beta).
    row, beta = np.array([0.0, 0.5, 1.0]), 0.5
    w = np.exp(row / beta)
    target = np.array([w[a] / w.sum() * w[b] / (w.sum() - w[a]) if a != b else 0.0 for a in range(3) for b in range(3)])
    counts = np.zeros(9, dtype=np.int64)
    for seed in range(SEEDS):
        picked = sel.rso(np.tile(row, (COPIES, 1)), beta, 2, seed)
        counts += np.bincount(picked[:, 0] * 3 + picked[:, 1], minlength=9)
    assert chi_square(counts, target) < CHI2_999[5]


def test_small_beta_gives_top_per_prompt_and_top_k_order():
    for seed in range(5):
        assert sel.rso(R, 1e-6, 1, seed)[:, 0].tolist() == sel.top_per_prompt(R).tolist()
    distinct = np.random.default_rng(0).normal(size=(50, 8))
    distinct[::7, 3] = nan
    np.testing.assert_array_equal(sel.rso(distinct, 1e-9, 8, seed=3), sel.top_k_per_prompt(distinct, 8))


def test_large_beta_gives_uniform():
    counts = first_pick_counts(sel.rso, ROW, 1e9)
    target = np.where(np.isnan(ROW), 0.0, 1.0 / 5)
    assert chi_square(counts, target) < CHI2_999[4]


def test_rso_without_replacement_spends_the_pool_and_skips_nan():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(30, 6))
    r[rng.random(r.shape) < 0.3] = nan
    r[4] = nan  # an all-NaN row
    picked = sel.rso(r, 0.5, 8, seed=0)
    assert picked.shape == (30, 8) and picked.dtype == np.int64
    for row, cols in zip(r, picked, strict=True):
        scored = np.flatnonzero(~np.isnan(row))
        taken = cols[cols >= 0]
        assert sorted(taken.tolist()) == scored.tolist()  # each scored column once, then -1
        assert np.all(cols[len(taken) :] == -1)
    assert np.all(picked[4] == -1)


def test_rso_is_seeded():
    r = np.random.default_rng(2).normal(size=(20, 6))
    np.testing.assert_array_equal(sel.rso(r, 1.0, 3, seed=7), sel.rso(r, 1.0, 3, seed=7))
    assert not np.array_equal(sel.rso(r, 1.0, 3, seed=7), sel.rso(r, 1.0, 3, seed=8))


def test_rso_infinite_rewards():
    r = np.array([[1.0, np.inf, nan], [-np.inf, -np.inf, nan], [-np.inf, 0.0, nan]])
    for seed in range(10):
        picked = sel.rso(r, 1.0, 1, seed)[:, 0]
        assert picked[0] == 1 and picked[1] in (0, 1) and picked[2] == 1


@pytest.mark.parametrize("beta, k, message", [(0.0, 1, "beta must be > 0"), (nan, 1, "beta"), (1.0, 0, "k must")])
def test_rso_bad_arguments(beta, k, message):
    with pytest.raises(WinnowError, match=message):
        sel.rso(R, beta, k, 0)


def test_rso_through_apply_defaults_to_one_per_prompt():
    assert sel.apply("rso", R, beta=1e-6).tolist() == [[0, 0], [1, 1], [2, 0], [3, 2], [4, 3]]
    with pytest.raises(WinnowError, match="strategy rso needs beta"):
        sel.apply("rso", R)


# ---------------------------------------------------------------- pairs


def test_best_worst_chapter_example():
    # best and worst of each row: 0.7/0.2, 0.8/0.4, 0.9/0.3, 0.8/0.2, 0.6/0.3
    assert sel.best_worst(R).tolist() == [[0, 3], [1, 0], [0, 1], [2, 0], [3, 2]]


def test_best_worst_ties_nan_and_short_rows():
    r = np.array(
        [
            [0.5, 0.9, 0.9, 0.1, 0.1],  # ties: earlier best (1), earlier worst (3)
            [nan, 0.3, nan, nan, nan],  # one scored: no pair
            [nan, nan, nan, nan, nan],
            [0.4, nan, 0.4, 0.4, nan],  # all equal: the first, and the next scored
            [nan, 0.2, nan, -0.2, nan],
        ]
    )
    assert sel.best_worst(r).tolist() == [[1, 3], [-1, -1], [-1, -1], [0, 2], [1, 3]]


def test_all_pairs_by_hand():
    r = np.array([[0.1, 0.3, nan, 0.3], [1.0, 0.0, 0.5, nan]])
    # row 0: 1>0, 3>0 (1 and 3 tie: no pair); row 1: 0>1, 0>2, 2>1
    assert sel.all_pairs(r).tolist() == [[0, 1, 0], [0, 3, 0], [1, 0, 1], [1, 0, 2], [1, 2, 1]]


def test_rso_pairs_small_beta_pairs_neighbours_in_rank():
    r = np.array([[0.1, 0.9, 0.5, 0.7], [0.3, nan, 0.2, nan]])
    # beta -> 0 accepts in reward order: (0.9, 0.7), (0.5, 0.1); row 1: (0.3, 0.2)
    assert sel.rso_pairs(r, 1e-6, 4, seed=0).tolist() == [[0, 1, 3], [0, 2, 0], [1, 0, 2]]


def test_make_pairs_by_name():
    assert sel.make_pairs("best-worst", R).tolist() == [[0, 0, 3], [1, 1, 0], [2, 0, 1], [3, 2, 0], [4, 3, 2]]
    with pytest.raises(WinnowError, match="pairs rso needs beta"):
        sel.make_pairs("rso", R)
    with pytest.raises(WinnowError, match="unknown pairing"):
        sel.make_pairs("worst-best", R)
