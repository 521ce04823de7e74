"""DeepConf's confidence (``winnow.confidence``) on hand-built log-probabilities, and its three
uses on hand-built tables: votes weighted by confidence, keeping the most confident traces,
and adaptive sampling that stops on a confidence-weighted consensus."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import fails, flags, make_run, write_jsonl

from winnow import confidence as conf
from winnow import select as sel
from winnow.errors import WinnowError

nan = np.nan

# Five positions' top-3 log-probabilities, and minus their means by hand: 6/3, 9/3, 3/3, 3/3, 15/3.
TOP3 = np.array(
    [
        [-0.5, -1.5, -4.0],
        [-0.25, -2.75, -6.0],
        [-0.5, -0.5, -2.0],
        [-1.0, -1.0, -1.0],
        [-2.0, -5.0, -8.0],
    ]
)
C = [2.0, 3.0, 1.0, 1.0, 5.0]


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    assert conf.token_confidence(TOP3).tolist() == C


@pytest.mark.parametrize(
    ("window", "groups", "lowest"),
    [
        (1, C, 1.0),
        (2, [2.5, 2.0, 1.0, 3.0], 1.0),
        (3, [2.0, 5 / 3, 7 / 3], 5 / 3),
        (5, [2.4], 2.4),
        (9, [2.4], 2.4),  # shorter than the window: one group, the whole trace
    ],
)
def test_group_confidence_slides_one_token_at_a_time(window, groups, lowest):
    np.testing.assert_allclose(conf.group_confidences(C, window), groups, rtol=1e-15)
    got = conf.summarize(C, window)
    assert got["mean_confidence"] == pytest.approx(2.4, rel=1e-15)
    assert got["lowest_group_confidence"] == pytest.approx(lowest, rel=1e-15)


def test_a_completion_of_no_tokens_has_no_confidence():
    assert conf.summarize([], 4) == {"mean_confidence": None, "lowest_group_confidence": None}
    with pytest.raises(WinnowError, match="confidence window must be >= 1, got 0"):
        conf.group_confidences(C, 0)


def test_row_columns_keep_two_numbers_or_every_token():
    lp = conf.TokenLogprobs(sampled=(-0.5, -0.25, -0.5, -1.0, -2.0), confidence=tuple(C))
    assert conf.row_columns(None, window=2, keep=True) == {}
    assert conf.row_columns(lp, window=2, keep=False) == {"mean_confidence": 2.4, "lowest_group_confidence": 1.0}
    every = conf.row_columns(lp, window=2, keep=True)
    assert every["token_logprobs"] == [-0.5, -0.25, -0.5, -1.0, -2.0] and every["token_confidence"] == C


@pytest.mark.parametrize(
    ("percent", "kept"),
    [
        (100, [True, True, False, True, True, True]),
        (50, [False, True, False, True, False, True]),  # ceil(2.5) = 3 of the 5 with a confidence
        (40, [False, True, False, True, False, False]),  # 2 of 5: the tie at 4.0 goes to the earlier
        (10, [False, True, False, False, False, False]),  # never none: at least one
    ],
)
def test_keep_confident_keeps_the_top_share_ties_to_the_earlier(percent, kept):
    confidence = [1.0, 4.0, nan, 4.0, 2.0, 3.0]
    assert conf.keep_confident(confidence, percent).tolist() == kept


@pytest.mark.parametrize("percent", [0, -5, 100.5])
def test_keep_confident_refuses_a_share_outside_0_100(percent):
    with pytest.raises(WinnowError, match=r"keep-confident must be a percentage in \(0, 100\]"):
        conf.keep_confident([1.0], percent)


# One prompt a row: (texts, rewards, confidence) by sample index.
TABLE = [
    (["= 3", "= 4", "= 4", "= 5"], [0.1, 0.2, 0.3, 0.9], [9.0, 2.0, 3.0, 1.0]),
    (["= 7", "= 8", "= 8"], [0.5, 0.1, 0.2], [nan, 1.0, 1.5]),  # sample 0 has no confidence: never votes
    (["x", "y"], [0.1, 0.7], [2.0, 1.0]),  # no answer in any: the highest reward
]


@pytest.mark.parametrize(
    ("how", "keep", "expected"),
    [
        ("majority", None, [1, 1, 1]),  # 4 twice; 8 twice
        ("weighted", None, [3, 0, 1]),  # 5 weighs 0.9 > 4's 0.5; 7 weighs 0.5 > 8's 0.3
        ("confidence", None, [0, 2, 1]),  # 3 weighs 9 > 4's 5; 8 weighs 2.5, its most confident is 2
        ("majority", 50, [0, 2, 0]),  # kept: {0, 2}: 3 and 4 tie, 3 came first; {2}; {0}
        ("majority", 75, [1, 1, 1]),  # kept: {0, 1, 2}: 4 twice; {1, 2} (ceil(1.5) = 2); both
        ("confidence", 50, [0, 2, 0]),
        ("best", 50, [2, 2, 0]),  # the highest reward among the kept
    ],
)
def test_votes_weighted_by_confidence_and_kept_by_it(how, keep, expected):
    got = [sel.aggregate(t, r, how, confidence=c, keep_confident=keep) for t, r, c in TABLE]
    assert got == expected


# --- bon over a run dir ---------------------------------------------------------------------

SAMPLES = {  # prompt -> [(text, num_tokens, finish_reason, reward)]; the lowest group confidence beside
    "p0": [
        ("the answer is 3", 4, "stop", 0.9),
        ("the answer is 4", 4, "stop", 0.1),
        ("the answer is 4", 4, "stop", 0.2),
    ],
    "p1": [("= 7", 2, "stop", 0.3), ("= 8", 2, "stop", 0.5), ("= 7", 2, "stop", nan)],
}
LOWEST = {"p0": [1.0, 2.0, 2.5], "p1": [5.0, 1.0, 4.0]}


def confident_run(root):
    """``helpers.make_run`` with each row's confidence, as a generate stage with
    ``--top-logprobs`` writes it (the shard's record remade to match)."""
    from winnow.records import file_record

    run = make_run(root, SAMPLES)
    shard = run / "generate" / "shard-m0-00000.jsonl"
    rows = [json.loads(line) for line in shard.read_text().splitlines()]
    for r in rows:
        r["mean_confidence"] = r["lowest_group_confidence"] = LOWEST[r["prompt_id"]][r["sample_index"]]
    write_jsonl(shard, rows)
    manifest = json.loads((run / "generate" / "manifest.json").read_text())
    manifest["files"][shard.name] = file_record(shard)
    (run / "generate" / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize(
    ("aggregate", "keep", "picked"),
    [
        ("majority", None, [1, 0]),
        ("confidence", None, [2, 0]),  # 4 weighs 4.5 > 3's 1.0 (its most confident: 2); 7 weighs 9 > 8's 1
        ("best", 50, [2, 0]),  # kept {2, 1} and {0, 2}: the highest reward among them (NaN: unscored)
        ("majority", 33, [2, 0]),  # 33% of 3 is one sample: the most confident, {2} and {0}
    ],
)
def test_bon_chooses_by_confidence(tmp_path, aggregate, keep, picked):
    from winnow.pipeline import best_of_n

    run = confident_run(tmp_path / "run")
    count, rows = best_of_n(run, aggregate=aggregate, keep_confident=keep)
    assert count == 2 and [r["sample_index"] for r in rows] == picked
    if aggregate == "confidence" or keep is not None:
        assert [r["lowest_group_confidence"] for r in rows] == [
            LOWEST[p][j] for p, j in zip(LOWEST, picked, strict=True)
        ]


def test_bon_by_confidence_over_rows_without_it_names_the_sample(tmp_path):
    from winnow.pipeline import best_of_n

    run = make_run(tmp_path / "run", SAMPLES)
    with pytest.raises(WinnowError) as e:
        best_of_n(run, aggregate="confidence")
    assert str(e.value) == (
        f"{run / 'generate'}: sample 0 of prompt 'p0' has no confidence: sample with --top-logprobs K "
        "(generate.top_logprobs) to record it"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--aggregate", "confidence"],
            "--aggregate confidence: needs each sample's confidence: sample with --top-logprobs K (e.g. 20)",
        ),
        (
            ["--keep-confident", "10"],
            "--keep-confident: needs each sample's confidence: sample with --top-logprobs K (e.g. 20)",
        ),
        (["--keep-confident", "0", "--top-logprobs", "5"], "--keep-confident: must be a percentage in (0, 100], got 0"),
        (["--confidence-window", "8"], "generate.confidence_window: needs top_logprobs (--top-logprobs K, e.g. 20)"),
    ],
)
def test_bon_refuses_a_confident_choice_without_confidence_before_sampling(tmp_path, capsys, extra, message):
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": "q", "prompt": "hi"}])
    argv = ["bon", *flags(prompts=tmp_path / "prompts.jsonl", run_dir=tmp_path / "run", reward_fn="length"), *extra]
    fails(argv, capsys, message, one_error=True)
    assert not (tmp_path / "run" / "generate").exists()


# --- adaptive sampling: confident-consensus:F -----------------------------------------------


def test_confident_share_weighs_answers_by_confidence():
    assert sel.confident_share(["4", "5", "4", "5"], [3.0, 1.0, 3.0, 1.0]) == 0.75
    assert sel.confident_share(["4", "5", None, "5"], [4.0, 2.0, 2.0, 2.0]) == 0.4  # a tie goes to 4; None weighs
    assert sel.confident_share(["4", "4"], [nan, 2.0]) == 1.0  # no tokens: weighs nothing
    assert sel.confident_share([None, None], [1.0, 1.0]) == 0.0


def drawn(answers: list[list[str | None]], confidence: list[list[float]]):
    from winnow.adaptive import Drawn
    from winnow.records import Prompt

    d = Drawn.empty([Prompt(id=f"q{i}", text="?") for i in range(len(answers))], maximum=len(answers[0]))
    d.answers = answers
    d.confidence = np.array(confidence)
    return d


def test_confident_consensus_closes_on_weighted_share_after_the_warm_up():
    d = drawn(
        [["4", "5", "4", "5"], ["4", "5", None, "5"]],
        [[3.0, 1.0, 3.0, 1.0], [4.0, 2.0, 2.0, 2.0]],
    )
    rule, plain = ("confident-consensus", 0.7), ("consensus", 0.7)
    assert [d.meets(i, rule, 4, None, None, step=2) for i in (0, 1)] == [True, False]  # 0.75 and 0.4
    assert [d.meets(i, plain, 4, None, None, step=2) for i in (0, 1)] == [False, False]  # 0.5 and 0.5: counts only
    assert [d.meets(i, rule, 4, None, None, step=1) for i in (0, 1)] == [False, False]  # the warm-up closes none


@pytest.mark.parametrize("rule", ["confident-consensus:0", "confident-consensus:1.5", "confident-consensus"])
def test_confident_consensus_needs_a_share(rule):
    from winnow.config import AdaptiveConfig

    with pytest.raises(WinnowError) as e:
        AdaptiveConfig(step=2, stop_when=rule).validate()
    assert str(e.value) == (
        f"adaptive.stop_when: confident-consensus needs a share F in (0, 1] (confident-consensus:0.6), got {rule!r}"
    )


ANSWERS = """
def same_answer(text):
    return "42"


def no_answer(text):
    return None
"""


def adaptive_bon(tmp_path, model, extractor: str, *extra: str) -> list[str]:
    write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"count to {i}"} for i in range(3)])
    (tmp_path / "answers.py").write_text(ANSWERS)
    return [
        "bon",
        *flags(prompts=tmp_path / "prompts.jsonl", run_dir=tmp_path / extractor, model=model, n=6, adaptive_step=2),
        *flags(max_new_tokens=5, device="cpu", reward_fn="length", stop_when="confident-consensus:0.9"),
        *flags(answer=f"{tmp_path}/answers.py:{extractor}"),
        *extra,
    ]


def test_adaptive_confident_consensus_stops_the_prompts_it_should(tmp_path, tiny_policy, capsys):
    """One answer everywhere: every prompt closes after the warm-up and one more step (4 of
    6 samples); no answer anywhere: none closes (6 of 6). Without confidence: refused."""
    from winnow.cli import main

    assert main(adaptive_bon(tmp_path, tiny_policy, "same_answer", "--top-logprobs", "5")) == 0
    assert main(adaptive_bon(tmp_path, tiny_policy, "no_answer", "--top-logprobs", "5")) == 0
    for extractor, per_prompt in (("same_answer", [4, 4, 4]), ("no_answer", [6, 6, 6])):
        manifest = json.loads((tmp_path / extractor / "generate" / "manifest.json").read_text())
        assert manifest["adaptive"]["samples_per_prompt"] == per_prompt
    fails(
        adaptive_bon(tmp_path, tiny_policy, "same_answer"),
        capsys,
        "adaptive.stop_when confident-consensus:0.9 weighs each sample's confidence: sample with --top-logprobs K (e.g. 20)",
        one_error=True,
    )
