"""A judge that picks the server's Best-of-N answer, driven by the official ``openai`` client
over real HTTP against a scripted judge: the exact candidate a judge's replies pick, the
number of judge calls a tournament makes, the order it is shown (fixed by the request's
seed and prompt), ``select_by`` per request, and the 400s and the start-up line for a
judge the server cannot use."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from serving import FakeServer, scripted_judge, serve_in_thread

from winnow import cli
from winnow.config import PickConfig, ScoreConfig, ServeConfig
from winnow.rewards.pick import calls_for, shuffled
from winnow.serve.answer import judge_key
from winnow.serve.main import build_app

FIRST = "[[1]]"
"""The scripted judge's default reply: the first candidate shown wins every window."""


class Script:
    """What the scripted judge replies to each prompt: ``reply(prompt) -> text``, set by a test."""

    def __init__(self):
        self.reply = lambda content: FIRST

    def __call__(self, content: str) -> str:
        return self.reply(content)


@pytest.fixture(scope="module")
def judge():
    script = Script()
    with scripted_judge(script) as server:
        yield server, script


@pytest.fixture
def fresh(judge):
    """The judge with its default reply and no request recorded yet."""
    server, script = judge
    script.reply = lambda content: FIRST
    server.requests.clear()
    return server, script


def tiny_server(tiny_policy, judge_url: str | None, window: int = 4, price: list[float] | None = None):
    """Best-of-N with the 'length' reward, best_of 4; picked by a judge at ``judge_url`` (if any)."""
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=4, max_best_of=8)
    pick = (
        PickConfig(select_by="judge", judge=judge_url, judge_model="judge", window=window, price_per_mtok=price)
        if judge_url
        else None
    )
    return serve_in_thread(build_app(config, ScoreConfig(reward_fn="length"), pick))


def judge_usage(calls: int, cost: float | None = None) -> dict:
    """The body's ``judge_usage`` after ``calls`` replies of the scripted judge (3 prompt and 1
    completion tokens each, as its replies' usage says)."""
    return {
        "calls": calls,
        "prompt_tokens": 3 * calls,
        "completion_tokens": calls,
        "total_tokens": 4 * calls,
        "calls_without_usage": 0,
        "cost": cost,
    }


@pytest.fixture(scope="module")
def judged(tiny_policy, judge):
    with tiny_server(tiny_policy, judge[0].url, window=2) as url:
        yield url


@pytest.fixture(scope="module")
def unjudged(tiny_policy):
    with tiny_server(tiny_policy, None) as url:
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def first_best(rewards: list[float]) -> int:
    """The highest reward's index, the earlier on a tie (computed here, not by the server's code)."""
    return max(range(len(rewards)), key=lambda j: (rewards[j], -j))


def ask(url: str, best_of: int, seed: int = 3, **extra):
    return client(url).completions.create(
        model="tiny",
        prompt="x",
        max_tokens=6,
        seed=seed,
        extra_body={"best_of": best_of, "return_candidates": True} | extra,
    )


@pytest.mark.parametrize("best_of", [8, 5, 2])
def test_the_judge_picks_the_first_shown_and_makes_the_tournaments_calls(judged, fresh, best_of):
    server, _ = fresh
    r = ask(judged, best_of)
    body = r.model_extra
    # a judge naming [[1]] every time: the first of the seed's order wins every round (windows of 2)
    assert body["selected_index"] == shuffled(best_of, 0, judge_key(3, "x"))[0]
    assert body["selected_by"] == "judge"
    assert len(server.requests) == body["judge_calls"] == calls_for(best_of, 2) == {8: 7, 5: 4, 2: 1}[best_of]
    rewards = body["candidate_rewards"]
    assert body["judge_agrees"] == (first_best(rewards) == body["selected_index"])
    # usage counts the served model's tokens alone; the judge's are apart, in judge_usage
    assert body["judge_usage"] == judge_usage(calls_for(best_of, 2))
    assert r.usage.completion_tokens == sum(c["num_tokens"] for c in body["candidates"])


def test_the_answer_is_the_candidate_the_judges_replies_name(judged, fresh):
    server, script = fresh
    # a judge that prefers the shortest text of its window (the earliest shown on a tie):
    # the reward (length) prefers the longest, so they part unless every length is the same
    script.reply = lambda content: f"[[{1 + min(range(len(t := shown(content))), key=lambda k: len(t[k]))}]]"
    r = ask(judged, 4, seed=5)
    body = r.model_extra
    texts = [c["text"] for c in body["candidates"]]
    assert len(texts[body["selected_index"]]) == min(len(t) for t in texts)
    assert r.choices[0].text == texts[body["selected_index"]]
    assert r.choices[0].model_extra["reward"] == float(len(r.choices[0].text))
    assert body["judge_agrees"] == (first_best(body["candidate_rewards"]) == body["selected_index"])
    assert len(server.requests) == 3  # 4 candidates in windows of 2: two calls, then the final


SHOWN = re.compile(r"Candidate (\d+):\n(.*?)(?=\n\nCandidate \d+:|\n\nWhich candidate)", re.S)


def shown(content: str) -> list[str]:
    """The candidates' texts in the order a judge prompt shows them."""
    return [text for _, text in SHOWN.findall(content)]


def test_one_request_asked_twice_is_judged_in_one_order(judged, fresh):
    server, _ = fresh
    first, again = ask(judged, 4, seed=7).model_extra, ask(judged, 4, seed=7).model_extra
    prompts = [r["messages"][-1]["content"] for r in server.requests]
    # a round's windows are asked at once, so they may reach the judge in either order;
    # each window's text (the order it shows its candidates) and the final must be the same
    assert first["selected_index"] == again["selected_index"]
    assert sorted(prompts[:2]) == sorted(prompts[3:5]) and prompts[2] == prompts[5]
    assert [c["text"] for c in first["candidates"]] == [c["text"] for c in again["candidates"]]


def test_select_by_reward_on_a_judged_server_asks_no_judge(judged, fresh):
    server, _ = fresh
    body = ask(judged, 4, select_by="reward").model_extra
    assert body["selected_by"] == "reward" and body["judge_agrees"] is None and body["judge_calls"] is None
    assert body["selected_index"] == first_best(body["candidate_rewards"])
    assert server.requests == [] and "judge_usage" not in body


def test_a_streamed_answer_is_the_judges_pick_too(judged, fresh):
    server, _ = fresh
    events = client(judged).completions.create(
        model="tiny",
        prompt="x",
        max_tokens=6,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"best_of": 4, "return_candidates": True},
    )
    chunks = list(events)
    last = next(c.model_extra for c in reversed(chunks) if c.model_extra.get("candidates"))
    assert last["selected_by"] == "judge" and last["judge_calls"] == 3 == len(server.requests)
    assert last["selected_index"] == shuffled(4, 0, judge_key(3, "x"))[0]
    assert last["judge_usage"] == judge_usage(3)
    assert chunks[-1].usage.completion_tokens == sum(c["num_tokens"] for c in last["candidates"])


def test_the_judges_tokens_and_cost_come_without_return_candidates(tiny_policy, fresh):
    server, _ = fresh
    with tiny_server(tiny_policy, server.url, window=2, price=[1000.0, 2000.0]) as url:
        r = client(url).completions.create(model="tiny", prompt="x", max_tokens=6, seed=3, extra_body={"best_of": 4})
    body = r.model_extra
    assert len(server.requests) == 3 and "candidates" not in body and "judge_calls" not in body
    # 9 prompt tokens at 1000 and 3 completion tokens at 2000 a million
    assert body["judge_usage"] == judge_usage(3, cost=0.015)


def scraped(url: str) -> dict[str, float]:
    """The server's ``/metrics`` samples without labels, by name (Prometheus' text format)."""
    text = httpx.get(f"{url}/metrics", timeout=60).text
    return {name: float(value) for name, value in re.findall(r"^(\w+) (\S+)$", text, re.M)}


def test_metrics_count_the_judges_calls_and_tokens_apart(judged, fresh):
    server, _ = fresh
    before = scraped(judged)
    ask(judged, 4)  # 3 calls: two windows of 2, then the final
    streamed = client(judged).completions.create(
        model="tiny", prompt="x", max_tokens=6, seed=3, stream=True, extra_body={"best_of": 2}
    )
    list(streamed)  # 1 call
    ask(judged, 4, select_by="reward")  # no call
    after = scraped(judged)
    assert len(server.requests) == 4
    counted = {name: after[name] - before.get(name, 0.0) for name in after}
    # each scripted reply's usage: 3 prompt tokens and 1 completion token
    assert counted["winnow_judge_calls_total"] == 4.0
    assert counted["winnow_judge_prompt_tokens_total"] == 12.0
    assert counted["winnow_judge_completion_tokens_total"] == 4.0
    # the served model's tokens stay its own: 10 candidates, no judge token among them
    assert counted["winnow_candidates_total"] == 10.0


def refused(url: str, **fields) -> dict:
    r = httpx.post(
        f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 4, **fields}, timeout=60
    )
    assert r.status_code == 400, r.text
    return r.json()["error"]


def test_select_by_judge_without_a_judge_is_a_400_naming_it(unjudged):
    assert refused(unjudged, select_by="judge") == {
        "message": "select_by judge needs a server started with a judge that picks "
        "(--select-by judge --pick-judge URL --pick-model NAME)",
        "type": "invalid_request_error",
        "param": "select_by",
        "code": None,
    }
    assert refused(unjudged, select_by="best")["message"] == "select_by must be one of reward, judge, got 'best'"
    body = ask(unjudged, 4).model_extra  # the default: the reward picks
    assert body["selected_by"] == "reward" and body["selected_index"] == first_best(body["candidate_rewards"])


def test_a_vote_beside_the_judge_is_a_400_naming_aggregate(judged, fresh):
    error = refused(judged, aggregate="majority")
    assert (error["param"], error["message"]) == (
        "aggregate",
        "aggregate 'majority' votes, and a judge picks in place of a vote: ask select_by reward to vote",
    )
    assert fresh[0].requests == []  # refused before any sample or judge call
    assert ask(judged, 2, aggregate="majority", select_by="reward").model_extra["selected_by"] == "reward"


def test_serve_with_a_judge_but_no_reward_is_one_line(monkeypatch, capsys):
    def started(*args, **kw):
        raise AssertionError("the server was built")

    monkeypatch.setattr("winnow.serve.main.build_app", started)
    monkeypatch.setattr("winnow.serve.main.listen", started)
    flags = ["--select-by", "judge", "--pick-judge", "http://127.0.0.1:9/v1", "--pick-model", "j"]
    assert cli.main(["serve", "--model", "m", *flags]) == 2
    assert capsys.readouterr().err == (
        "winnow: error: pick.select_by: a judge picks among Best-of-N's candidates; serve with a reward "
        "(--reward-fn, --reward-model, ...) to sample them\n"
    )
    assert cli.main(["serve", "--model", "m", "--reward-fn", "length", "--pick-window", "3"]) == 2
    assert capsys.readouterr().err == (
        "winnow: error: pick.window: applies to select_by judge only (--select-by judge)\n"
    )


def test_a_judge_that_fails_is_a_502_naming_it(tiny_policy):
    with FakeServer(lambda count, body: 400) as broken, tiny_server(tiny_policy, broken.url) as url:
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 4}, timeout=60)
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "judge_failed")
    assert error["message"].startswith(
        f"the judge that picks failed: judge on prompt '{judge_key(None, 'x')}': server "
    )
    assert len(broken.requests) == 1  # a 400 is not retried
