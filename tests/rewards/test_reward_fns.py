"""winnow.rewards: resolving reward functions and checking what they return."""

import math
import sys
import textwrap

import numpy as np
import pytest

from winnow.errors import WinnowError
from winnow.rewards import call_reward, load_reward_fn

USER_MODULE = textwrap.dedent("""
    NOT_A_FUNCTION = 3

    def words(prompts, completions, **kw):
        return [float(len(c.split())) for c in completions]
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A reward module importable as 'winnow_test_user_rewards' (removed from sys.modules after)."""
    name = "winnow_test_user_rewards"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


# ---------------------------------------------------------------- built-ins


def test_vader_scores_sentiment_and_leaves_empty_unscored():
    fn = load_reward_fn("vader")
    scores = fn(
        ["p"] * 4,
        [
            "What a wonderful, happy day! I love it, it is excellent.",
            "This is terrible and awful. I hate it, it is the worst.",
            "",
            "   ",
        ],
    )
    assert scores[0] > 0.5
    assert scores[1] < -0.5
    assert scores[2] is None and scores[3] is None


def test_length_counts_characters():
    fn = load_reward_fn("length")
    assert fn(["p", "p", "p"], ["abc", "", "héllo"]) == [3.0, 0.0, 5.0]


def test_unknown_builtin_name():
    with pytest.raises(WinnowError, match=r"unknown reward function 'vadr'.*vader, length"):
        load_reward_fn("vadr")


# ---------------------------------------------------------------- module:function


def test_module_function(user_module):
    fn = load_reward_fn(f"{user_module}:words")
    assert fn(["p", "p"], ["one two three", "four"]) == [3.0, 1.0]


def test_module_missing_function(user_module):
    with pytest.raises(WinnowError, match=r"has no callable 'nothere'"):
        load_reward_fn(f"{user_module}:nothere")


def test_module_attribute_that_is_not_callable(user_module):
    with pytest.raises(WinnowError, match=r"has no callable 'NOT_A_FUNCTION'"):
        load_reward_fn(f"{user_module}:NOT_A_FUNCTION")


def test_module_that_cannot_be_imported():
    with pytest.raises(WinnowError, match=r"cannot import module 'winnow_no_such_module_here'"):
        load_reward_fn("winnow_no_such_module_here:score")


def test_module_that_fails_while_importing_is_a_winnow_error(tmp_path, monkeypatch):
    name = "winnow_test_failing_rewards"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('needs an API key')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(WinnowError, match=name):
        load_reward_fn(f"{name}:score")


# ---------------------------------------------------------------- path/to/file.py:function


def test_file_function(tmp_path):
    path = tmp_path / "sub" / "my_reward.py"
    path.parent.mkdir()
    path.write_text(USER_MODULE)
    fn = load_reward_fn(f"{path}:words")
    assert fn(["p"], ["a b"]) == [2.0]


def test_file_does_not_exist(tmp_path):
    path = tmp_path / "nope.py"
    with pytest.raises(WinnowError, match=r"reward function file does not exist: .*nope\.py"):
        load_reward_fn(f"{path}:words")


def test_file_missing_function(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text(USER_MODULE)
    with pytest.raises(WinnowError, match=r"has no callable 'nothere'"):
        load_reward_fn(f"{path}:nothere")


def test_file_that_fails_to_import_names_the_file(tmp_path):
    path = tmp_path / "broken_reward.py"
    path.write_text("def words(prompts, completions:\n")
    with pytest.raises(WinnowError, match=r"broken_reward\.py: importing the reward module failed: SyntaxError"):
        load_reward_fn(f"{path}:words")


# ---------------------------------------------------------------- call_reward

KW = {"prompt_ids": ["p0", "p1", "p2"], "sample_indices": [0, 5, 2]}


def _returns(values):
    return lambda prompts, completions, **kw: values


def test_none_and_nan_become_nan():
    out = call_reward(_returns([None, float("nan"), 0.5]), "f", ["a"] * 3, ["x"] * 3, **KW)
    assert math.isnan(out[0]) and math.isnan(out[1])
    assert out[2] == 0.5


def test_numpy_numbers_are_accepted_as_plain_floats():
    values = [np.float32(0.25), np.float64(-0.5), np.int64(2)]
    out = call_reward(_returns(values), "f", ["a"] * 3, ["x"] * 3, **KW)
    assert out == [0.25, -0.5, 2.0]
    assert [type(v) for v in out] == [float, float, float]


def test_a_numpy_array_return_is_accepted():
    out = call_reward(_returns(np.array([0.1, np.nan, 0.3])), "f", ["a"] * 3, ["x"] * 3, **KW)
    assert out[0] == pytest.approx(0.1) and math.isnan(out[1]) and out[2] == pytest.approx(0.3)


def test_kwargs_and_arguments_are_passed_through():
    seen = {}

    def spy(prompts, completions, **kw):
        seen.update(prompts=prompts, completions=completions, kw=kw)
        return [0.0] * len(completions)

    prompts = ["hello", [{"role": "user", "content": "hi"}], "bye"]
    call_reward(spy, "spy", prompts, ["a", "b", "c"], **KW)
    assert seen == {"prompts": prompts, "completions": ["a", "b", "c"], "kw": KW}


def test_function_that_raises_is_named():
    def exploding_reward(prompts, completions, **kw):
        raise ValueError("no GPU today")

    with pytest.raises(WinnowError, match=r"reward function 'my_rm' raised ValueError: no GPU today.*'p0'") as info:
        call_reward(exploding_reward, "my_rm", ["a"] * 3, ["x"] * 3, **KW)
    assert isinstance(info.value.__cause__, ValueError)


def test_wrong_length_names_both_counts():
    with pytest.raises(WinnowError, match=r"reward function 'f' returned 2 values for 3 completions"):
        call_reward(_returns([0.1, 0.2]), "f", ["a"] * 3, ["x"] * 3, **KW)


def test_non_list_return():
    with pytest.raises(WinnowError, match=r"returned float, expected a list"):
        call_reward(_returns(0.5), "f", ["a"], ["x"], prompt_ids=["p0"], sample_indices=[0])


@pytest.mark.parametrize("bad", ["0.9", True, [0.5]])
def test_non_number_names_position_prompt_and_sample(bad):
    with pytest.raises(
        WinnowError, match=r"reward function 'f' returned .* at position 1 \(prompt_id 'p1', sample_index 5\)"
    ):
        call_reward(_returns([0.1, bad, 0.3]), "f", ["a"] * 3, ["x"] * 3, **KW)


@pytest.mark.parametrize("bad", [float("inf"), -math.inf, np.float32("inf")])
def test_infinity_is_an_error(bad):
    with pytest.raises(WinnowError, match=r"at position 2: rewards must be finite"):
        call_reward(_returns([0.1, 0.2, bad]), "f", ["a"] * 3, ["x"] * 3, **KW)


def test_non_number_without_key_kwargs_is_still_a_winnow_error():
    with pytest.raises(WinnowError, match=r"at position 0"):
        call_reward(_returns(["oops"]), "f", ["a"], ["x"])


def test_builtins_through_call_reward():
    out = call_reward(
        load_reward_fn("vader"),
        "vader",
        ["a", "b"],
        ["I love this, wonderful!", ""],
        prompt_ids=["a", "b"],
        sample_indices=[0, 0],
    )
    assert out[0] > 0.5 and math.isnan(out[1])


@pytest.mark.parametrize("timeout", [None, 10.0])
def test_overlapping_reward_calls_give_the_real_os_exit_back(timeout):
    """Two reward calls in two threads (a server scores a batch and a stream at once), the
    first ending while the second still runs: os._exit is the stand-in that raises in both
    while they run, and the real one once both have ended (a call that saved the other's
    stand-in would put that back for good, and the first to end would expose the second)."""
    import os
    import threading

    real = os._exit
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first(prompts, completions, **kw):
        a_in.set()
        b_in.wait(10)
        seen.append(os._exit is real)
        return [1.0]

    def second(prompts, completions, **kw):
        b_in.set()
        a_done.wait(10)
        seen.append(os._exit is real)  # not called: on a wrong swap the real one would end the tests
        return [2.0]

    def run_first():
        call_reward(first, "first", ["p"], ["c"], timeout=timeout)
        a_done.set()

    threads = [threading.Thread(target=run_first)]
    threads[0].start()
    assert a_in.wait(10)
    threads.append(threading.Thread(target=lambda: call_reward(second, "second", ["p"], ["c"], timeout=timeout)))
    threads[1].start()
    for thread in threads:
        thread.join(10)
    assert seen == [False, False]
    assert os._exit is real


@pytest.mark.parametrize("timeout", [None, 10.0])
def test_a_reward_that_raises_timeout_error_is_its_own_error_not_an_overrun(timeout):
    """A judge's network timeout inside the reward is the reward's error; only the limit's
    own overrun is reported as taking longer than --reward-timeout."""
    from winnow.rewards import RewardTimeout

    def f(prompts, completions, **kw):
        raise TimeoutError("the upstream did not answer")

    with pytest.raises(WinnowError, match="raised TimeoutError: the upstream did not answer") as e:
        call_reward(f, "f", ["p"], ["c"], timeout=timeout)
    assert not isinstance(e.value, RewardTimeout)


def test_a_weighted_sum_past_the_reward_bound_is_refused_naming_the_row():
    """Each reward is bounded by MAX_REWARD; weights can still push the sum past it (to inf)."""
    from winnow.config import ScoreConfig
    from winnow.rewards.apply import RewardApplier

    applier = RewardApplier(ScoreConfig(reward_fn=["length", "length"], reward_weights=[1e300, 1.0]))
    keywords = {"prompt_ids": ["a", "b"], "sample_indices": [0, 0]}
    assert applier.apply(["p", "p"], ["", ""], keywords).total.tolist() == [0.0, 0.0]
    with pytest.raises(WinnowError) as e:
        applier.apply(["p", "p"], ["", "xy"], keywords)
    assert str(e.value) == (
        "the weighted sum of length + length is 2e+300 at row 1 (prompt_id 'b'): rewards must be finite and "
        "at most 1e+100 in magnitude; lower score.reward_weights"
    )
