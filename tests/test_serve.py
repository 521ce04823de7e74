"""``winnow serve`` over a tiny model, driven by the official ``openai`` client over real HTTP:
n, Best-of-N with its reward fields, every cap, malformed JSON, the API key, a full queue,
and a bounded load test with 50 concurrent clients."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import httpx
import openai
import pytest
from serving import serve_in_thread

from winnow.config import ScoreConfig, ServeConfig
from winnow.generate import BACKENDS, OPTIONAL_SAMPLING
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
        (dict(stream=True), "stream"),
        (dict(temperature=-1), "temperature"),
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


@pytest.mark.parametrize("field", sorted(OPTIONAL_SAMPLING))
def test_optional_sampling_fields_are_honoured_or_refused_by_name(plain, field):
    value = {"min_p": 0.05, "repetition_penalty": 1.3, "stop": ["\n"]}[field]
    api = client(plain[0])
    if field in BACKENDS["hf"]:
        assert api.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3, extra_body={field: value})
    else:
        with pytest.raises(openai.BadRequestError) as e:
            api.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3, extra_body={field: value})
        assert e.value.param == field and "does not support" in e.value.message


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


def test_full_queue_is_a_429_with_retry_after(tiny_policy):
    config = ServeConfig(
        model=str(tiny_policy), device="cpu", max_queue=2, max_batch_prompts=1, batch_window_ms=0, retry_after_s=3
    )
    with serve_in_thread(build_app(config)) as url:

        async def burst():
            async with httpx.AsyncClient(timeout=60) as http:
                body = {"model": str(tiny_policy), "prompt": "hello", "max_tokens": 16}
                return await asyncio.gather(*(http.post(f"{url}/v1/completions", json=body) for _ in range(12)))

        answers = asyncio.run(burst())
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2  # the queue holds 2
    for a in answers:
        if a.status_code == 429:
            assert a.headers["retry-after"] == "3" and a.json()["error"]["type"] == "rate_limit_error"


def test_load_50_concurrent_clients(plain, capsys):
    """Every answer 200 and well-formed; concurrent requests share backend calls."""
    url, app = plain
    batches_before = app.state.batcher.batches

    async def one_client(i: int) -> list[float]:
        api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        latencies = []
        try:
            for k in range(2):
                start = time.perf_counter()
                r = await api.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"client {i} request {k}"}], max_tokens=8
                )
                latencies.append(time.perf_counter() - start)
                assert r.object == "chat.completion" and len(r.choices) == 1 and r.model == "tiny"
                assert isinstance(r.choices[0].message.content, str) and r.choices[0].finish_reason in (
                    "stop",
                    "length",
                )
                assert r.usage.completion_tokens == r.choices[0].model_extra["num_tokens"] >= 1
        finally:
            await api.close()
        return latencies

    async def run():
        return await asyncio.gather(*(one_client(i) for i in range(50)))

    latencies = sorted(x for client_latencies in asyncio.run(run()) for x in client_latencies)
    batches = app.state.batcher.batches - batches_before
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    with capsys.disabled():  # shown in every run, not only with -s
        print(
            f"\nload test: 50 clients x 2 requests: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, {batches} batches"
        )
    assert len(latencies) == 100 and batches < 50  # batched: far fewer backend calls than requests


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
