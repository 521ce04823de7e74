"""Pass statistics: pass@k against hand-computed values (c = 0, c = n, k = n), solved shares,
the votes' entry (their exactness is tests/test_votes.py's), and ``winnow report --pass-threshold`` on a hand-made run."""

from __future__ import annotations

import math
from math import comb

import numpy as np
import pytest
from test_report_run import make_run

from winnow.cli import main
from winnow.report import run_report
from winnow.report.passk import pass_at_k, pass_at_k_rows, pass_stats, solved_shares

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
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 0)


def test_pass_at_k_rows_columns_are_k():
    passed = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(pass_at_k_rows(passed), [[1 / 3, 2 / 3, 1.0], [0, 0, 0], [1, 1, 1]])


def test_solved_shares_ignore_unscored_cells_and_rows():
    passed = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], dtype=bool)
    scored = np.array([[1, 0], [1, 1], [1, 1], [0, 0]], dtype=bool)
    # row 0: 1 of 1 -> all; row 1: 1 of 2 -> some; row 2: none; row 3 has nothing scored.
    assert solved_shares(passed, scored) == {"none": 1 / 3, "some": 1 / 3, "all": 1 / 3, "prompts": 3}


def test_pass_stats_votes_are_exact():
    r = np.array([[1.0, 1.0, 0.0]])
    v = pass_stats(r, 0.5, answers=[["4", "4", "5"]], iters=50)["votes"]
    assert v["k"] == [1, 2, 3] and v["maj_at_k"] == [pytest.approx(2 / 3, abs=1e-15), 1.0, 1.0]
    assert v["weighted_at_k"] == [pytest.approx(2 / 3, abs=1e-15), 1.0, 1.0]
    assert v["estimated_prompts"] == {"maj": 0, "weighted": 0}


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
