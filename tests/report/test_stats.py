"""winnow.report: the paired bootstrap interval and the best-of-n curve."""

import warnings
from itertools import combinations, product

import numpy as np
import pytest

from winnow.report import (
    best_of_n_band,
    best_of_n_curve,
    best_of_n_kl,
    best_of_n_rows,
    completion_stats,
    distinct_n,
    duplicates,
    paired_bootstrap,
)

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


# ---------------------------------------------------------------- edges, defaults, exact bootstrap


def test_bootstrap_interval_is_the_exact_bootstrap_quantiles():
    """Six prompts: all 6**6 equally likely resamples can be listed, so the bootstrap
    distribution of the mean is known exactly; 200,000 draws land on its 2.5% and 97.5%
    quantiles (whose neighbours, 3.5% and 96.5%, lie a whole step away)."""
    diff = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 16.0])
    exact = np.array([diff[list(idx)].mean() for idx in product(range(6), repeat=6)])
    lo, hi = np.percentile(exact, [2.5, 97.5])
    assert np.percentile(exact, 3.5) - lo > 0.15 and hi - np.percentile(exact, 96.5) > 0.15
    low, high = paired_bootstrap(np.zeros(6), diff, iters=200_000)
    assert low == pytest.approx(lo, abs=0.07) and high == pytest.approx(hi, abs=0.07)


def test_bootstrap_resamples_every_prompt():
    low, high = paired_bootstrap([0.0, 0.0], [10.0, 0.0], iters=2000)
    assert (low, high) == (0.0, 10.0)  # both all-first and all-second resamples occur


def test_bootstrap_and_band_defaults():
    rng = np.random.default_rng(7)
    before, after = rng.normal(size=30), rng.normal(size=30)
    assert paired_bootstrap(before, after) == paired_bootstrap(before, after, iters=10_000, seed=0)
    assert paired_bootstrap(before, after) != paired_bootstrap(before, after, iters=10_001, seed=0)
    assert paired_bootstrap(before, after) != paired_bootstrap(before, after, seed=1)
    rewards = rng.normal(size=(30, 4))
    default = best_of_n_band(rewards)
    explicit = best_of_n_band(rewards, iters=2000, level=0.95, seed=0)
    np.testing.assert_array_equal(default[0], explicit[0])
    np.testing.assert_array_equal(default[1], explicit[1])
    assert not np.array_equal(default[0], best_of_n_band(rewards, iters=2001)[0])
    assert not np.array_equal(default[0], best_of_n_band(rewards, seed=1)[0])
    again = best_of_n_band(rewards, seed=3)
    np.testing.assert_array_equal(again[0], best_of_n_band(rewards, seed=3)[0])


def test_band_fills_every_resample():
    """One prompt: every resample's mean is that prompt's curve, so the band is the curve
    exactly, across several blocks of 256 (a resample left unfilled would show)."""
    one = np.array([[3.0, 1.0, 2.0]])
    for iters in (1, 255, 256, 257, 600):
        low, high = best_of_n_band(one, iters=iters)
        np.testing.assert_array_equal(low, [2.0, 8 / 3, 3.0])
        np.testing.assert_array_equal(high, [2.0, 8 / 3, 3.0])


def test_band_level_zero_is_the_median_and_level_one_the_range():
    rewards = np.random.default_rng(8).normal(size=(25, 4))
    low, high = best_of_n_band(rewards, level=0.0)
    np.testing.assert_array_equal(low, high)
    low, high = best_of_n_band(rewards, level=1.0)
    curve = best_of_n_curve(rewards)
    assert np.all(low <= curve) and np.all(curve <= high)
    wide = best_of_n_band(rewards, level=0.99)
    assert np.all(low <= wide[0]) and np.all(wide[1] <= high)


def test_no_fully_scored_row_gives_nan_without_warnings():
    rewards = np.array([[np.nan, 1.0, 2.0], [0.5, np.nan, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curve = best_of_n_curve(rewards)
        low, high = best_of_n_band(rewards)
    for out in (curve, low, high):
        assert out.shape == (3,) and out.dtype == np.float64 and np.isnan(out).all()
    assert best_of_n_rows(rewards).shape == (0, 3)


def test_best_of_n_rows_takes_plain_lists_with_none_as_unscored():
    np.testing.assert_allclose(best_of_n_rows([[1, None], [3, 1]]), [[2.0, 3.0]])


def test_kl_scalar_is_a_float_and_bad_n_is_named():
    assert type(best_of_n_kl(4)) is float and type(best_of_n_kl(np.int64(1))) is float
    assert isinstance(best_of_n_kl([1, 2]), np.ndarray)
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0.0$"):
        best_of_n_kl(0)


def test_distinct_n_folds_case_by_lower_casing():
    # lower() keeps "straße" and "strasse" apart; upper() would make both "STRASSE"
    assert distinct_n(["Straße strasse STRASSE"], 1) == pytest.approx(2 / 3)


def _row(prompt_id, text, reward, num_tokens=4, finish_reason="stop"):
    return {
        "prompt_id": prompt_id,
        "text": text,
        "reward": reward,
        "num_tokens": num_tokens,
        "finish_reason": finish_reason,
    }


def test_duplicates_count_repeats_within_a_prompt_only():
    rows = [_row("a", "x", 1), _row("b", "x", 1), _row("a", "x", 1), _row("a", "y", 1), _row("a", "x", 1)]
    assert duplicates(rows) == 2  # the 3rd and 5th rows repeat ("a", "x"); ("b", "x") is new
    assert duplicates([]) == 0 and duplicates(rows[:2]) == 0


def test_completion_stats_by_hand():
    rows = [
        _row("a", "the cat sat", 1.0, 3, "stop"),
        _row("a", "the cat sat", None, 5, "length"),
        _row("b", "a dog", float("nan"), 2, "stop"),
        _row("b", "the dog ran", -0.5, 6, "stop"),
    ]
    stats = completion_stats(iter(rows))
    # unigrams: the cat sat the cat sat a dog the dog ran -> 6 distinct of 11;
    # bigrams: the-cat x2, cat-sat x2, a-dog, the-dog, dog-ran -> 5 distinct of 7
    assert stats == {
        "count": 4,
        "scored": 2,
        "mean_reward": 0.25,
        "mean_tokens": 4.0,
        "truncated_share": 0.25,
        "distinct_1": pytest.approx(6 / 11),
        "distinct_2": pytest.approx(5 / 7),
        "duplicates": 1,
    }
    assert type(stats["scored"]) is int and type(stats["mean_reward"]) is float


def test_completion_stats_of_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty list is taken
        stats = completion_stats([])
        unscored = completion_stats([_row("a", "x y", None)])
    assert (stats["count"], stats["scored"], stats["duplicates"]) == (0, 0, 0)
    for key in ("mean_reward", "mean_tokens", "truncated_share", "distinct_1", "distinct_2"):
        assert np.isnan(stats[key]), key
    assert unscored["scored"] == 0 and np.isnan(unscored["mean_reward"]) and unscored["mean_tokens"] == 4.0
