"""winnow.select: the chapter's worked example, NaN handling, tie order and the controls."""

import collections
import math
import warnings

import numpy as np
import pytest
from helpers import CHAPTER

from winnow import select as sel
from winnow.errors import WinnowError

nan = np.nan
inf = np.inf

# The chapter's 5 x 4 example (rows are prompts, columns samples).
R = np.array(CHAPTER)


# ---------------------------------------------------------------- chapter example


def test_top_per_prompt_chapter_example():
    # The chapter's 1-based S(R) = [1, 2, 1, 3, 4]; winnow is 0-based.
    assert sel.top_per_prompt(R).tolist() == [0, 1, 0, 2, 3]


def test_top_k_overall_chapter_example():
    # Chapter: S_5(R_flat) = [8, 5, 14, 0, 11]; with N = 4, flat f is (f // 4, f % 4).
    # 8 -> 0.9; 5 and 14 are both 0.8 (5 first: earlier prompt); 0 and 11 are both 0.7.
    expected = [[8 // 4, 8 % 4], [5 // 4, 5 % 4], [14 // 4, 14 % 4], [0 // 4, 0 % 4], [11 // 4, 11 % 4]]
    assert expected == [[2, 0], [1, 1], [3, 2], [0, 0], [2, 3]]
    assert sel.top_k_overall(R, 5).tolist() == expected


def test_top_k_overall_k1_matches_top_per_prompt_for_one_prompt():
    # Chapter, BoN section: for a single prompt, top-1 overall is the argmax.
    row = np.array([[0.1, 0.9, 0.4, 0.9]])
    assert sel.top_k_overall(row, 1).tolist() == [[0, int(sel.top_per_prompt(row)[0])]]
    assert sel.top_k_overall(row, 1).tolist() == [[0, 1]]


def test_plain_lists_and_ints_are_accepted():
    assert sel.top_per_prompt([[1, 3, 2], [5, 4, 5]]).tolist() == [1, 0]


def test_not_a_matrix_is_an_error():
    with pytest.raises(WinnowError, match=r"2-D"):
        sel.top_per_prompt([0.1, 0.2, 0.3])


# ---------------------------------------------------------------- NaN


def test_nan_is_never_selected_per_prompt():
    r = np.array([[nan, 0.1, nan], [0.3, nan, 0.2], [nan, nan, nan]])
    # Row 0: only column 1 is scored; row 1: 0.3 at column 0; row 2: nothing scored.
    assert sel.top_per_prompt(r).tolist() == [1, 0, -1]


def test_nan_is_never_selected_overall_and_k_caps_at_scored():
    r = np.array([[nan, 0.1, nan], [0.3, nan, 0.2]])
    # Only three scored cells: 0.3 (1,0), 0.2 (1,2), 0.1 (0,1). k = 6 asks for every cell.
    assert sel.top_k_overall(r, 6).tolist() == [[1, 0], [1, 2], [0, 1]]
    assert sel.top_k_overall(r, 3).tolist() == [[1, 0], [1, 2], [0, 1]]
    assert sel.top_k_overall(r, 2).tolist() == [[1, 0], [1, 2]]


def test_top_k_overall_all_nan_gives_no_pairs():
    out = sel.top_k_overall(np.full((2, 3), nan), 3)
    assert out.shape == (0, 2)


def test_negative_rewards_beat_nan():
    # NaN is filled with -inf internally; a very negative real reward must still win over it.
    r = np.array([[nan, -1e300], [nan, nan]])
    assert sel.top_per_prompt(r).tolist() == [1, -1]
    assert sel.top_k_overall(r, 4).tolist() == [[0, 1]]
    assert sel.top_k_per_prompt(r, 2).tolist() == [[1, -1], [-1, -1]]


@pytest.mark.parametrize("k", [0, -1, 21])
def test_top_k_overall_k_out_of_range(k):
    with pytest.raises(WinnowError, match=r"k must be between 1 and M x N = 20, got " + str(k)):
        sel.top_k_overall(R, k)


# ---------------------------------------------------------------- ties


def test_ties_go_to_earlier_prompt_then_earlier_sample():
    r = np.array(
        [
            [0.5, 0.5, 0.2],
            [0.5, nan, 0.5],
        ]
    )
    # Every 0.5 ties: per prompt the first column wins; overall the order is row-major.
    assert sel.top_per_prompt(r).tolist() == [0, 0]
    assert sel.top_k_overall(r, 3).tolist() == [[0, 0], [0, 1], [1, 0]]
    assert sel.top_k_overall(r, 5).tolist() == [[0, 0], [0, 1], [1, 0], [1, 2], [0, 2]]
    assert sel.top_k_per_prompt(r, 2).tolist() == [[0, 1], [0, 2]]
    assert sel.top_k_per_prompt(r, 3).tolist() == [[0, 1, 2], [0, 2, -1]]


def _ref_top_k_overall(r, k):
    """Sort every scored cell by (-reward, flat index) and keep k."""
    m, n = r.shape
    cells = [(-float(r[i, j]), i * n + j) for i in range(m) for j in range(n) if not math.isnan(r[i, j])]
    return [[f // n, f % n] for _, f in sorted(cells)[:k]]


def _ref_top_k_per_prompt(r, k):
    out = []
    for row in r:
        cells = sorted((-float(v), j) for j, v in enumerate(row) if not math.isnan(v))
        cols = [j for _, j in cells[:k]]
        out.append(cols + [-1] * (k - len(cols)))
    return out


def _tied_matrices():
    rng = np.random.default_rng(1234)
    for shape in [(1, 1), (1, 7), (5, 4), (7, 3), (3, 11), (20, 13)]:
        for dtype in (np.float32, np.float64):
            for _ in range(3):
                # Rounding to one decimal makes ties common; about a fifth of the cells are NaN.
                r = np.round(rng.uniform(-1, 1, size=shape), 1).astype(dtype)
                r[rng.random(shape) < 0.2] = nan
                yield r


def test_top_k_overall_matches_sort_reference_with_ties_and_nan():
    checked = 0
    for r in _tied_matrices():
        total = r.size
        for k in sorted({1, 2, 3, total // 2, total - 1, total} & set(range(1, total + 1))):
            got = sel.top_k_overall(r, k)
            assert got.tolist() == _ref_top_k_overall(r, k), (r, k)
            checked += 1
    assert checked > 100


def test_top_per_prompt_and_top_k_per_prompt_match_reference():
    for r in _tied_matrices():
        expected_top = [row[0] for row in _ref_top_k_per_prompt(r, 1)]
        assert sel.top_per_prompt(r).tolist() == expected_top
        for k in (1, 2, r.shape[1], r.shape[1] + 2):
            assert sel.top_k_per_prompt(r, k).tolist() == _ref_top_k_per_prompt(r, k), (r, k)


# ---------------------------------------------------------------- top_k_per_prompt


def test_top_k_per_prompt_chapter_example_k2():
    # Row by row, the two best columns, best first:
    # 0.7(0) 0.5(2) | 0.8(1) 0.6(2) | 0.9(0) 0.7(3) | 0.8(2) 0.6(3) | 0.6(3) 0.5(0)
    out = sel.top_k_per_prompt(R, 2)
    assert out.shape == (5, 2)
    assert out.tolist() == [[0, 2], [1, 2], [0, 3], [2, 3], [3, 0]]


def test_top_k_per_prompt_pads_with_minus_one():
    r = np.array([[0.1, nan, 0.3], [nan, nan, nan]])
    out = sel.top_k_per_prompt(r, 4)  # k larger than N
    assert out.shape == (2, 4)
    assert out.tolist() == [[2, 0, -1, -1], [-1, -1, -1, -1]]


@pytest.mark.parametrize("k", [0, -3])
def test_top_k_per_prompt_k_below_one(k):
    with pytest.raises(WinnowError, match=r"k must be >= 1"):
        sel.top_k_per_prompt(R, k)


# ---------------------------------------------------------------- threshold


def test_threshold_is_inclusive_row_major_and_skips_nan():
    r = np.array([[0.5, 0.2], [nan, 0.7], [0.5, 0.49]])
    assert sel.threshold(r, 0.5).tolist() == [[0, 0], [1, 1], [2, 0]]
    assert sel.threshold(r, 0.8).shape == (0, 2)


def test_threshold_chapter_example():
    # Cells >= 0.7 in row-major order: 0.7 (0,0), 0.8 (1,1), 0.9 (2,0), 0.7 (2,3), 0.8 (3,2).
    assert sel.threshold(R, 0.7).tolist() == [[0, 0], [1, 1], [2, 0], [2, 3], [3, 2]]


# ---------------------------------------------------------------- random controls


def _holey(seed=0, shape=(30, 8)):
    """About 40% NaN, but every row keeps at least one scored cell."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=shape)
    r[rng.random(shape) < 0.4] = nan
    r[:, 0] = rng.normal(size=shape[0])
    return r


def test_random_per_prompt_is_seeded_and_only_picks_scored():
    r = _holey()
    a = sel.random_per_prompt(r, seed=7)
    assert a.tolist() == sel.random_per_prompt(r, seed=7).tolist()
    assert not np.isnan(r[np.arange(r.shape[0]), a]).any()
    assert a.tolist() != sel.random_per_prompt(r, seed=8).tolist()


def test_random_per_prompt_all_nan_row_gives_minus_one():
    r = np.array([[nan, nan], [0.1, 0.2]])
    assert sel.random_per_prompt(r, seed=0)[0] == -1
    # Through apply, the unscored row must not turn into a selected (NaN) pair.
    assert [int(i) for i in sel.apply("random_per_prompt", r, seed=0)[:, 0]] == [1]


def test_random_per_prompt_ignores_reward_values():
    # A control must not favour high rewards: over many seeds every scored column is picked.
    r = np.array([[0.9, nan, 0.1, -5.0, nan]])
    picked = {int(sel.random_per_prompt(r, seed=s)[0]) for s in range(200)}
    assert picked == {0, 2, 3}


def test_random_k_overall_is_seeded_distinct_row_major_and_scored():
    r = _holey()
    a = sel.random_k_overall(r, 25, seed=3)
    assert a.shape == (25, 2)
    assert a.tolist() == sel.random_k_overall(r, 25, seed=3).tolist()
    flat = [i * r.shape[1] + j for i, j in a.tolist()]
    assert flat == sorted(set(flat))  # distinct, row-major
    assert not np.isnan(r[a[:, 0], a[:, 1]]).any()
    assert a.tolist() != sel.random_k_overall(r, 25, seed=4).tolist()


def test_random_k_overall_caps_at_scored():
    r = np.array([[nan, 0.1], [0.2, nan]])
    assert sel.random_k_overall(r, 4, seed=0).tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("k", [0, 5])
def test_random_k_overall_k_out_of_range(k):
    with pytest.raises(WinnowError, match=r"k must be between 1 and M x N = 4"):
        sel.random_k_overall(np.zeros((2, 2)), k, seed=0)


# ---------------------------------------------------------------- dedup


def test_dedup_within_row_keeps_earliest():
    rewards = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    texts = [
        ["a", "b", "a", None],  # the later "a" goes even though its reward (3) is higher
        [None, "a", None, "a"],  # "a" from row 0 does not count here; None never dedups
    ]
    out = sel.dedup(rewards, texts)
    np.testing.assert_array_equal(out, [[1.0, 2.0, nan, 4.0], [5.0, 6.0, 7.0, nan]])


def test_dedup_then_select_skips_the_duplicate():
    rewards = np.array([[0.2, 0.9, 0.9, 0.5]])
    texts = [["x", "y", "y", "z"]]
    assert sel.top_k_overall(sel.dedup(rewards, texts), 2).tolist() == [[0, 1], [0, 3]]


# ---------------------------------------------------------------- inputs are not modified


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_function_modifies_the_callers_matrix(dtype):
    r = np.array([[0.5, nan, 0.5], [nan, nan, nan], [0.1, 0.9, 0.1]], dtype=dtype)
    before = r.copy()
    texts = [["a", "a", "b"], [None, None, None], ["c", "c", "c"]]
    sel.top_per_prompt(r)
    sel.top_k_overall(r, 9)
    sel.top_k_per_prompt(r, 2)
    sel.threshold(r, 0.2)
    sel.random_per_prompt(r, 0)
    sel.random_k_overall(r, 3, 0)
    sel.dedup(r, texts)
    for name, kw in [
        ("top_per_prompt", {}),
        ("top_k_overall", {"k": 2}),
        ("top_k_per_prompt", {"k": 2}),
        ("threshold", {"t": 0.2}),
        ("random_per_prompt", {}),
        ("random_k_overall", {"k": 2}),
    ]:
        sel.apply(name, r, **kw)
    assert r.dtype == dtype
    np.testing.assert_array_equal(r, before)


# ---------------------------------------------------------------- apply / to_pairs


@pytest.mark.parametrize(
    "strategy, kw, expected",
    [
        ("top_per_prompt", {}, [[0, 0], [1, 1], [2, 0], [3, 2], [4, 3]]),
        ("top_k_overall", {"k": 5}, [[2, 0], [1, 1], [3, 2], [0, 0], [2, 3]]),
        (
            "top_k_per_prompt",
            {"k": 2},
            [[0, 0], [0, 2], [1, 1], [1, 2], [2, 0], [2, 3], [3, 2], [3, 3], [4, 3], [4, 0]],
        ),
        ("threshold", {"t": 0.7}, [[0, 0], [1, 1], [2, 0], [2, 3], [3, 2]]),
    ],
)
def test_apply_chapter_example(strategy, kw, expected):
    out = sel.apply(strategy, R, **kw)
    assert out.dtype == np.int64
    assert out.tolist() == expected


def test_apply_drops_unselected_rows_and_padding():
    r = np.array([[nan, nan], [1.0, 2.0], [0.1, nan]])
    assert sel.apply("top_per_prompt", r).tolist() == [[1, 1], [2, 0]]
    assert sel.apply("top_k_per_prompt", r, k=2).tolist() == [[1, 1], [1, 0], [2, 0]]


def test_apply_random_per_prompt_one_uniform_scored_pair_per_row():
    r = np.array([[nan, 0.9, 0.1, nan], [nan, nan, nan, nan], [0.5, nan, nan, -3.0]])
    trials = 2000
    counts = collections.Counter()
    for seed in range(trials):
        pairs = sel.apply("random_per_prompt", r, seed=seed).tolist()
        # one pair for each row that has a scored cell, in row order; row 1 has none
        assert [i for i, _ in pairs] == [0, 2], pairs
        counts.update(map(tuple, pairs))
    # each row's two scored cells are picked half the time each, whatever their rewards
    assert set(counts) == {(0, 1), (0, 2), (2, 0), (2, 3)}
    for cell, count in counts.items():
        assert abs(count / trials - 0.5) < 0.05, (cell, count)


def test_apply_random_k_overall_k_distinct_uniform_scored_pairs():
    r = np.array([[nan, 0.9, 0.1], [nan, nan, 7.0], [0.5, -2.0, nan]])
    scored = {(0, 1), (0, 2), (1, 2), (2, 0), (2, 1)}
    trials = 2000
    counts = collections.Counter()
    for seed in range(trials):
        pairs = [tuple(p) for p in sel.apply("random_k_overall", r, k=2, seed=seed).tolist()]
        assert len(pairs) == 2 and pairs == sorted(set(pairs)), pairs  # distinct, row-major
        assert set(pairs) <= scored
        counts.update(pairs)
    for cell in scored:  # 2 of 5 scored cells: each one is in 40% of the draws
        assert abs(counts[cell] / trials - 0.4) < 0.05, (cell, counts[cell])
    assert sel.apply("random_k_overall", r, k=9, seed=3).tolist() == sorted(map(list, scored))  # capped


def test_apply_random_controls_use_the_seed_given():
    r = _holey()
    picked = sel.random_per_prompt(r, 11)
    expected = [[i, int(j)] for i, j in enumerate(picked)]
    assert sel.apply("random_per_prompt", r, seed=11).tolist() == expected
    assert sel.apply("random_per_prompt", r, seed=12).tolist() != expected
    assert sel.apply("random_k_overall", r, k=6, seed=11).tolist() == sel.random_k_overall(r, 6, 11).tolist()
    assert sel.apply("random_k_overall", r, k=6, seed=12).tolist() != sel.random_k_overall(r, 6, 11).tolist()
    # the default seed is 0
    assert sel.apply("random_per_prompt", r).tolist() == sel.apply("random_per_prompt", r, seed=0).tolist()
    assert sel.apply("random_per_prompt", r).tolist() != sel.apply("random_per_prompt", r, seed=1).tolist()
    assert sel.apply("random_k_overall", r, k=6).tolist() == sel.random_k_overall(r, 6, 0).tolist()


@pytest.mark.parametrize("strategy", ["top_k_overall", "top_k_per_prompt", "random_k_overall"])
def test_apply_k_strategies_without_k(strategy):
    with pytest.raises(WinnowError, match=rf"^strategy {strategy} needs k$"):
        sel.apply(strategy, R)


def test_apply_threshold_without_t():
    with pytest.raises(WinnowError, match=r"^strategy threshold needs threshold$"):
        sel.apply("threshold", R)


def test_to_pairs_shapes_for_empty_selections():
    assert sel.to_pairs("top_per_prompt", np.array([-1, -1])).shape == (0, 2)
    assert sel.to_pairs("top_k_per_prompt", np.full((2, 3), -1)).shape == (0, 2)
    assert sel.to_pairs("top_k_overall", np.empty((0, 2), dtype=np.int64)).shape == (0, 2)


def test_apply_unknown_strategy():
    with pytest.raises(WinnowError, match=r"unknown strategy 'best_of_all'"):
        sel.apply("best_of_all", R, k=1)


# ---------------------------------------------------------------- edge shapes, dtypes, -inf


def test_none_in_a_plain_list_is_unscored():
    rows = [[None, 0.5, 0.2], [0.1, None, None], [None, None, None]]
    assert sel.top_per_prompt(rows).tolist() == [1, 0, -1]
    assert sel.top_k_overall(rows, 9).tolist() == [[0, 1], [0, 2], [1, 0]]
    assert sel.threshold(rows, 0.2).tolist() == [[0, 1], [0, 2]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_float_matrix_is_used_as_is(dtype):
    """No float32 -> float64 copy: selection keeps to one matrix-sized copy at most."""
    r = R.astype(dtype)
    assert sel._as_matrix(r) is r


def test_zero_samples_per_prompt():
    out = sel.top_per_prompt(np.empty((3, 0)))
    assert out.dtype == np.int64 and out.tolist() == [-1, -1, -1]


def test_rows_whose_best_reward_is_minus_inf():
    """argmax over NaN-as--inf can land on a NaN before a real -inf: those rows take their
    first scored cell, and an all-NaN row still gets -1."""
    r = np.array([[nan, -inf, -inf], [nan, nan, nan], [0.5, nan, 0.7], [-inf, nan, nan], [nan, nan, -inf]])
    assert sel.top_per_prompt(r).tolist() == [1, -1, 2, 0, 2]
    assert sel.top_k_overall(r, 15).tolist() == [[2, 2], [2, 0], [0, 1], [0, 2], [3, 0], [4, 2]]
    assert sel.threshold(r, -inf).tolist() == [[0, 1], [0, 2], [2, 0], [2, 2], [3, 0], [4, 2]]


def test_top_k_per_prompt_ranks_minus_inf_before_the_padding():
    r = np.array([[nan, -inf, 0.5, nan], [-inf, nan, -inf, 1.0]])
    assert sel.top_k_per_prompt(r, 4).tolist() == [[2, 1, -1, -1], [3, 0, 2, -1]]


def test_every_strategy_returns_int64_even_when_empty():
    empty = np.full((2, 3), nan)
    outputs = [
        sel.top_per_prompt(R),
        sel.top_k_overall(R, 3),
        sel.top_k_overall(empty, 3),
        sel.top_k_per_prompt(R, 2),
        sel.threshold(R, 0.5),
        sel.random_per_prompt(R, 0),
        sel.random_k_overall(R, 3, 0),
    ]
    assert [out.dtype for out in outputs] == [np.dtype(np.int64)] * len(outputs)
    assert sel.dedup(R.astype(np.float32), [["a"] * 4] * 5).dtype == np.float64


def test_random_k_overall_k_1_is_allowed():
    r = np.array([[nan, 0.3], [nan, nan]])
    assert sel.random_k_overall(r, 1, seed=0).tolist() == [[0, 1]]


@pytest.mark.parametrize("texts", [[["a", "b"]], [["a", "b"], ["c"]], [["a"], ["b"]]])
def test_dedup_texts_of_another_shape(texts):
    with pytest.raises(WinnowError, match=r"^texts must have the shape of rewards \(2, 2\)$"):
        sel.dedup(np.zeros((2, 2)), texts)


# ---------------------------------------------------------------- rso and pairs: edges and plumbing


def test_unknown_names_list_the_choices():
    with pytest.raises(WinnowError) as e:
        sel.apply("best_of_all", R)
    assert str(e.value) == f"unknown strategy 'best_of_all' (choose from {', '.join(sel.STRATEGIES)})"
    assert ", top_k_overall, " in str(e.value)
    with pytest.raises(WinnowError) as e:
        sel.make_pairs("worst-best", R)
    assert str(e.value) == "unknown pairing 'worst-best' (choose from best-worst, all, rso, pass-fail)"


def test_pairs_are_int64_even_when_empty():
    one_scored = np.array([[0.5, nan], [nan, nan]])
    outputs = [
        sel.best_worst(R),
        sel.best_worst(one_scored),
        sel.all_pairs(R),
        sel.rso(R, 1.0, 2, 0),
        sel.rso_pairs(R, 1.0, 4, 0),
        sel.rso_pairs(R, 1.0, 1, 0),
        sel.make_pairs("best-worst", R),
        sel.make_pairs("best-worst", one_scored),
    ]
    assert [out.dtype for out in outputs] == [np.dtype(np.int64)] * len(outputs)


def test_best_worst_rows_of_plus_inf():
    """Where every scored reward is +inf, the masked-out cells look alike: the rejected must
    still be a scored cell other than the chosen one."""
    r = np.array([[inf, nan, inf, nan], [nan, inf, nan, inf], [0.1, 0.5, nan, 0.3]])
    assert sel.best_worst(r).tolist() == [[0, 2], [1, 3], [1, 0]]


def test_rso_with_no_samples():
    assert sel.rso(np.empty((2, 0)), 1.0, 2, 0).tolist() == [[-1, -1], [-1, -1]]


def test_rso_small_beta_and_infinite_rewards_raise_no_warning():
    """exp() of a gap above r_max (a proposal already taken) would overflow, and inf - inf is
    NaN: both are handled, so nothing warns even with warnings as errors."""
    r = np.array([[1.0, np.inf, nan, np.inf], [-np.inf, -np.inf, nan, 0.0], [0.7, 0.3, 0.5, 0.2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(5):
            sel.rso(R, 1e-3, 4, seed)
            sel.rso(r, 1e-3, 4, seed)


def test_rso_pairs_pair_consecutive_picks_ordered_by_reward():
    """Pairs are rso's 1st and 2nd, 3rd and 4th picks (same seed), the better one first;
    ties and unpaired picks are left out."""
    rng = np.random.default_rng(5)
    r = np.round(rng.normal(size=(40, 6)), 1)
    r[rng.random(r.shape) < 0.3] = nan
    r[0] = [0.2, nan, nan, nan, nan, nan]  # one scored: no pair
    for seed in range(3):
        picked = sel.rso(r, 5.0, 6, seed)
        expected = []
        for i, cols in enumerate(picked):
            for a, b in zip(cols[0::2], cols[1::2], strict=True):
                if a >= 0 and b >= 0 and r[i, a] != r[i, b]:
                    expected.append([i, a, b] if r[i, a] > r[i, b] else [i, b, a])
        got = sel.rso_pairs(r, 5.0, 6, seed)
        assert got.tolist() == expected
        assert all(r[i, a] > r[i, b] for i, a, b in got.tolist())
        assert sel.rso_pairs(r, 5.0, 6, seed).tolist() == got.tolist()  # seeded
    assert sel.rso_pairs(r, 5.0, 1, 0).shape == (0, 3)  # one pick a row: no pair


def test_make_pairs_passes_k_beta_and_seed():
    assert sel.make_pairs("rso", R, k=2, beta=1e-6).tolist() == [[0, 0, 2], [1, 1, 2], [2, 0, 3], [3, 2, 3], [4, 3, 0]]
    # k defaults to every sample: two pairs a row
    assert sel.make_pairs("rso", R, beta=1e-6)[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    r = np.random.default_rng(3).normal(size=(30, 6))
    assert sel.make_pairs("rso", r, k=4, beta=5.0).tolist() == sel.rso_pairs(r, 5.0, 4, 0).tolist()
    assert sel.make_pairs("rso", r, k=4, beta=5.0, seed=9).tolist() == sel.rso_pairs(r, 5.0, 4, 9).tolist()
    assert sel.make_pairs("rso", r, k=4, beta=5.0, seed=9).tolist() != sel.rso_pairs(r, 5.0, 4, 0).tolist()
