"""Selection for verified data and votes: passing, pass-fail pairs, the pass-rate filter,
majority and weighted votes, on hand-made matrices with hand-computed answers."""

import numpy as np
import pytest

from winnow import select as sel
from winnow.errors import WinnowError

nan = np.nan

# 4 prompts x 5 samples; pass threshold 0.5.
#   row 0: passes at 1 and 3 (0.9, 0.5), fails at 0, 2, 4
#   row 1: never passes
#   row 2: always passes (one unscored cell)
#   row 3: unscored throughout
M = np.array(
    [
        [0.1, 0.9, 0.0, 0.5, 0.2],
        [0.0, 0.4, 0.1, 0.0, 0.3],
        [1.0, 0.7, nan, 0.7, 0.6],
        [nan, nan, nan, nan, nan],
    ]
)


def test_passing_takes_the_best_passing_columns_and_pads():
    assert sel.passing(M, 0.5, 3).tolist() == [[1, 3, -1], [-1, -1, -1], [0, 1, 3], [-1, -1, -1]]


def test_passing_ties_go_to_the_earlier_sample():
    assert sel.passing(np.array([[1.0, 0.0, 1.0, 1.0]]), 1.0, 2).tolist() == [[0, 2]]


def test_apply_passing_defaults_to_one_and_needs_a_threshold():
    assert sel.apply("passing", M, pass_threshold=0.5).tolist() == [[0, 1], [2, 0]]
    with pytest.raises(WinnowError, match="needs pass_threshold"):
        sel.apply("passing", M)


def test_pass_fail_pairs_best_passing_against_worst_failing():
    # row 0: best passing 1 (0.9), worst failing 2 (0.0); rows 1, 2, 3 lack one side.
    assert sel.pass_fail(M, 0.5).tolist() == [[0, 1, 2]]
    # At threshold 0.65 row 2 fails at 4 (0.6), its only failing sample.
    assert sel.pass_fail(M, 0.65).tolist() == [[0, 1, 2], [2, 0, 4]]
    assert sel.make_pairs("pass-fail", M, pass_threshold=0.65).tolist() == [[0, 1, 2], [2, 0, 4]]
    with pytest.raises(WinnowError, match="needs pass_threshold"):
        sel.make_pairs("pass-fail", M)


def test_pass_fail_a_reward_equal_to_the_threshold_passes_and_never_fails():
    assert sel.pass_fail(np.array([[0.5, 0.0]]), 0.5).tolist() == [[0, 0, 1]]
    assert sel.pass_fail(np.array([[0.5, 1.0]]), 0.5).tolist() == []
    assert sel.pass_fail(M, 0.65).dtype == np.int64


def test_pass_fail_ties_go_to_the_earlier_sample():
    assert sel.pass_fail(np.array([[0.0, 1.0, 0.0, 1.0]]), 0.5).tolist() == [[0, 1, 0]]


def test_pass_rates_and_filter():
    rates = sel.pass_rates(M, 0.5)
    assert rates[:3].tolist() == [0.4, 0.0, 1.0]  # 2/5, 0/5, 4/4 (NaN is not a sample)
    assert np.isnan(rates[3])
    assert sel.pass_rates(np.array([[1.0, nan, nan], [0.0, 1.0, nan]]), 0.5).tolist() == [1.0, 0.5]
    assert sel.pass_rate_keep(M, 0.5, low=0.1, high=0.9).tolist() == [True, False, False, False]
    assert sel.pass_rate_keep(M, 0.5, low=0.4).tolist() == [True, False, True, False]
    assert sel.pass_rate_keep(M, 0.5, high=0.4).tolist() == [True, True, False, False]
    assert sel.pass_rate_keep(M, 0.5).tolist() == [True, True, True, False]


def test_vote_classes_skip_unextractable_and_keep_first_appearance_order():
    assert sel.vote_classes(["b", None, "a", "b", "a", "c"]) == [[0, 3], [2, 4], [5]]
    assert sel.vote_classes([None, None]) == []


def test_vote_classes_use_the_equivalence_given():
    def same_number(a, b):
        return float(a) == float(b)

    assert sel.vote_classes(["0.5", "1/2", "2", ".5"], equal=lambda a, b: a == b) == [[0], [1], [2], [3]]
    assert sel.vote_classes(["0.5", "2", ".5", "2.0"], equal=same_number) == [[0, 2], [1, 3]]


def test_majority_counts_votes_and_breaks_ties_by_first_appearance():
    assert sel.majority(["a", "b", "b", "a", "c"]) == 0  # a and b tie at 2: a appeared first
    assert sel.majority(["a", "b", "b", None, None]) == 1  # b: 2 votes; None never votes
    assert sel.majority([None, "c"]) == 1
    assert sel.majority([None, None, None]) == -1
    assert sel.majority([]) == -1


def test_weighted_majority_sums_rewards_and_returns_the_best_member():
    answers = ["a", "b", "b", "a", None]
    # a: 0.3 + 0.3 = 0.6; b: 0.2 + 0.5 = 0.7 -> b, its best member is sample 2.
    assert sel.majority(answers, rewards=[0.3, 0.2, 0.5, 0.3, 5.0]) == 2
    # a: 0.4 + 0.3 = 0.7 ties b's 0.7: a appeared first; its best member 0 (0.4 > 0.3).
    assert sel.majority(answers, rewards=[0.4, 0.2, 0.5, 0.3, 5.0]) == 0
    # An unscored sample does not vote: a is left with 0.3.
    assert sel.majority(answers, rewards=[nan, 0.2, 0.5, 0.3, 5.0]) == 2
    assert sel.majority(answers, rewards=[nan, nan, nan, nan, 1.0]) == -1
    assert sel.majority(["a", "b"], rewards=[None, 0.1]) == 1  # None is unscored, as NaN is


def test_weighted_majority_checks_the_rewards_length():
    with pytest.raises(WinnowError, match="one value per answer"):
        sel.majority(["a", "b"], rewards=[1.0])


def test_consensus_share_counts_unextractable_in_the_denominator():
    assert sel.consensus_share(["x", "x", None, "y"]) == 0.5
    assert sel.consensus_share([None, None]) == 0.0
    assert sel.consensus_share([]) == 0.0
    assert sel.consensus_share(["1", "1.0", "2"], equal=lambda a, b: float(a) == float(b)) == pytest.approx(2 / 3)


def test_aggregate_best_majority_weighted():
    texts = ["x = 3", "so 4", None, "answer: 4.0", "nothing"]
    rewards = [0.9, 0.1, 5.0, 0.3, nan]
    assert sel.aggregate(texts, rewards, "best") == 2  # the reward alone, whatever the text
    assert sel.aggregate(texts, rewards, "majority") == 1  # 4 (twice: "4" and "4.0") beats 3
    assert sel.aggregate(texts, rewards, "weighted") == 0  # 3 weighs 0.9, 4 weighs 0.4
    # no answer anywhere: best
    assert sel.aggregate(["a", "b"], [0.1, 0.2], "majority", extract=lambda t: None) == 1
    assert sel.aggregate(["1", "01"], [0.5, 0.9], "majority", equal=lambda a, b: int(a) == int(b)) == 0
    assert sel.aggregate(texts, rewards) == 2  # best by default
    assert sel.aggregate([], [], "best") == sel.aggregate([], [], "majority") == -1
    with pytest.raises(WinnowError) as unknown:
        sel.aggregate(["a"], [1.0], "mean")
    assert str(unknown.value) == (
        "unknown aggregate 'mean' (choose from best, majority, weighted, prm-weighted, confidence)"
    )
    with pytest.raises(WinnowError) as lengths:
        sel.aggregate(["a", "b"], [1.0])
    assert str(lengths.value) == "texts and rewards differ in length: 2 and 1"


def test_bon_aggregate_on_a_hand_made_run(tmp_path):
    import json

    from helpers import make_run

    from winnow.pipeline import best_of_n

    run_texts = {
        "p0": [("it is 7", 3, "stop", 0.9), ("I say 5", 3, "stop", 0.2), ("5 it is", 3, "stop", 0.3)],
        "p1": [("maybe 2", 2, "stop", 0.1), ("no answer", 2, "stop", 0.8), ("2.0", 1, "stop", nan)],
        "p2": [("a", 1, "stop", 0.1), ("b", 1, "stop", 0.2), ("c", 1, "stop", 0.3)],
    }
    run = make_run(tmp_path / "run", run_texts)
    picked = {}
    for how in ("best", "majority", "weighted"):
        out = tmp_path / f"{how}.jsonl"
        best_of_n(run, out, aggregate=how)
        picked[how] = [json.loads(line)["sample_index"] for line in out.read_text().splitlines()]
    # p0: 5 has two votes (weight 0.5) against 7's one (0.9); p1: 2 twice (the unscored 2.0
    # votes in majority, not in weighted, where 2 weighs 0.1 alone); p2: no numbers -> best.
    assert picked == {"best": [0, 1, 2], "majority": [1, 0, 2], "weighted": [0, 0, 2]}


def test_math_answers_vote_together():
    from winnow.answers import answer_tools, math_equal

    extract, equal = answer_tools("math")
    assert math_equal("0.5", "\\frac{1}{2}") and not math_equal("2", "3")
    texts = ["It is 0.5", "so \\boxed{\\frac{1}{2}}", "maybe 3", "3 again", "1/2"]
    assert [extract(t) for t in texts][:3] == ["0.5", "\\frac{1}{2}", "3"]
    # 1/2 three times under math equality, against 3 twice; with == the first class wins instead
    assert sel.aggregate(texts, [0.0] * 5, "majority", extract=extract, equal=equal) == 0
    assert sel.vote_classes([extract(t) for t in texts], equal) == [[0, 1, 4], [2, 3]]
