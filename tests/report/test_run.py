"""``winnow report`` on a run directory built by hand, every expected number worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import make_run

from winnow import stages
from winnow.cli import main
from winnow.config import SelectConfig
from winnow.report import run_report

nan = math.nan


def test_report_without_a_select_stage(tmp_path):
    run = make_run(tmp_path / "run")
    r = run_report(run, iters=2000)
    assert (r["prompts"], r["columns"], r["completions"], r["unscored"], r["max_new_tokens"]) == (3, 3, 9, 1, 5)
    bon = r["best_of_n"]
    # Fully scored rows p0 [0.5, 0.5, -0.5] and p1 [1.0, 0.0, 0.2] (p2 has a NaN):
    # p0: n=1 1/6, n=2 every pair holds a 0.5 -> 0.5, n=3 0.5;
    # p1: n=1 1.2/3 = 0.4, n=2 (1 + 1 + 0.2)/3, n=3 1.0.
    p0, p1 = np.array([1 / 6, 0.5, 0.5]), np.array([0.4, 2.2 / 3, 1.0])
    assert bon["rows"] == 2 and bon["n"] == [1, 2, 3]
    np.testing.assert_allclose(bon["mean"], (p0 + p1) / 2)
    # Two prompts: a resample is both p0 with chance 1/4, both p1 with chance 1/4, so the
    # 2.5% and 97.5% percentiles are p0's and p1's curves exactly.
    np.testing.assert_allclose(bon["low"], p0)
    np.testing.assert_allclose(bon["high"], p1)
    np.testing.assert_allclose(bon["kl_upper_bound"], [0.0, math.log(2) - 1 / 2, math.log(3) - 2 / 3])

    everything = r["all"]
    assert everything["count"] == 9 and everything["scored"] == 8
    assert everything["mean_reward"] == pytest.approx(2.1 / 8)
    assert everything["mean_tokens"] == pytest.approx(27 / 9)
    assert everything["truncated_share"] == pytest.approx(2 / 9)
    # 18 words, 11 distinct; 9 bigrams, 8 distinct ("good day" twice)
    assert everything["distinct_1"] == pytest.approx(11 / 18)
    assert everything["distinct_2"] == pytest.approx(8 / 9)
    assert everything["duplicates"] == 1

    # no select stage: the best of each prompt, the earlier sample on p0's tie
    assert r["selection"]["source"] == "best per prompt (no select stage)"
    chosen = r["selected"]
    assert chosen["count"] == 3 and chosen["mean_reward"] == pytest.approx((0.5 + 1.0 + 0.3) / 3)
    assert (chosen["mean_tokens"], chosen["truncated_share"], chosen["duplicates"]) == (3.0, 0.0, 0)
    assert (chosen["distinct_1"], chosen["distinct_2"]) == (1.0, 1.0)
    assert r["pairs"] is None

    out = run / "report"
    assert json.loads((out / "report.json").read_text()) == r
    for name in ("report.md", "best_of_n.png", "selected_vs_all.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "| 2 | 0.617 | [0.500, 0.733] | 0.193 |" in md
    assert "upper bound" in md


def test_report_reads_the_select_stage_and_its_pairs(tmp_path):
    run = make_run(tmp_path / "run")
    config = SelectConfig(strategy="threshold", threshold=0.2, dedup=True, drop_truncated=True, pairs="best-worst")
    stages.select(run, config)
    r = run_report(run, iters=200)
    sel = r["selection"]
    assert (sel["source"], sel["strategy"], sel["threshold"]) == ("select stage", "threshold", 0.2)
    # dropped before selecting: p0's and p1's cut samples; then p0's repeated "good day"
    assert (sel["truncated_dropped"], sel["duplicates_removed"]) == (2, 1)
    # reward >= 0.2 of what is left: p0 #0 (0.5), p1 #0 (1.0), p1 #2 (0.2), p2 #1 (0.3)
    chosen = r["selected"]
    assert chosen["count"] == 4 and chosen["mean_reward"] == pytest.approx(2.0 / 4)
    assert chosen["mean_tokens"] == pytest.approx((3 + 3 + 2 + 3) / 4)
    # words: good day the sun sun ok then -> 6 distinct of 7
    assert chosen["distinct_1"] == pytest.approx(6 / 7)
    # best-worst on what is left: p0 has one candidate (no pair); p1 (#0 1.0, #2 0.2); p2 (#1 0.3, #0 0.1)
    pairs = r["pairs"]
    assert pairs["count"] == 2
    assert pairs["mean_margin"] == pytest.approx((0.8 + 0.2) / 2)
    assert (pairs["mean_chosen_tokens"], pairs["mean_rejected_tokens"]) == (3.0, 2.0)
    # the report still describes every completion, the dropped ones included
    assert r["all"]["count"] == 9


def test_report_command(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--bootstrap-iters", "100"]) == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["best_of_n"]["bootstrap_iters"] == 100
    assert "report.md" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run `winnow generate`" in capsys.readouterr().err
