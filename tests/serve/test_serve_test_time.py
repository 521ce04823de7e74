"""The server as a test-time compute endpoint, driven by the official ``openai`` client over
real HTTP: ``return_candidates`` (every candidate, its reward, ``selected_index``), usage
that counts every candidate, a token ``budget`` that caps the candidates, and the 400s for
choices the server cannot serve."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from serving import serve_in_thread

from winnow.answers import extract_answer
from winnow.confidence import TokenLogprobs
from winnow.config import ScoreConfig, ServeConfig
from winnow.records import Completion
from winnow.serve.answer import choose, listed
from winnow.serve.main import build_app
from winnow.serve.work import Outcome


@pytest.fixture(scope="module")
def bon(tiny_policy):
    """Best-of-N with the 'length' reward (characters of the completion), best_of 4 by default."""
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=4, max_best_of=6)
    with serve_in_thread(build_app(config, ScoreConfig(reward_fn="length"))) as url:
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def first_best(rewards: list[float]) -> int:
    """The highest reward's index, the earlier on a tie (computed here, not by the server's code)."""
    best = 0
    for j, r in enumerate(rewards):
        if r > rewards[best]:
            best = j
    return best


def test_return_candidates_lists_every_candidate_and_the_selected_one(bon):
    r = client(bon).completions.create(
        model="tiny", prompt="x", max_tokens=6, seed=2, extra_body={"best_of": 5, "return_candidates": True}
    )
    body = r.model_extra
    candidates = body["candidates"]
    assert [c["index"] for c in candidates] == [0, 1, 2, 3, 4]
    # the length reward is each text's characters: the server's rewards are checked against the texts
    assert [c["reward"] for c in candidates] == [float(len(c["text"])) for c in candidates]
    assert body["candidate_rewards"] == [c["reward"] for c in candidates]
    assert body["selected_index"] == first_best([c["reward"] for c in candidates])
    chosen = candidates[body["selected_index"]]
    assert r.choices[0].text == chosen["text"] and r.choices[0].model_extra["reward"] == chosen["reward"]
    assert r.usage.completion_tokens == sum(c["num_tokens"] for c in candidates)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert all(1 <= c["num_tokens"] <= 6 and c["finish_reason"] in ("stop", "length") for c in candidates)
    assert all(c["step_scores"] is None for c in candidates)  # no process reward model here


def test_without_return_candidates_the_body_has_no_candidates(bon):
    r = client(bon).completions.create(model="tiny", prompt="x", max_tokens=4, seed=2)
    assert "candidates" not in r.model_extra and "selected_index" not in r.model_extra
    assert len(r.model_extra["candidate_rewards"]) == 4


def test_a_budget_buys_whole_candidates_at_their_worst_case(bon):
    api = client(bon)
    # best_of 6 asked, but 23 tokens buy 23 // 5 = 4 candidates of max_tokens 5
    r = api.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "count"}],
        max_tokens=5,
        seed=4,
        extra_body={"best_of": 6, "budget": 23, "return_candidates": True},
    )
    assert len(r.model_extra["candidates"]) == 4 and len(r.model_extra["candidate_rewards"]) == 4
    assert r.usage.completion_tokens == sum(c["num_tokens"] for c in r.model_extra["candidates"]) <= 23
    # a budget above best_of * max_tokens leaves best_of as it is
    r = api.completions.create(model="tiny", prompt="x", max_tokens=3, n=2, extra_body={"best_of": 3, "budget": 100})
    assert len(r.model_extra["candidate_rewards"]) == 3 and len(r.choices) == 2


@pytest.mark.parametrize(
    ("extra", "kwargs", "param", "message"),
    [
        ({"budget": 7}, dict(n=2), "budget", "budget must be >= n * max_tokens (2 * 4 = 8), got 7"),
        ({"budget": 0}, {}, "budget", "budget: Input should be greater than or equal to 1"),
        (
            {"aggregate": "prm-weighted"},
            {},
            "aggregate",
            "aggregate 'prm-weighted' weighs votes by a process reward model's scores apart from the other rewards, "
            "which winnow bon does; a server sums its rewards: serve with --prm-model as the only reward and ask "
            "for weighted",
        ),
        (
            {"aggregate": "median"},
            {},
            "aggregate",
            "aggregate must be one of best, majority, weighted, prm-weighted, confidence, got 'median'",
        ),
        (
            {"return_candidates": "yes"},
            {},
            "return_candidates",
            'return_candidates: Input should be a valid boolean, got "yes"',
        ),
    ],
)
def test_unservable_choices_are_a_400_naming_the_field(bon, extra, kwargs, param, message):
    with pytest.raises(openai.BadRequestError) as e:
        client(bon).completions.create(model="tiny", prompt="x", max_tokens=4, extra_body=extra, **kwargs)
    assert (e.value.status_code, e.value.param, e.value.body["message"]) == (400, param, message)


def test_confidence_votes_weigh_each_candidates_lowest_group_confidence(bon):
    r = client(bon).completions.create(
        model="tiny",
        prompt="x",
        max_tokens=6,
        seed=5,
        extra_body={"best_of": 5, "aggregate": "confidence", "return_candidates": True},
    )
    candidates = r.model_extra["candidates"]
    confidence = [c["confidence"] for c in candidates]
    assert all(isinstance(x, float) and x > 0 for x in confidence)
    # the vote by hand: each answer weighs the sum of its candidates' confidence, the first
    # answer wins a tie, and its most confident candidate is chosen; no answer: the best reward
    answers = [extract_answer(c["text"]) for c in candidates]
    weight: dict[str, float] = {}
    for a, x in zip(answers, confidence, strict=True):
        if a is not None:
            weight[a] = weight.get(a, 0.0) + x
    if weight:
        winner = max(weight, key=lambda a: (weight[a], -answers.index(a)))
        members = [j for j, a in enumerate(answers) if a == winner]
        expected = max(members, key=lambda j: (confidence[j], -j))
    else:
        expected = first_best([c["reward"] for c in candidates])
    assert r.model_extra["selected_index"] == expected
    assert r.choices[0].text == candidates[expected]["text"]


def test_a_streamed_answer_lists_the_candidates_on_its_last_chunk(bon):
    events = []
    payload = {"model": "tiny", "prompt": "x", "max_tokens": 4, "seed": 1, "stream": True, "return_candidates": True}
    with httpx.stream("POST", f"{bon}/v1/completions", json=payload, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line.removeprefix("data: ")))
    last = events[-1]
    rewards = [c["reward"] for c in last["candidates"]]
    assert len(last["candidates"]) == 4 and last["candidate_rewards"] == rewards
    assert last["selected_index"] == first_best(rewards)
    text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
    assert text == last["candidates"][last["selected_index"]]["text"]


def outcome(texts: list[str], rewards: list[float], confidence: list[float] | None = None) -> Outcome:
    """One request's candidates; with ``confidence``, each sampled with log-probabilities whose
    token confidences are all that value (so it is the lowest group confidence too)."""
    rows = [
        Completion(
            prompt_id="p",
            sample_index=j,
            model="m",
            text=t,
            num_tokens=2 + j,
            finish_reason="stop",
            logprobs=None if confidence is None else TokenLogprobs((-0.5,) * (2 + j), (confidence[j],) * (2 + j)),
        )
        for j, t in enumerate(texts)
    ]
    return Outcome(prompt_tokens=1, candidates=rows, rewards=rewards)


def test_selected_index_is_the_vote_winner_not_the_best_reward():
    # best: candidate 0 (0.9); majority: answer 4 (two votes), its first candidate, 1;
    # weighted: 3 weighs 0.9 against 0.1 + 0.2, so 0; the same text twice is told apart by place
    got = outcome(["so = 3", "so = 4", "so = 4"], [0.9, 0.1, 0.2])
    assert listed(got, choose("best", got, 1))["selected_index"] == 0
    assert listed(got, choose("majority", got, 2))["selected_index"] == 1
    assert listed(got, choose("weighted", got, 1))["selected_index"] == 0
    got = outcome(["same", "same"], [0.1, 0.5])
    listing = listed(got, choose("best", got, 1))
    assert listing["selected_index"] == 1
    assert [(c.index, c.reward, c.num_tokens) for c in listing["candidates"]] == [(0, 0.1, 2), (1, 0.5, 3)]


def test_an_unscored_candidate_is_listed_with_a_null_reward():
    got = outcome(["a", "bb"], [float("nan"), 0.5])
    listing = listed(got, choose(None, got, 1))
    assert [c.reward for c in listing["candidates"]] == [None, 0.5] and listing["selected_index"] == 1


def test_a_process_reward_models_step_scores_come_with_each_candidate(tiny_policy, tiny_prm):
    from winnow.rewards.prm import ProcessReward

    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=3)
    score = ScoreConfig(prm_model=str(tiny_prm), prm_aggregate="min", device="cpu")
    with serve_in_thread(build_app(config, score)) as url:
        r = client(url).completions.create(
            model="tiny", prompt="add two numbers", max_tokens=8, seed=1, extra_body={"return_candidates": True}
        )
    candidates = r.model_extra["candidates"]
    # the same model run apart, on the same rows: one score per step, the reward their minimum
    apart = ProcessReward(str(tiny_prm), device="cpu").step_rewards(
        ["add two numbers"] * 3, [c["text"] for c in candidates]
    )
    for c, steps in zip(candidates, apart, strict=True):
        assert c["step_scores"] == pytest.approx(steps, abs=1e-6) and len(steps) >= 1
        assert c["reward"] == pytest.approx(min(steps), abs=1e-6)
    assert r.model_extra["selected_index"] == first_best([c["reward"] for c in candidates])


def test_confidence_outvotes_the_count_and_is_listed():
    # majority: 4 (two votes), candidate 1; confidence: 3 weighs 5.0 against 2.0 + 2.5, candidate 0
    got = outcome(["so = 3", "so = 4", "so = 4"], [0.1, 0.9, 0.2], confidence=[5.0, 2.0, 2.5])
    assert listed(got, choose("majority", got, 1))["selected_index"] == 1
    listing = listed(got, choose("confidence", got, 2))
    assert listing["selected_index"] == 0 and [c.confidence for c in listing["candidates"]] == [5.0, 2.0, 2.5]
    # the winning answer's most confident candidate: 4 weighs 1.0 + 3.0 against 3's 2.0
    got = outcome(["so = 4", "so = 3", "so = 4"], [0.9, 0.1, 0.2], confidence=[1.0, 2.0, 3.0])
    assert listed(got, choose("confidence", got, 1))["selected_index"] == 2
    plain = outcome(["a"], [0.1])  # sampled without log-probabilities
    assert [c.confidence for c in listed(plain, choose(None, plain, 1))["candidates"]] == [None]
