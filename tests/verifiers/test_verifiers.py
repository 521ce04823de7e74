"""The math, choice and exact verifiers on hand-made answers, the reasoning split, and the
weighted sum, each against outcomes worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from winnow.cli_options import parser
from winnow.errors import WinnowError
from winnow.rewards import BUILTINS, call_reward, load_reward_fn
from winnow.rewards.apply import weighted_sum
from winnow.verifiers import Scores, references
from winnow.verifiers.choice import choice, read_choice, reference_letter
from winnow.verifiers.exact import exact, normalise
from winnow.verifiers.math import math as math_verifier
from winnow.verifiers.reasoning import answer_after_reasoning, resolve_tags

pytest.importorskip("math_verify")


def check(fn, completions, references, **options) -> Scores:
    return fn(["q"] * len(completions), completions, answer=references, **options)


# ---------------------------------------------------------------- math


@pytest.mark.parametrize(
    "completion",
    [
        r"The answer is \frac{1}{2}.",
        "The answer is 0.5",
        "so x = 1/2",
        r"Half of it: $\boxed{\dfrac{1}{2}}$",
        r"We get \boxed{0.50} in the end",
    ],
)
def test_math_equivalent_forms_of_one_half_agree(completion):
    assert check(math_verifier, [completion], ["1/2"]) == [1.0]
    assert check(math_verifier, [completion], [r"\frac{1}{2}"]) == [1.0]
    assert check(math_verifier, [completion], [0.5]) == [1.0]  # a number in the column


def test_math_boxed_wins_over_the_last_expression():
    # \boxed{} is the stated answer even though 7 comes after it
    assert check(math_verifier, [r"so \boxed{12}, and we checked with 5 + 2 = 7"], ["12"]) == [1.0]
    assert check(math_verifier, [r"so \boxed{12}, and we checked with 5 + 2 = 7"], ["7"]) == [0.0]


def test_math_last_expression_and_gsm8k_references():
    gsm8k = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    completions = [
        "In May she sold 24 clips, so 48 + 24 = 72 in all.",
        "She sold 24 clips in May.",
        "Altogether 1,000 clips.",
        "I am not sure.",
    ]
    scores = check(math_verifier, completions, [gsm8k, gsm8k, "1000", "72"])
    assert scores == [1.0, 0.0, 1.0, 0.0]
    assert (scores.no_answer, scores.no_answer_at) == (1, (3,))  # only "I am not sure." had nothing to read


def test_math_row_without_reference_is_unscored_not_wrong():
    scores = check(math_verifier, ["42", "42"], [None, "42"])
    assert scores == [None, 1.0] and scores.no_answer == 0


def test_math_other_reference_column_and_missing_column():
    assert math_verifier(["q"], ["x = 3"], gold=["3"], reference_column="gold") == [1.0]
    with pytest.raises(KeyError, match="column 'answer', which the prompts do not have \\(columns: gold\\)"):
        math_verifier(["q"], ["x = 3"], gold=["3"], prompt_ids=["a"])


# ---------------------------------------------------------------- choice


@pytest.mark.parametrize(
    "completion",
    [
        "(B)",
        "B.",
        "B) Paris is the capital",
        r"so the answer is \boxed{B}",
        r"\boxed{\text{B}}",
        "The answer is B",
        "the answer is (B).",
        "Answer: B",
        "**B**",
        "A is wrong because of the date. C is too late. So I pick (B).",
        "Options (A) and (C) fail; the answer is B",
    ],
)
def test_choice_reads_the_letter_as_answers_write_it(completion):
    assert read_choice(completion) == "B"
    assert check(choice, [completion], ["B"]) == [1.0]


def test_choice_no_letter_is_counted_and_wrong_letter_scores_zero():
    scores = check(choice, ["I think it is Paris", "The answer is C", "A good question"], ["B", "B", "B"])
    assert scores == [0.0, 0.0, 0.0] and scores.no_answer_at == (0, 2)


def test_choice_references_as_letters_or_indices():
    assert [reference_letter(r) for r in ["B", "(b)", " C. ", 0, 3, 11, "BC", True, None]] == [
        "B",
        "B",
        "C",
        "A",
        "D",
        None,
        None,
        None,
        None,
    ]
    assert check(choice, ["(D)", "(D)"], [3, None]) == [1.0, None]
    assert [reference_letter(r) for r in [9, 10, -1, "XB"]] == ["J", None, None, None]
    assert check(choice, ["(A)", "(B)", "(C)"], [None, "B", "C"]) == [None, 1.0, 1.0]  # the rows after go on


def test_choice_names_its_missing_column_and_refuses_unaligned_lists():
    with pytest.raises(KeyError) as missing:
        choice(["q"], ["(B)"], gold=["B"])
    assert missing.value.args[0] == (
        "verifier 'choice' reads the reference from column 'answer', which the prompts do not have "
        "(columns: gold); set --reference-column"
    )
    with pytest.raises(ValueError, match="zip"):
        choice(["q", "q"], ["(B)", "(C)"], answer=["B"])


def test_choice_hedges_and_set_asides_are_looked_for_within_their_windows():
    # a hedge counts when it ends after the statement starts, and from 64 characters before it
    assert read_choice("A or C is correct") is None
    assert read_choice(r"A or B\boxed{C}") == "C"  # the hedge ends where the statement starts
    assert read_choice("A or" + " " * 61 + "C is correct") == "C"  # the hedge starts 65 back
    assert read_choice("A or" + " " * 80 + "C is correct, not B or D") == "C"
    # a letter is set aside by a word at most 40 characters before it
    assert read_choice("Not (A). (B)") == "B"
    assert read_choice("not" + " " * 38 + "(A) (B)") is None


# ---------------------------------------------------------------- exact


def test_exact_normalises_case_whitespace_and_surrounding_punctuation():
    assert normalise("  The \n Eiffel   Tower!! ") == "the eiffel tower"
    assert normalise("«Paris»") == "paris"
    scores = check(
        exact, ["Paris.", " PARIS ", "paris, france", "3.14", "", "Lyon"], ["paris"] * 5 + [["Lyons", "lyon"]]
    )
    assert scores == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert scores.no_answer_at == (4,)
    assert check(exact, ["314"], ["3.14"]) == [0.0]  # punctuation inside is kept
    assert check(exact, ["x"], [None]) == [None]


def test_exact_with_an_empty_reference_is_unscored_not_no_answer():
    scores = check(exact, ["", " ", "", "Paris", ""], ["", "   ", "?!", ["", " "], ["", "Paris"]])
    assert scores == [None, None, None, None, 0.0]
    assert scores.no_answer_at == (4,)  # only the row with a real reference counts the empty completion


def test_exact_null_and_non_string_references_follow_the_rule():
    completions = ["0.00005", "42", "2.5", "true", "x", "[1]", "nan", "x"]
    refs = [0.00005, 42, 2.5, True, {"x": 1}, [[1]], math.nan, None]
    scores = check(exact, completions, refs)
    assert scores == [1.0, 1.0, 1.0, None, None, None, None, None]
    assert scores.no_answer_at == ()
    # digits in full, never an exponent: 1e-07 is written 0.0000001
    assert check(exact, ["0.0000001", "1e-07"], [1e-07, 1e-07]) == [1.0, 0.0]


def test_exact_names_its_missing_column_and_refuses_unaligned_lists():
    with pytest.raises(KeyError) as missing:
        exact(["q"], ["Paris"], gold=["Paris"])
    assert missing.value.args[0] == (
        "verifier 'exact' reads the reference from column 'answer', which the prompts do not have "
        "(columns: gold); set --reference-column"
    )
    with pytest.raises(ValueError, match="zip"):
        exact(["q", "q"], ["Paris", "Lyon"], answer=["Paris"])


# ---------------------------------------------------------------- reasoning tags


def test_answer_after_reasoning_open_and_closed_traces():
    tags = resolve_tags(["think"])
    assert tags == ("<think>", "</think>")
    assert answer_after_reasoning("<think>2 + 2 = 4, or is it 5?</think> The answer is 4.", tags) == " The answer is 4."
    # the template opened the tag in the prompt: only the closing one is in the completion
    assert answer_after_reasoning("2 + 2 = 4</think>4", tags) == "4"
    assert answer_after_reasoning("<think>2 + 2 = 4, so the answer is", tags) is None
    assert answer_after_reasoning("4", tags) is None  # no closing tag: the reasoning never ended
    assert answer_after_reasoning("<think>a</think>b<think>c", tags) is None
    assert answer_after_reasoning("[r]x[/r]y", resolve_tags(["[r]", "[/r]"])) == "y"
    assert resolve_tags(None) is None and resolve_tags([]) is None
    assert resolve_tags(("<r>", "</r>")) == ("<r>", "</r>")
    assert answer_after_reasoning("a</think>b</think>c", tags) == "c"  # after the last closing tag
    assert answer_after_reasoning("</think>", tags) == ""  # closed, with an empty answer


def test_scores_and_the_reference_column():
    plain = Scores([1.0, 0.0])
    assert (plain, plain.no_answer, plain.no_answer_at) == ([1.0, 0.0], 0, None)
    assert Scores([0.0], no_answer=1).no_answer_at is None
    at = Scores([0.0, 0.0, 1.0], no_answer=7, no_answer_at=iter([0, 1]))  # the positions decide the count
    assert (at.no_answer, at.no_answer_at) == (2, (0, 1))
    assert references({"answer": ["4"], "prompt_ids": ["p"]}, "answer", "math") == ["4"]
    with pytest.raises(KeyError) as missing:
        references({"prompt_ids": ["p"], "sample_indices": [0], "b": [1], "a": [2]}, "gold", "math")
    assert missing.value.args[0] == (
        "verifier 'math' reads the reference from column 'gold', which the prompts do not have "
        "(columns: a, b); set --reference-column"
    )
    with pytest.raises(KeyError, match=r"\(columns: none\)"):
        references({}, "gold", "math")
    with pytest.raises(KeyError, match=r"^\"verifier 'math' reads the reference from column 'answer'"):
        math_verifier(["q"], ["1"], gold=["1"])


# ---------------------------------------------------------------- weighted sum and the table


def test_weighted_sum_by_hand():
    values = np.array([[1.0, 0.0, 1.0, np.nan], [0.5, 1.0, np.nan, 0.2]])
    got = weighted_sum(values, [1.0, 0.2])
    assert got[:2].tolist() == [1.0 * 1.0 + 0.2 * 0.5, 1.0 * 0.0 + 0.2 * 1.0]
    assert math.isnan(got[2]) and math.isnan(got[3])  # any unscored reward: the sum is unscored
    assert weighted_sum(np.array([[-2.0, 3.0], [1.0, 1.0]]), [0.5, -1.0]).tolist() == [-2.0, 0.5]


def test_every_builtin_loads_and_help_lists_the_table():
    for name in BUILTINS:
        assert callable(load_reward_fn(name))
    help_text = " ".join(parser().format_help().split())
    score_help = " ".join(parser()._subparsers._group_actions[0].choices["score"].format_help().split())
    assert f"Shipped with winnow: {', '.join(BUILTINS)}." in score_help
    assert list(BUILTINS) == ["vader", "length", "math", "choice", "exact", "ifeval", "code"]
    assert help_text  # the top-level parser builds with the table


def test_call_reward_keeps_no_answer_and_checks_values():
    got = call_reward(lambda p, c, **kw: Scores([1.0, 0.0], no_answer=1), "v", ["a", "b"], ["x", "y"])
    assert got == [1.0, 0.0] and got.no_answer == 1
    assert call_reward(lambda p, c, **kw: [None], "v", ["a"], ["x"]).no_answer == 0
    positions = call_reward(lambda p, c, **kw: Scores([0.0, 1.0], no_answer_at=[0]), "v", ["a", "b"], ["x", "y"])
    assert (positions.no_answer, positions.no_answer_at) == (1, (0,))
    with pytest.raises(WinnowError, match="raised KeyError"):
        call_reward(math_verifier, "math", ["a"], ["x"], prompt_ids=["a"])
