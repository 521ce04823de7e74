"""winnow/stages/score.py: a hand-made generate stage scored into the reward matrix, every
number computed by hand (one reward, a weighted sum with an unscored reward, reasoning tags,
a prompts column), the stage's rows and manifest, and the helpers that build them."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import fake_generate, read_rows, tree_digest

from winnow.config import ScoreConfig
from winnow.executors import ShardTask
from winnow.records import Prompt
from winnow.stages.score import ScoreWorker, answer_counts, column_names, reward_matrix, score, summarize

REWARDS = """
def words(prompts, completions, **kw):
    return [float(len(c.split())) for c in completions]

def skip_second(prompts, completions, sample_indices, **kw):
    return [None if j == 1 else 10.0 for j in sample_indices]

def has_answer(prompts, completions, answer, **kw):
    # the prompts column 'answer' arrives as a keyword, one value per row
    return [float(a in c) for c, a in zip(completions, answer, strict=True)]
"""
PROMPTS = [Prompt(id="a", text="q a", columns={"answer": "2"}), Prompt(id="b", text="q b", columns={"answer": "3"})]
# Three samples a prompt. Words without reasoning tags: a [1, 2, 3], b [1, 4, 3]; with the
# think tags (the answer after </think>): a "2", "two words", "x y z" -> [1, 2, 3]; b "3",
# never closed (0, not shown to the reward), " c" -> [1, 0, 1].
TEXTS = {
    "a": ["</think>2", "</think>two words", "<think>x</think>x y z"],
    "b": ["</think>3", "no closing tag here", "<think>a b</think> c"],
}
WORDS = [[1.0, 2.0, 3.0], [1.0, 4.0, 3.0]]


@pytest.fixture()
def run(tmp_path) -> Path:
    (tmp_path / "r.py").write_text(REWARDS)
    fake_generate(tmp_path / "run", PROMPTS, TEXTS)
    return tmp_path / "run"


def spec(run: Path, name: str) -> str:
    return f"{run.parent / 'r.py'}:{name}"


def test_one_reward_fills_the_matrix_and_the_manifest(run):
    manifest = score(run, ScoreConfig(reward_fn=spec(run, "words")))
    np.testing.assert_array_equal(np.load(run / "score" / "rewards.npy"), WORDS)
    assert (manifest["num_completions"], manifest["scored"], manifest["unscored"]) == (6, 6, 0)
    assert manifest["mean_reward"] == pytest.approx(14 / 6, rel=1e-15)
    assert manifest["mean_best_reward"] == 3.5  # a: 3, b: 4
    assert manifest["files"]["rewards.npy"]["shape"] == [2, 3]
    assert "no_answer" not in manifest and "unfinished_reasoning" not in manifest and "components" not in manifest
    # every row carries its keys; one shard of 6 rows (shard_size 1024)
    assert read_rows(run / "score" / "shard-00000.jsonl") == [
        {"prompt_id": p, "sample_index": j, "model": "m", "reward": WORDS[i][j]}
        for i, p in enumerate("ab")
        for j in range(3)
    ]


def test_a_weighted_sum_is_unscored_where_any_reward_is_and_each_reward_is_kept(run):
    config = ScoreConfig(reward_fn=[spec(run, "words"), spec(run, "skip_second")], reward_weights=[1.0, 0.5])
    manifest = score(run, config)
    # words + 0.5 * 10, NaN in column 1 where skip_second gave None
    total = np.load(run / "score" / "rewards.npy")
    np.testing.assert_array_equal(total, [[6.0, np.nan, 8.0], [6.0, np.nan, 8.0]])
    np.testing.assert_array_equal(np.load(run / "score" / "rewards-0.npy"), WORDS)
    np.testing.assert_array_equal(np.load(run / "score" / "rewards-1.npy"), [[10.0, np.nan, 10.0]] * 2)
    assert (manifest["scored"], manifest["unscored"], manifest["mean_reward"], manifest["mean_best_reward"]) == (
        4,
        2,
        7.0,
        8.0,
    )
    first, second = manifest["components"]
    assert {k: first[k] for k in ("reward", "weight", "file", "scored")} == {
        "reward": spec(run, "words"),
        "weight": 1.0,
        "file": "rewards-0.npy",
        "scored": 6,
    }
    assert first["mean_reward"] == pytest.approx(14 / 6, rel=1e-15)
    assert second == {"reward": spec(run, "skip_second"), "weight": 0.5, "file": "rewards-1.npy", "scored": 4,
                      "mean_reward": 10.0}  # fmt: skip
    rows = read_rows(run / "score" / "shard-00000.jsonl")
    assert [r["rewards"] for r in rows[:3]] == [[1.0, 10.0], [2.0, None], [3.0, 10.0]]
    assert [r["reward"] for r in rows[:3]] == [6.0, None, 8.0]


def test_reasoning_tags_score_the_answer_and_an_unclosed_one_zero(run):
    manifest = score(run, ScoreConfig(reward_fn=spec(run, "words"), reasoning_tags=["think"]))
    np.testing.assert_array_equal(np.load(run / "score" / "rewards.npy"), [[1.0, 2.0, 3.0], [1.0, 0.0, 1.0]])
    assert manifest["unfinished_reasoning"] == 1
    flagged = [(r["prompt_id"], r["sample_index"]) for r in read_rows(run / "score" / "shard-00000.jsonl")
               if r.get("unfinished_reasoning")]  # fmt: skip
    assert flagged == [("b", 1)]


def test_a_prompts_column_reaches_the_reward_and_a_finished_stage_is_not_redone(run):
    config = ScoreConfig(reward_fn=spec(run, "has_answer"))
    manifest = score(run, config)
    np.testing.assert_array_equal(np.load(run / "score" / "rewards.npy"), [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    before = tree_digest(run / "score")
    assert score(run, config) == manifest
    assert tree_digest(run / "score") == before
    assert json.loads((run / "score" / "manifest.json").read_text()) == manifest


def test_the_worker_turns_triples_into_keyed_rows():
    """Library callers hand the worker (prompt content, completion row, columns) triples."""
    worker = ScoreWorker(ScoreConfig(reward_fn="length"))
    triples = [
        ("q", {"prompt_id": "x", "sample_index": 3, "model": "m", "text": "four"}, {}),
        ("q", {"prompt_id": "y", "sample_index": 0, "model": "m", "text": ""}, {}),
    ]
    assert worker.run(ShardTask("00000", triples)) == [
        {"prompt_id": "x", "sample_index": 3, "model": "m", "reward": 4.0},
        {"prompt_id": "y", "sample_index": 0, "model": "m", "reward": 0.0},
    ]


def test_reward_matrix_places_rows_by_key_and_leaves_the_rest_nan():
    prompts = [Prompt(id="a", text="x"), Prompt(id="b", text="y")]
    rows = [
        {"prompt_id": "b", "sample_index": 1, "reward": 2.5, "rewards": [2.0, 0.5]},
        {"prompt_id": "a", "sample_index": 0, "reward": None, "rewards": [None, 1.0]},
    ]
    np.testing.assert_array_equal(reward_matrix(prompts, rows, 2), [[np.nan, np.nan], [np.nan, 2.5]])
    np.testing.assert_array_equal(reward_matrix(prompts, rows, 2, component=1), [[1.0, np.nan], [np.nan, 0.5]])


def test_column_names_in_first_seen_order():
    prompts = [Prompt(id="a", text="x", columns={"z": 1, "a": 2}), Prompt(id="b", text="y", columns={"m": 3, "z": 4})]
    assert column_names(prompts) == ("z", "a", "m")
    assert column_names([Prompt(id="a", text="x")]) == ()


def test_summarize_counts_and_means_by_hand():
    matrix = np.array([[0.5, np.nan, -1.0], [np.nan, np.nan, np.nan], [2.0, 4.0, np.nan]])
    assert summarize(matrix, num_completions=9) == {
        "num_completions": 9,
        "scored": 4,
        "unscored": 5,
        "mean_reward": 1.375,  # (0.5 - 1 + 2 + 4) / 4
        "mean_best_reward": 2.25,  # (0.5 + 4) / 2: the all-NaN row has no best
    }
    empty = summarize(np.full((1, 2), np.nan), num_completions=2)
    assert (empty["mean_reward"], empty["mean_best_reward"]) == (None, None)
    huge = summarize(np.array([[1e308, 1e308]]), num_completions=2)  # a plain sum would overflow to inf
    assert huge["mean_reward"] == 1e308 and math.isfinite(huge["mean_best_reward"])


def test_answer_counts_only_where_they_mean_something():
    counts = Counter(no_answer=2, unfinished_reasoning=3)
    assert answer_counts(Counter(), ScoreConfig(reward_fn="length")) == {}
    assert answer_counts(Counter(), ScoreConfig(reward_fn="math")) == {"no_answer": 0}  # a verifier: 0 is news
    assert answer_counts(counts, ScoreConfig(reward_fn="length")) == {"no_answer": 2}
    assert answer_counts(counts, ScoreConfig(reward_fn="length", reasoning_tags=["think"])) == {
        "no_answer": 2,
        "unfinished_reasoning": 3,
    }
