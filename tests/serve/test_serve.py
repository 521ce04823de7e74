"""``winnow serve`` over a tiny model, driven by the official ``openai`` client over real HTTP:
n, Best-of-N with its reward fields, every cap and every field bounded at the edge,
malformed JSON, the API key, unknown routes, a full queue, a failing request isolated from
its batch, and 50 concurrent clients batched exactly as the batcher promises."""

from __future__ import annotations

import asyncio
import json
import os
import re

import httpx
import openai
import pytest
from helpers import wait_for
from serving import gated, serve_in_thread

from winnow.config import ScoreConfig, ServeConfig
from winnow.generate import OPTIONAL_SAMPLING, Sampling
from winnow.serve.main import build_app

KEY = "sk-serve-test-41d2"
CAPS = dict(max_n=4, max_tokens=16, default_max_tokens=8, max_prompt_tokens=60, max_body_bytes=4000)


@pytest.fixture(scope="module")
def plain(tiny_policy):
    """(root URL, app): plain sampling, a bearer key, small caps."""
    os.environ["WINNOW_SERVE_TEST_KEY"] = KEY
    config = ServeConfig(
        model=str(tiny_policy), served_model_name="tiny", device="cpu", api_key_env="WINNOW_SERVE_TEST_KEY", **CAPS
    )
    app = build_app(config)
    del os.environ["WINNOW_SERVE_TEST_KEY"]  # read once at start-up
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def bon(tiny_policy):
    """Best-of-N with the 'length' reward (characters of the completion), best_of 4 by default."""
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=4, max_best_of=6)
    with serve_in_thread(build_app(config, ScoreConfig(reward_fn="length"))) as url:
        yield url


def client(url: str, key: str | None = KEY, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key or "none", max_retries=0, **kw)


CHAT = [{"role": "user", "content": "describe a rainy monday commute"}]


def test_chat_and_text_completions_with_n(plain):
    url, _ = plain
    api = client(url)
    assert [m.id for m in api.models.list().data] == ["tiny"]
    chat = api.chat.completions.create(model="tiny", messages=CHAT, n=3, max_tokens=6, temperature=1.0, seed=3)
    assert [c.index for c in chat.choices] == [0, 1, 2] and chat.object == "chat.completion"
    counts = [c.model_extra["num_tokens"] for c in chat.choices]
    for c, count in zip(chat.choices, counts, strict=True):
        assert isinstance(c.message.content, str) and c.message.role == "assistant"
        assert 1 <= count <= 6 and (c.finish_reason == "stop" or count == 6)
    assert chat.usage.completion_tokens == sum(counts) and chat.usage.prompt_tokens > 5
    text = api.completions.create(model="tiny", prompt="the quick brown fox", n=2, max_tokens=5)
    assert [c.index for c in text.choices] == [0, 1] and all(isinstance(c.text, str) for c in text.choices)
    assert "reward" not in chat.choices[0].model_extra  # no Best-of-N fields without a reward


def test_a_seeded_request_served_alone_is_reproducible(plain):
    api = client(plain[0])
    first, again = (
        api.chat.completions.create(model="tiny", messages=CHAT, n=2, max_tokens=8, seed=11) for _ in range(2)
    )
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]


def test_api_key(plain):
    url, _ = plain
    with pytest.raises(openai.AuthenticationError) as e:
        client(url, key="sk-wrong").chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    bare = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200  # load balancers probe without a key


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        (dict(n=5), "n"),
        (dict(max_tokens=17), "max_tokens"),
        (dict(extra_body={"best_of": 3}), "best_of"),  # no reward: no Best-of-N
        (dict(messages=[{"role": "user", "content": "the quick brown fox " * 20}]), "messages"),  # > 60 tokens
        (dict(extra_body={"logprobs_please": True}), "logprobs_please"),
        (dict(temperature=-1), "temperature"),
        (dict(seed=2**70), "seed"),  # past 64 bits: torch cannot seed with it
        (dict(seed=-1), "seed"),
        (dict(temperature=1e-300), "temperature"),  # logits / temperature overflow
        (dict(temperature=1e300), "temperature"),
        (dict(extra_body={"repetition_penalty": 1e-300}), "repetition_penalty"),
        (dict(extra_body={"repetition_penalty": 1e300}), "repetition_penalty"),
        (dict(extra_body={"top_k": 2**70}), "top_k"),
        (dict(extra_body={"min_p": 1.0}), "min_p"),
        (dict(top_p=0), "top_p"),
        (dict(stop=[""]), "stop"),
        (dict(stop=["x"] * 17), "stop"),
        (dict(stop="y" * 257), "stop"),
        (dict(user="u" * 257), "user"),
        (dict(stream_options={"include_usage": True}), "stream_options"),  # without stream
        (dict(extra_body={"aggregate": "best"}), "aggregate"),  # no reward: nothing to aggregate
        (dict(extra_body={"budget": 100}), "budget"),  # no reward: no candidates to budget
        (dict(extra_body={"return_candidates": True}), "return_candidates"),
    ],
)
def test_each_cap_is_a_400_with_an_openai_error_body(plain, kwargs, param):
    args = dict(model="tiny", messages=CHAT, max_tokens=4) | kwargs
    with pytest.raises(openai.BadRequestError) as e:
        client(plain[0]).chat.completions.create(**args)
    assert e.value.status_code == 400 and e.value.param == param and e.value.type == "invalid_request_error"


def test_body_size_cap_and_unknown_model(plain):
    api = client(plain[0])
    with pytest.raises(openai.BadRequestError) as e:
        api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 5000}], max_tokens=2)
    assert e.value.code == "request_too_large"
    with pytest.raises(openai.NotFoundError) as e:
        api.chat.completions.create(model="gpt-9", messages=CHAT, max_tokens=2)
    assert e.value.code == "model_not_found"


def test_non_finite_numbers_are_refused_by_name(plain):
    """JSON has no NaN or Infinity, but a lenient parser reads them: refused, naming the field."""
    url, _ = plain
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    for field in ("temperature", "top_p", "repetition_penalty", "min_p"):
        for value in ("NaN", "Infinity"):
            body = f'{{"model": "tiny", "prompt": "x", "max_tokens": 2, "{field}": {value}}}'
            r = httpx.post(f"{url}/v1/completions", content=body.encode(), headers=auth)
            assert r.status_code == 400 and r.json()["error"]["param"] == field, (field, value, r.text)


def test_a_bad_request_does_not_hurt_its_batch_mates(plain):
    """Six requests at once, one of them with a seed past 64 bits: five answers and one 400."""
    url, _ = plain

    async def burst():
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as http:
            bodies = [
                {"model": "tiny", "prompt": f"p{i}", "max_tokens": 4, "seed": 2**70 if i == 3 else i} for i in range(6)
            ]
            return await asyncio.gather(*(http.post(f"{url}/v1/completions", json=b) for b in bodies))

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200, 200, 200, 400, 200, 200]
    assert answers[3].json()["error"]["param"] == "seed"


@pytest.mark.parametrize("field", sorted(OPTIONAL_SAMPLING))
def test_optional_sampling_fields_are_honoured(plain, field):
    """The server samples exactly what the backend samples with the field, alone, same seed."""
    url, app = plain
    value = {"min_p": 0.05, "repetition_penalty": 1.3, "stop": ["e"]}[field]
    got = client(url).completions.create(
        model="tiny", prompt="the quick", max_tokens=12, seed=5, n=2, extra_body={field: value}
    )
    sampling = Sampling(
        n=2,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=12,
        **{field: tuple(value) if field == "stop" else value},
    )
    from winnow.records import Prompt

    expected = app.state.backend.generate([Prompt(id="x", text="the quick")], sampling, 5)
    assert [c.text for c in got.choices] == [c.text for c in expected]
    if field == "stop":
        assert all("e" not in c.text for c in got.choices)


def test_unknown_routes_and_methods_answer_the_openai_error_body(plain):
    url, _ = plain
    auth = {"Authorization": f"Bearer {KEY}"}
    for method, path, status in [
        ("POST", "/v1/embeddings", 404),
        ("GET", "/v1/chat/completions", 405),
        ("DELETE", "/v1/models", 405),
        ("GET", "/docs", 404),  # no API pages: they would be open without the key
        ("GET", "/openapi.json", 404),
        ("GET", "/redoc", 404),
    ]:
        r = httpx.request(method, f"{url}{path}", headers=auth)
        assert r.status_code == status, (method, path, r.text)
        assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert path in r.json()["error"]["message"]


def test_malformed_json_and_wrong_types_are_400_with_the_error_body(plain):
    url, _ = plain
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    broken = httpx.post(f"{url}/v1/chat/completions", content=b'{"model": "tiny", "messages": [', headers=auth)
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "invalid_json" and "malformed JSON" in broken.json()["error"]["message"]
    typed = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "n": "many"}, headers=auth)
    assert typed.status_code == 400 and typed.json()["error"]["param"] == "n"


def test_best_of_returns_the_best_candidates_with_their_rewards(bon):
    api = client(bon, key=None)
    one = api.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=1.0)
    rewards = one.model_extra["candidate_rewards"]
    assert len(rewards) == 4  # the server's default best_of
    best = one.choices[0]
    assert len(one.choices) == 1 and best.model_extra["reward"] == max(rewards) == float(len(best.message.content))
    two = api.completions.create(model="tiny", prompt="the printer is broken", n=2, max_tokens=8, best_of=5)
    rewards = two.model_extra["candidate_rewards"]
    assert len(rewards) == 5
    got = [c.model_extra["reward"] for c in two.choices]
    assert got == sorted(rewards, reverse=True)[:2] == [float(len(c.text)) for c in two.choices]
    assert two.usage.completion_tokens >= sum(c.model_extra["num_tokens"] for c in two.choices)
    for kwargs, message in [(dict(best_of=7), "best_of must be <= 6"), (dict(n=3, best_of=2), "must be >= n")]:
        with pytest.raises(openai.BadRequestError) as e:
            api.completions.create(model="tiny", prompt="x", max_tokens=2, **kwargs)
        assert e.value.param == "best_of" and message in e.value.message


def test_aggregate_best_and_the_votes_are_served_and_unknown_names_refused(bon):
    api = client(bon, key=None)
    best = api.completions.create(model="tiny", prompt="x", max_tokens=4, seed=1, extra_body={"aggregate": "best"})
    default = api.completions.create(model="tiny", prompt="x", max_tokens=4, seed=1)
    assert best.choices[0].text == default.choices[0].text
    for name in ("majority", "weighted"):
        got = api.completions.create(model="tiny", prompt="x", max_tokens=4, seed=1, extra_body={"aggregate": name})
        assert got.choices[0].model_extra["reward"] in got.model_extra["candidate_rewards"]
    with pytest.raises(openai.BadRequestError) as e:
        api.completions.create(model="tiny", prompt="x", max_tokens=4, extra_body={"aggregate": "median"})
    assert e.value.param == "aggregate" and "best, majority, weighted" in e.value.message


BOOM_REWARD = """
def reward(prompts, completions, **kw):
    if any("BOOM" in str(p) for p in prompts):
        raise ValueError("this reward cannot score BOOM")
    return [float(len(c)) for c in completions]
"""


def test_a_request_that_breaks_the_reward_fails_alone(tiny_policy, tmp_path):
    """Six requests batched together, one of which makes the reward raise: the batch is run
    again one request at a time, so five are answered and only that one gets a 500."""
    (tmp_path / "boom.py").write_text(BOOM_REWARD)
    config = ServeConfig(
        model=str(tiny_policy),
        served_model_name="tiny",
        device="cpu",
        best_of=2,
        batch_window_ms=2000,
        max_batch_prompts=6,
    )
    app = build_app(config, ScoreConfig(reward_fn=f"{tmp_path / 'boom.py'}:reward"))
    with serve_in_thread(app) as url:

        async def burst():
            async with httpx.AsyncClient(timeout=60) as http:
                bodies = [{"model": "tiny", "prompt": "BOOM" if i == 2 else f"p{i}", "max_tokens": 4} for i in range(6)]
                return await asyncio.gather(*(http.post(f"{url}/v1/completions", json=b) for b in bodies))

        answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200, 200, 500, 200, 200, 200]
    assert answers[2].json()["error"]["type"] == "server_error"
    assert _histogram(app) == 6 + 6  # one call of six, then six calls of one
    assert app.state.batcher.batches == 5  # the five that succeeded (the failed calls are not counted)


def test_full_queue_is_a_429_with_retry_after(tiny_policy):
    """One request held in the backend, two waiting (the queue holds two): the fourth is a 429."""
    config = ServeConfig(
        model=str(tiny_policy), device="cpu", max_queue=2, max_batch_prompts=1, batch_window_ms=0, retry_after_s=3
    )
    app = build_app(config)
    body = {"model": str(tiny_policy), "prompt": "hello", "max_tokens": 4}
    with serve_in_thread(app) as url, gated(app.state.backend.lm) as gate:

        async def run():
            async with httpx.AsyncClient(timeout=60) as http:
                held = [asyncio.ensure_future(http.post(f"{url}/v1/completions", json=body))]
                await asyncio.to_thread(wait_for, lambda: app.state.batcher.running == 1, 30)
                held += [asyncio.ensure_future(http.post(f"{url}/v1/completions", json=body)) for _ in range(2)]
                await asyncio.to_thread(wait_for, lambda: len(app.state.batcher.pending) == 2, 30)
                refused = await http.post(f"{url}/v1/completions", json=body)
                gate.set()
                return refused, await asyncio.gather(*held)

        refused, answered = asyncio.run(run())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "3"
    assert refused.json()["error"]["type"] == "rate_limit_error" and refused.json()["error"]["code"] == "queue_full"
    assert [a.status_code for a in answered] == [200, 200, 200]


def test_50_concurrent_clients_share_backend_calls(plain):
    """One request held in the backend while 49 others arrive: they go in two calls (32 + 17,
    max_batch_prompts 32), every answer 200 and well-formed."""
    url, app = plain
    batcher = app.state.batcher
    before = (batcher.batches, _histogram(app))

    async def one_client(api: openai.AsyncOpenAI, i: int):
        r = await api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"client {i}"}], max_tokens=8
        )
        assert r.object == "chat.completion" and len(r.choices) == 1 and r.model == "tiny"
        assert isinstance(r.choices[0].message.content, str) and r.choices[0].finish_reason in ("stop", "length")
        assert r.usage.completion_tokens == r.choices[0].model_extra["num_tokens"] >= 1

    async def run(gate):
        api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        try:
            first = asyncio.ensure_future(one_client(api, 0))
            await asyncio.to_thread(wait_for, lambda: batcher.running == 1, 30)
            rest = [asyncio.ensure_future(one_client(api, i)) for i in range(1, 50)]
            await asyncio.to_thread(wait_for, lambda: len(batcher.pending) == 49, 30)
            gate.set()
            await asyncio.gather(first, *rest)
        finally:
            await api.close()

    with gated(app.state.backend.lm) as gate:
        asyncio.run(run(gate))
    assert batcher.batches - before[0] == 3
    assert _histogram(app) - before[1] == 1 + 32 + 17


def _histogram(app) -> float:
    """The batch-size histogram's sum (requests served by backend calls so far)."""
    text = app.state.metrics.render().decode()
    return float(re.search(r"^winnow_batch_size_sum (\S+)$", text, re.M).group(1))


def test_best_of_n_in_front_of_another_server(plain, monkeypatch):
    """``winnow serve --backend openai``: Best-of-N over an upstream server (here the plain one)."""
    url, _ = plain
    monkeypatch.setenv("UPSTREAM_KEY", KEY)
    config = ServeConfig(
        model="tiny", backend="openai", base_url=f"{url}/v1", upstream_api_key_env="UPSTREAM_KEY", best_of=3
    )
    with serve_in_thread(build_app(config, ScoreConfig(reward_fn="length"))) as front:
        r = client(front, key=None).chat.completions.create(
            model="tiny", messages=CHAT, max_tokens=6, extra_body={"top_k": 5}
        )
    assert len(r.model_extra["candidate_rewards"]) == 3
    assert r.choices[0].model_extra["reward"] == max(r.model_extra["candidate_rewards"])


def test_votes_choose_the_answer_most_candidates_give():
    from winnow.records import Completion
    from winnow.serve.app import _aggregate
    from winnow.serve.work import Outcome

    texts = ["so = 3", "so = 4", "so = 4"]
    got = Outcome(
        prompt_tokens=1,
        candidates=[
            Completion(prompt_id="p", sample_index=j, model="m", text=t, num_tokens=3, finish_reason="stop")
            for j, t in enumerate(texts)
        ],
        rewards=[0.9, 0.1, 0.2],
    )
    # majority: 4 (two votes), its first candidate; weighted: 3 weighs 0.9 against 0.1 + 0.2
    assert [c.text for c, _ in _aggregate("majority", got, 3)] == ["so = 4", "so = 3", "so = 4"]
    assert [r for _, r in _aggregate("majority", got, 2)] == [0.1, 0.9]
    assert [c.text for c, _ in _aggregate("weighted", got, 1)] == ["so = 3"]
    assert [r for _, r in _aggregate("best", got, 1)] == [0.9]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_tokens", "4", 'max_tokens: Input should be a valid integer, got "4"'),
        ("max_tokens", True, "max_tokens: Input should be a valid integer, got true"),
        ("max_tokens", 4.0, "max_tokens: Input should be a valid integer, got 4.0"),
        ("seed", "5", 'seed: Input should be a valid integer, got "5"'),
        ("n", True, "n: Input should be a valid integer, got true"),
        ("temperature", "0.5", 'temperature: Input should be a valid number, got "0.5"'),
        ("temperature", False, "temperature: Input should be a valid number, got false"),
        ("best_of", 1.0, "best_of: Input should be a valid integer, got 1.0"),
        ("stream", "yes", 'stream: Input should be a valid boolean, got "yes"'),
        ("stream", 1, "stream: Input should be a valid boolean, got 1"),
        ("top_k", "3", 'top_k: Input should be a valid integer, got "3"'),
    ],
)
def test_a_wrong_json_type_is_refused_not_converted(plain, field, value, message):
    """OpenAI's dialect: "4" is no integer and true no number; a 400 naming the field, as it came."""
    url, _ = plain
    auth = {"Authorization": f"Bearer {KEY}"}
    for path, body in [
        ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2}),
        ("/v1/chat/completions", {"model": "tiny", "messages": CHAT, "max_tokens": 2}),
    ]:
        r = httpx.post(f"{url}{path}", json=body | {field: value}, headers=auth)
        assert r.status_code == 400, (path, field, value, r.text)
        assert r.json() == {
            "error": {"message": message, "type": "invalid_request_error", "param": field, "code": None}
        }


def test_an_integer_is_a_number_as_in_json(plain):
    """A float field takes an integer (``"temperature": 1``), as OpenAI's does."""
    url, _ = plain
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "tiny", "prompt": "x", "max_tokens": 2, "temperature": 1, "top_p": 1, "seed": 3}
    r = httpx.post(f"{url}/v1/completions", json=body, headers=auth)
    assert r.status_code == 200, r.text


NEUTRAL_CHAT = dict(
    logprobs=False,
    top_logprobs=0,
    presence_penalty=0,
    frequency_penalty=0.0,
    response_format={"type": "text"},
    logit_bias={},
    tools=[],
    tool_choice="none",
    user="someone",
)


def test_neutral_values_of_unimplemented_fields_are_accepted(plain):
    """What chat front-ends send by default leaves the answer as it is: the same text as without."""
    api = client(plain[0])
    bare = api.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5, seed=7)
    full = api.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5, seed=7, **NEUTRAL_CHAT)
    assert full.choices[0].message.content == bare.choices[0].message.content
    text = api.completions.create(
        model="tiny", prompt="x", max_tokens=3, seed=7, logprobs=None, echo=False, presence_penalty=0, logit_bias={}
    )
    assert (
        text.choices[0].text == api.completions.create(model="tiny", prompt="x", max_tokens=3, seed=7).choices[0].text
    )
    streamed = api.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=5, seed=7, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == bare.choices[0].message.content


@pytest.mark.parametrize(
    "path, field, value, accepted",
    [
        ("chat", "presence_penalty", 0.5, "0"),
        ("chat", "frequency_penalty", -1, "0"),
        ("chat", "response_format", {"type": "json_object"}, 'null or {"type": "text"}'),
        ("chat", "logit_bias", {"50256": -100}, "null or {}"),
        ("chat", "tool_choice", "auto", 'null or "none"'),
        ("text", "echo", True, "false"),
    ],
)
def test_a_value_that_would_change_the_answer_is_refused_by_name(plain, path, field, value, accepted):
    url, _ = plain
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "tiny", "max_tokens": 2, field: value}
    body |= {"messages": CHAT} if path == "chat" else {"prompt": "x"}
    r = httpx.post(f"{url}/v1/{'chat/completions' if path == 'chat' else 'completions'}", json=body, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    got = json.dumps(value)
    assert r.json()["error"]["message"] == (
        f"{field}: not implemented by winnow serve: only {accepted} (which leaves the answer unchanged) "
        f"is accepted, got {got}"
    )
