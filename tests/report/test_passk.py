"""Pass statistics: pass@k against hand-computed values (c = 0, c = n, k = n), solved shares,
the votes' entry (their exactness is tests/report/test_votes.py's), and ``winnow report --pass-threshold`` on a hand-made run."""

from __future__ import annotations

import math
import warnings
from math import comb

import numpy as np
import pytest
from helpers import make_run

from winnow.cli import main
from winnow.report import passk, run_report, votes
from winnow.report.passk import bootstrap_band, pass_at_k, pass_at_k_rows, pass_stats, solved_shares

nan = math.nan


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 0, 1, 0.0),  # c = 0: never
        (4, 0, 4, 0.0),
        (4, 4, 1, 1.0),  # c = n: always
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (4, 1, 4, 1.0),  # k = n with one pass: the draw holds it
        (10, 3, 5, 1 - comb(7, 5) / comb(10, 5)),  # 1 - 21/252
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_refuses_k_outside_one_to_n():
    with pytest.raises(ValueError) as wrong:
        pass_at_k(3, 1, 4)
    assert str(wrong.value) == "need 1 <= k <= n and 0 <= c <= n, got n=3, c=1, k=4"
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 0)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_pass_at_k_rows_columns_are_k():
    passed = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(pass_at_k_rows(passed), [[1 / 3, 2 / 3, 1.0], [0, 0, 0], [1, 1, 1]])


def test_bootstrap_band_fills_every_resample():
    """One prompt: every resample's mean is that prompt's row, so the band is the row
    exactly, across several blocks of 256 (a resample left unfilled would show)."""
    one = np.array([[0.25, 0.5, 1.0]])
    for iters in (1, 255, 256, 257, 600):
        low, high = bootstrap_band(one, iters=iters)
        assert low.tolist() == high.tolist() == [0.25, 0.5, 1.0]


def test_bootstrap_band_quantiles_of_two_prompts():
    # two prompts, 0 and 1: a resample's mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4
    rows = np.array([[0.0], [1.0]])
    assert [x.tolist() for x in bootstrap_band(rows)] == [[0.0], [1.0]]
    assert [x.tolist() for x in bootstrap_band(rows, iters=256)] == [[0.0], [1.0]]  # one block, many draws
    assert [x.tolist() for x in bootstrap_band(rows, level=1.0)] == [[0.0], [1.0]]
    assert [x.tolist() for x in bootstrap_band(rows, level=0.4)] == [[0.5], [0.5]]  # 30th to 70th percentile
    assert [x.tolist() for x in bootstrap_band(rows * 4)] == [[0.0], [4.0]]


def test_bootstrap_band_edges_and_defaults():
    low, high = bootstrap_band(np.empty((0, 3)))
    assert low.shape == high.shape == (3,) and np.isnan(low).all() and np.isnan(high).all()
    rows = np.random.default_rng(8).random((25, 4))
    low, high = bootstrap_band(rows, level=0.0)  # the median, once
    assert low.shape == (4,) and low.tolist() == high.tolist()
    default = bootstrap_band(rows)
    assert [x.tolist() for x in default] == [x.tolist() for x in bootstrap_band(rows, iters=2000, level=0.95, seed=0)]
    assert default[0].tolist() != bootstrap_band(rows, iters=2001)[0].tolist()
    assert default[0].tolist() != bootstrap_band(rows, seed=1)[0].tolist()


def test_solved_shares_ignore_unscored_cells_and_rows():
    passed = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=bool)
    scored = np.array([[1, 0], [1, 1], [1, 1], [0, 0]], dtype=bool)
    # row 0: 1 of 1 -> all; row 1: 1 of 2 -> some; row 2: none; row 3 has nothing scored.
    assert solved_shares(passed, scored) == {"none": 1 / 3, "some": 1 / 3, "all": 1 / 3, "prompts": 3}
    assert solved_shares(passed[:1], scored[:1]) == {"none": 0.0, "some": 0.0, "all": 1.0, "prompts": 1}
    nothing = solved_shares(passed[3:], scored[3:])
    assert list(nothing) == ["none", "some", "all", "prompts"] and nothing["prompts"] == 0
    assert all(math.isnan(nothing[key]) for key in ("none", "some", "all"))


def test_pass_stats_votes_are_exact():
    r = np.array([[1.0, 1.0, 0.0]])
    v = pass_stats(r, 0.5, answers=[["4", "4", "5"]], iters=50)["votes"]
    assert v["k"] == [1, 2, 3] and v["maj_at_k"] == [pytest.approx(2 / 3, abs=1e-15), 1.0, 1.0]
    assert v["weighted_at_k"] == [pytest.approx(2 / 3, abs=1e-15), 1.0, 1.0]
    assert v["estimated_prompts"] == {"maj": 0, "weighted": 0}


def test_pass_stats_of_one_prompt_by_hand():
    s = pass_stats([[1.0, 0.5, None]], 0.5, columns=2, iters=50)  # None: unscored; 0.5 >= 0.5 passes
    assert s == {
        "threshold": 0.5,
        "pass_rate_per_prompt": [1.0],
        "mean_pass_rate": 1.0,
        "solved": {"none": 0.0, "some": 0.0, "all": 1.0, "prompts": 1},
        "pass_at_k": {"k": [1, 2], "mean": [1.0, 1.0], "low": [1.0, 1.0], "high": [1.0, 1.0], "rows": 1, "columns": 2},
    }


def test_pass_stats_with_nothing_fully_scored_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty slice
        s = pass_stats(np.array([[nan, nan], [nan, 1.0]]), 0.5, iters=50)
        unscored = pass_stats(np.array([[nan, nan]]), 0.5, iters=50)
    assert s["pass_rate_per_prompt"] == [None, 1.0] and s["mean_pass_rate"] == 1.0
    assert s["pass_at_k"]["rows"] == 0 and np.isnan(s["pass_at_k"]["mean"]).all()
    assert len(s["pass_at_k"]["mean"]) == 2
    assert math.isnan(unscored["mean_pass_rate"])


def test_pass_stats_with_no_columns():
    s = pass_stats(np.array([[1.0, 0.0]]), 0.5, columns=0, iters=50)["pass_at_k"]
    assert s == {"k": [], "mean": [], "low": [], "high": [], "rows": 0, "columns": 0}


def test_pass_stats_band_is_the_bootstrap_of_its_rows_with_its_seed():
    rewards = np.random.default_rng(3).random((30, 4))
    rows = pass_at_k_rows(rewards >= 0.5)
    band = pass_stats(rewards, 0.5, iters=60, seed=4)["pass_at_k"]
    assert [band["low"], band["high"]] == [x.tolist() for x in bootstrap_band(rows, iters=60, seed=4)]
    assert pass_stats(rewards, 0.5) == pass_stats(rewards, 0.5, iters=2000, seed=0)


def test_pass_stats_band_defaults_to_2000_resamples_seed_0(monkeypatch):
    calls = []

    def band(rows, **options):
        calls.append(options)
        return bootstrap_band(rows, **options)

    monkeypatch.setattr(passk, "bootstrap_band", band)
    pass_stats(np.ones((2, 2)), 0.5)
    assert calls == [{"iters": 2000, "seed": 0}]


def test_pass_stats_vote_ks_default_and_answered_share():
    r = np.ones((1, 65))
    v = pass_stats(r, 0.5, answers=[["4"] * 64 + [None]], iters=10)["votes"]
    assert v["k"] == [1, 2, 4, 8, 16, 32, 64, 65]
    assert v["answered_share"] == 64 / 65


def test_pass_stats_weighted_votes_weigh_and_equal_groups():
    # maj@3: 5 wins two votes to one and fails; weighted@3: 4 weighs 1.0 against 0.4 and passes
    v = pass_stats([[1.0, 0.2, 0.2]], 0.5, answers=[["4", "5", "5"]], iters=10)["votes"]
    assert (v["maj_at_k"][-1], v["weighted_at_k"][-1]) == (0.0, 1.0)
    # "1" and "01" are one answer under equal, and it fails: alone, each ties with (maj) or
    # weighs less than (weighted) the passing "2" that came first
    rewards, answers = [[0.45, 0.3, 0.3]], [["2", "1", "01"]]
    alone = pass_stats(rewards, 0.4, answers=answers, iters=10)["votes"]
    grouped = pass_stats(rewards, 0.4, answers=answers, iters=10, equal=lambda a, b: int(a) == int(b))["votes"]
    assert (alone["maj_at_k"][-1], alone["weighted_at_k"][-1]) == (1.0, 1.0)
    assert (grouped["maj_at_k"][-1], grouped["weighted_at_k"][-1]) == (0.0, 0.0)


def test_pass_stats_estimated_votes_follow_the_seed(monkeypatch):
    monkeypatch.setattr(votes, "MAX_CELLS", 10)  # every prompt estimated from random subsets
    rng = np.random.default_rng(1)
    rewards = rng.random((3, 8))
    answers = [[str(x) for x in rng.integers(0, 3, 8)] for _ in range(3)]

    def voted(seed):
        v = pass_stats(rewards, 0.5, answers=answers, iters=10, seed=seed)["votes"]
        assert v["estimated_prompts"] == {"maj": 3, "weighted": 3}
        return v["maj_at_k"], v["weighted_at_k"]

    assert voted(3) == voted(3)
    maj0, weighted0 = voted(0)
    maj3, weighted3 = voted(3)
    assert maj0 != maj3 and weighted0 != weighted3


def test_pass_stats_first_columns_only():
    r = np.array([[0.0, 1.0, nan, nan], [1.0, 1.0, 0.0, 1.0]])
    s = pass_stats(r, 0.5, columns=2, iters=50)
    assert s["pass_at_k"]["k"] == [1, 2] and s["pass_at_k"]["rows"] == 2
    np.testing.assert_allclose(s["pass_at_k"]["mean"], [(0.5 + 1.0) / 2, 1.0])
    assert s["pass_rate_per_prompt"] == [0.5, 0.75]
    assert s["solved"] == {"none": 0.0, "some": 1.0, "all": 0.0, "prompts": 2}


def test_report_with_pass_threshold(tmp_path):
    run = make_run(tmp_path / "run")
    r = run_report(run, iters=200, pass_threshold=0.3)
    p = r["pass"]
    # p0 [0.5, 0.5, -0.5]: 2/3; p1 [1.0, 0.0, 0.2]: 1/3; p2 [0.1, 0.3, nan]: 1/2 (0.3 >= 0.3)
    assert p["pass_rate_per_prompt"] == pytest.approx([2 / 3, 1 / 3, 0.5])
    assert p["solved"] == {"none": 0.0, "some": 1.0, "all": 0.0, "prompts": 3}
    # pass@k over the fully scored p0 (c=2) and p1 (c=1) of n=3.
    expected = [(2 / 3 + 1 / 3) / 2, (1.0 + 2 / 3) / 2, 1.0]
    np.testing.assert_allclose(p["pass_at_k"]["mean"], expected)
    assert (run / "report" / "pass_rates.png").exists()
    assert "## Pass statistics" in (run / "report" / "report.md").read_text()
    assert run_report(run, iters=50)["pass"] is None  # no threshold anywhere: no pass section


def test_report_command_takes_pass_threshold(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--bootstrap-iters", "50", "--pass-threshold", "0.3"]) == 0
    assert "pass@1 0.500" in capsys.readouterr().out
