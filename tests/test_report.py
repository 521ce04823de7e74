"""winnow.report: the paired bootstrap interval and the best-of-n curve."""

from itertools import combinations

import numpy as np
import pytest

from winnow.report import best_of_n_band, best_of_n_curve, best_of_n_kl, best_of_n_rows, distinct_n, paired_bootstrap

# ---------------------------------------------------------------- paired_bootstrap


def test_constant_difference_gives_a_point_interval():
    before = np.array([0.1, -0.3, 0.8, 0.0, 0.5])
    after = before + 0.25  # every prompt gains exactly 0.25, so every resample's mean is 0.25
    low, high = paired_bootstrap(before, after, iters=2000)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_pairing_is_kept():
    # Huge spread between prompts, but the same +1 on each: an unpaired bootstrap would be wide.
    before = np.array([-100.0, 0.0, 100.0, 50.0])
    low, high = paired_bootstrap(before, before + 1.0, iters=2000)
    assert (low, high) == (pytest.approx(1.0), pytest.approx(1.0))


def test_interval_contains_the_mean_and_has_the_normal_width():
    rng = np.random.default_rng(0)
    before = rng.normal(0.0, 1.0, size=400)
    after = before + rng.normal(0.3, 1.0, size=400)
    diff = after - before
    low, high = paired_bootstrap(before, after)
    assert low < diff.mean() < high
    # For 400 prompts the bootstrap mean is close to normal: width ~ 2 * 1.96 * sd / sqrt(P).
    assert high - low == pytest.approx(2 * 1.96 * diff.std() / np.sqrt(400), rel=0.1)


def test_interval_narrows_with_more_prompts():
    rng = np.random.default_rng(1)
    widths = {}
    for p in (20, 800):
        before = rng.normal(size=p)
        after = before + rng.normal(0.2, 1.0, size=p)
        low, high = paired_bootstrap(before, after)
        widths[p] = high - low
    # 40x the prompts: about sqrt(40) ~ 6.3x narrower.
    assert widths[800] < widths[20] / 3


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(2)
    before, after = rng.normal(size=30), rng.normal(size=30)
    assert paired_bootstrap(before, after, seed=5) == paired_bootstrap(before, after, seed=5)
    assert paired_bootstrap(before, after, seed=5) != paired_bootstrap(before, after, seed=6)


# ---------------------------------------------------------------- best_of_n_curve


def _brute_force_curve(rewards):
    """Average over rows of the mean, over every n-subset of the row, of the subset's max."""
    m, n_total = rewards.shape
    curve = []
    for n in range(1, n_total + 1):
        per_row = [np.mean([max(row[list(s)]) for s in combinations(range(n_total), n)]) for row in rewards]
        curve.append(np.mean(per_row))
    return np.array(curve)


def test_small_matrix_by_hand():
    # Row [3, 1, 2]: n=1 -> mean 2; n=2 -> subsets' maxes 3, 3, 2 -> 8/3; n=3 -> 3.
    # Row [0, 6, 0]: n=1 -> 2; n=2 -> 6, 0, 6 -> 4; n=3 -> 6.
    rewards = np.array([[3.0, 1.0, 2.0], [0.0, 6.0, 0.0]])
    np.testing.assert_allclose(best_of_n_curve(rewards), [2.0, (8 / 3 + 4) / 2, 4.5])


def test_matches_brute_force_on_random_rows():
    rng = np.random.default_rng(3)
    rewards = np.round(rng.normal(size=(4, 7)), 1)  # rounding adds ties
    np.testing.assert_allclose(best_of_n_curve(rewards), _brute_force_curve(rewards))


def test_endpoints_and_monotone():
    rng = np.random.default_rng(4)
    rewards = rng.uniform(-1, 1, size=(25, 16))
    curve = best_of_n_curve(rewards)
    assert curve.shape == (16,)
    assert curve[0] == pytest.approx(rewards.mean(axis=1).mean())  # n = 1: the row mean
    assert curve[-1] == pytest.approx(rewards.max(axis=1).mean())  # n = N: the row max
    assert np.all(np.diff(curve) >= -1e-12)


def test_rows_with_nan_are_left_out():
    full = np.array([[3.0, 1.0, 2.0], [0.0, 6.0, 0.0]])
    with_nan = np.vstack([full, [[np.nan, 10.0, 10.0]]])
    np.testing.assert_allclose(best_of_n_curve(with_nan), best_of_n_curve(full))


# ---------------------------------------------------------------- best_of_n_kl, band, diversity


def test_kl_of_best_of_n_by_hand():
    # log n - (n - 1) / n, worked out by hand: ln 2 = 0.693147..., ln 4 = 1.386294...,
    # ln 8 = 2.079442..., ln 16 = 2.772589...
    expected = {1: 0.0, 2: 0.1931471806, 4: 0.6362943611, 8: 1.2044415417, 16: 1.8350887222}
    for n, kl in expected.items():
        assert best_of_n_kl(n) == pytest.approx(kl, abs=1e-9)
    np.testing.assert_allclose(best_of_n_kl(np.array(list(expected))), list(expected.values()), atol=1e-9)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_band_of_one_row_is_the_curve_and_band_contains_the_curve():
    one = np.array([[3.0, 1.0, 2.0]])
    low, high = best_of_n_band(one, iters=50)
    np.testing.assert_allclose(low, best_of_n_curve(one))
    np.testing.assert_allclose(high, best_of_n_curve(one))
    rng = np.random.default_rng(5)
    rewards = rng.normal(size=(40, 8))
    low, high = best_of_n_band(rewards, iters=500)
    curve = best_of_n_curve(rewards)
    assert np.all(low <= curve) and np.all(curve <= high) and np.all(high - low > 0)
    # the spread of best-of-n means over prompts: about 2 * 1.96 * sd / sqrt(M) wide
    sd = best_of_n_rows(rewards).std(axis=0)
    np.testing.assert_allclose(high - low, 2 * 1.96 * sd / np.sqrt(40), rtol=0.25)


def test_distinct_n_by_hand():
    texts = ["The cat sat", "the cat ran", ""]
    # unigrams: the cat sat the cat ran -> 4 distinct of 6; bigrams: (the cat) x2, (cat sat), (cat ran) -> 3 of 4
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert np.isnan(distinct_n(["one"], 2))
