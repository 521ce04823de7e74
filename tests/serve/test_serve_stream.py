"""Streaming from ``winnow serve`` as the OpenAI API defines it, read by real clients (the
official ``openai`` client, sync and async; ``httpx`` reading raw SSE; LangChain's
``ChatOpenAI``): byte-exact framing, live tokens, keep-alives while Best-of-N scores,
usage counting every candidate, a disconnect that stops decoding, and /metrics."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import time

import httpx
import openai
import psutil
import pytest
from helpers import wait_for
from serving import counted, serve_in_thread

from winnow.config import ScoreConfig, ServeConfig
from winnow.serve.main import build_app
from winnow.serve.metrics import REWARDS
from winnow.serve.stream import pieces

CHAT = [{"role": "user", "content": "describe a rainy monday commute"}]
SLOW_REWARD = """
import time

def reward(prompts, completions, **kw):
    time.sleep(1.0)
    return [float(len(c)) for c in completions]
"""


@pytest.fixture(scope="module")
def plain(tiny_policy):
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", max_tokens=256)
    app = build_app(config)
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def bon(tiny_policy):
    """Best-of-N, 'length' reward, best_of 4; keep-alives rarely (none in a fast request)."""
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=4, keepalive_s=300)
    app = build_app(config, ScoreConfig(reward_fn="length"))
    with serve_in_thread(app) as url:
        yield url, app


def api(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)


def sse_events(raw: bytes) -> list[bytes]:
    """The stream cut into events (each ends with a blank line)."""
    assert raw.endswith(b"\n\n"), raw[-50:]
    return [e + b"\n\n" for e in raw[:-2].split(b"\n\n")]


def test_best_of_n_stream_is_byte_for_byte_the_openai_framing(bon):
    """With best_of 4 the stream holds the chosen answer, cut in word-sized deltas: every byte
    is predictable from the same request unstreamed (same seed)."""
    url, _ = bon
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 12, "seed": 7}
    plain_answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    raw = httpx.post(
        f"{url}/v1/chat/completions",
        json=body | {"stream": True, "stream_options": {"include_usage": True}},
        timeout=60,
    )
    assert raw.status_code == 200 and raw.headers["content-type"] == "text/event-stream; charset=utf-8"
    first = json.loads(sse_events(raw.content)[0][len(b"data: ") :])
    head = {"id": first["id"], "object": "chat.completion.chunk", "created": first["created"], "model": "tiny"}
    choice = plain_answer["choices"][0]
    text = choice["message"]["content"]

    def event(choices, **extra):
        payload = {**head, "choices": choices, **extra}
        payload.setdefault("usage", None)
        return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

    def delta(content: dict, finish=None, **extra):
        return {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish, **extra}

    expected = event([delta({"role": "assistant", "content": ""})])
    expected += b"".join(event([delta({"content": p})]) for p in pieces(text))
    final = delta({}, choice["finish_reason"], num_tokens=choice["num_tokens"], reward=choice["reward"])
    expected += event([final], candidate_rewards=plain_answer["candidate_rewards"])
    expected += event([], usage=plain_answer["usage"])
    expected += b"data: [DONE]\n\n"
    assert raw.content == expected
    assert first["id"].startswith("chatcmpl-") and len(pieces(text)) >= 1


def test_live_stream_is_the_unstreamed_answer_token_by_token(plain):
    """No reward: tokens are streamed as sampled; joined they are the unstreamed answer (same
    seed), for chat and text, n = 2, with the openai client."""
    url, _ = plain
    client = api(url)
    kwargs = dict(model="tiny", max_tokens=24, seed=11, n=2)
    whole = client.chat.completions.create(messages=CHAT, **kwargs)
    stream = client.chat.completions.create(
        messages=CHAT, stream=True, stream_options={"include_usage": True}, **kwargs
    )
    texts: dict[int, str] = {0: "", 1: ""}
    deltas, finish, usage = 0, {}, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk" and chunk.model == "tiny" and chunk.id.startswith("chatcmpl-")
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                texts[c.index] += c.delta.content
                deltas += 1
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert [texts[0], texts[1]] == [c.message.content for c in whole.choices]
    assert finish == {0: whole.choices[0].finish_reason, 1: whole.choices[1].finish_reason}
    assert usage.completion_tokens == whole.usage.completion_tokens and deltas > 4  # many deltas, not one
    text_whole = client.completions.create(prompt="the quick brown", **kwargs)
    got = {0: "", 1: ""}
    for chunk in client.completions.create(prompt="the quick brown", stream=True, **kwargs):
        assert chunk.object == "text_completion"
        for c in chunk.choices:
            got[c.index] += c.text
    assert [got[0], got[1]] == [c.text for c in text_whole.choices]


def test_async_client_stream_and_not(plain):
    url, _ = plain

    async def run():
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)
        try:
            whole = await client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10, seed=3)
            text = ""
            async for chunk in await client.chat.completions.create(
                model="tiny", messages=CHAT, max_tokens=10, seed=3, stream=True
            ):
                text += "".join(c.delta.content or "" for c in chunk.choices)
            return whole.choices[0].message.content, text
        finally:
            await client.close()

    whole, streamed = asyncio.run(run())
    assert streamed == whole


def test_include_usage_counts_every_candidate(bon):
    url, _ = bon
    chunks = list(
        api(url).completions.create(
            model="tiny",
            prompt="hello",
            max_tokens=8,
            seed=2,
            stream=True,
            n=2,
            extra_body={"best_of": 5},
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    finals = [c for chunk in chunks for c in chunk.choices if c.finish_reason]
    rewards = finals[-1].model_extra["candidate_rewards"] if "candidate_rewards" in finals[-1].model_extra else None
    rewards = rewards or chunks[-2].model_extra["candidate_rewards"]
    whole = api(url).completions.create(
        model="tiny", prompt="hello", max_tokens=8, seed=2, n=2, extra_body={"best_of": 5}
    )
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.completion_tokens > sum(c.model_extra["num_tokens"] for c in finals)  # 5 candidates, 2 shown
    assert len(rewards) == 5 and [c.model_extra["reward"] for c in finals] == sorted(rewards, reverse=True)[:2]


def test_keepalives_while_a_slow_reward_scores(tiny_policy, tmp_path):
    """best_of 3 with a reward that takes 1 s: the stream sends ': keep-alive' comments every
    0.1 s meanwhile, then the answer; raw SSE read with httpx as it arrives."""
    (tmp_path / "slow.py").write_text(SLOW_REWARD)
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=3, keepalive_s=0.1)
    app = build_app(config, ScoreConfig(reward_fn=f"{tmp_path / 'slow.py'}:reward"))
    with serve_in_thread(app) as url:
        arrivals: list[tuple[float, bytes]] = []
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 6, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    arrivals.append((time.monotonic(), line.encode()))
    kinds = [b"keep" if line == b": keep-alive" else line[:6] for _, line in arrivals]
    first_data = kinds.index(b"data: ")
    assert kinds[:first_data].count(b"keep") >= 5  # 1 s of scoring at one per 0.1 s (>= 5 on a busy machine)
    assert b"keep" not in kinds[first_data:] and arrivals[-1][1] == b"data: [DONE]"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals[: first_data + 1])]
    assert max(gaps) < 0.6  # an idle timeout of well under a second never fires


def _stream_until_first_delta(url: str, body: dict) -> float:
    """Open a stream, read until the first content delta, close the connection; returns when."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                break
    return time.monotonic()


def test_a_disconnect_stops_decoding(plain):
    """A streamed request (n 4, up to 200 tokens, 10 ms per decode step) dropped after its
    first delta: decoding stops within a step or two; the same for an unstreamed request
    whose client times out. Unstopped, each would run on for about 190 steps."""
    url, app = plain
    lm = app.state.backend.lm
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 200, "n": 4, "temperature": 0.0, "stream": True}
    with counted(lm, delay_s=0.01) as steps:
        closed = _stream_until_first_delta(url, body)
        # idle once decoding stops: within a step or two if the disconnect stopped it, after
        # the whole answer (about 2 s) if not, and then the steps counted say so
        wait_for(lambda: app.state.batcher.running == 0, 30, "the backend idle")
        after_stream = sum(t > closed for t in steps)
        steps.clear()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=body | {"stream": False}, timeout=0.5)
        gave_up = time.monotonic()
        wait_for(lambda: app.state.batcher.running == 0, 30, "the backend idle")
        after_timeout = sum(t > gave_up + 0.1 for t in steps)  # the disconnect takes a moment to be seen
        before_timeout = sum(t <= gave_up for t in steps)
    print(
        f"\ndisconnect: {after_stream} decode steps after a streamed client left; "
        f"{before_timeout} steps before and {after_timeout} after an unstreamed client timed out"
    )
    assert after_stream <= 2 and after_timeout <= 2 and before_timeout >= 10
    assert httpx.get(f"{url}/health").json()["queued"] == 0


def test_50_clients_dropping_at_random_leave_the_server_healthy(plain):
    """50 clients, streamed or not, that leave at random moments: afterwards the backend is
    idle with nothing queued, a normal request is answered, and memory is back near its level."""
    url, app = plain
    process = psutil.Process(os.getpid())
    warm = {"model": "tiny", "messages": CHAT, "max_tokens": 64, "n": 4}
    httpx.post(f"{url}/v1/chat/completions", json=warm, timeout=60)
    rss_before = process.memory_info().rss
    rng = random.Random(0)

    async def leaver(http: httpx.AsyncClient, i: int) -> bool:
        """True when the client left before its answer was complete."""
        body = warm | {"max_tokens": 200, "stream": i % 2 == 0, "seed": i}
        try:
            async with asyncio.timeout(rng.uniform(0.05, 1.5)):
                async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                    async for _ in r.aiter_raw():
                        pass
        except TimeoutError:
            return True
        return False

    async def run() -> list[bool]:
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*(leaver(http, i) for i in range(50)))

    with counted(app.state.backend.lm, delay_s=0.002) as steps:
        left_early = sum(asyncio.run(run()))
        left = time.monotonic()
        wait_for(lambda: app.state.batcher.running == 0 and not app.state.batcher.pending, 30, "idle")
        settled = time.monotonic()
        time.sleep(0.5)
        late = sum(t > settled for t in steps)
    answer = httpx.post(f"{url}/v1/chat/completions", json=warm | {"max_tokens": 8}, timeout=60)
    rss_after = process.memory_info().rss
    grown = (rss_after - rss_before) / 2**20
    print(
        f"\n50 leaving clients ({left_early} before their answer): idle {settled - left:.2f} s after the last "
        f"left, {late} steps later, "
        f"memory {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
    )
    assert answer.status_code == 200 and late == 0 and left_early >= 40
    assert grown < 64  # MiB: no request's work or cache kept alive


def test_metrics_after_a_scripted_series_of_requests(tiny_policy):
    """Three answered requests (one streamed), one 400, one 401: /metrics counts exactly these."""
    os.environ["WINNOW_METRICS_KEY"] = "sk-metrics"
    config = ServeConfig(
        model=str(tiny_policy),
        served_model_name="tiny",
        device="cpu",
        best_of=3,
        api_key_env="WINNOW_METRICS_KEY",
        batch_window_ms=0,
    )
    app = build_app(config, ScoreConfig(reward_fn="length"))
    del os.environ["WINNOW_METRICS_KEY"]
    auth = {"Authorization": "Bearer sk-metrics"}
    with serve_in_thread(app) as url:
        body = {"model": "tiny", "prompt": "hello", "max_tokens": 5, "seed": 1}
        got = [httpx.post(f"{url}/v1/completions", json=body | {"seed": s}, headers=auth).json() for s in (1, 2)]
        streamed = httpx.post(f"{url}/v1/completions", json=body | {"stream": True, "n": 2}, headers=auth)
        assert streamed.status_code == 200
        assert httpx.post(f"{url}/v1/completions", json=body | {"n": 9}, headers=auth).status_code == 400
        assert httpx.post(f"{url}/v1/completions", json=body).status_code == 401
        assert httpx.get(f"{url}/metrics").status_code == 401  # follows the key
        text = httpx.get(f"{url}/metrics", headers=auth).text
    values = dict(re.findall(r"^(winnow_[^ ]+) (\S+)$", text, re.M))
    assert values['winnow_requests_total{endpoint="/v1/completions",status="200"}'] == "3.0"
    assert values['winnow_requests_total{endpoint="/v1/completions",status="400"}'] == "1.0"
    assert values['winnow_requests_total{endpoint="/v1/completions",status="401"}'] == "1.0"
    assert values["winnow_candidates_total"] == "9.0"  # best_of 3, three requests
    tokens = sum(r["usage"]["completion_tokens"] for r in got)
    assert float(values["winnow_completion_tokens_total"]) > tokens
    assert values["winnow_prompt_tokens_total"] == str(float(3 * got[0]["usage"]["prompt_tokens"]))
    assert values["winnow_batch_size_count"] == "3.0" and values["winnow_batch_size_sum"] == "3.0"
    assert values['winnow_request_latency_seconds_count{stream="false"}'] == "2.0"
    assert values['winnow_request_latency_seconds_count{stream="true"}'] == "1.0"
    assert values['winnow_time_to_first_token_seconds_count{stream="true"}'] == "1.0"
    rewards = [r["choices"][0]["reward"] for r in got]
    for event in sse_events(streamed.content)[:-1]:
        rewards += [c["reward"] for c in json.loads(event[len(b"data: ") :])["choices"] if c["finish_reason"]]
    assert len(rewards) == 4  # 1 + 1 + 2 answers returned
    for le in REWARDS:  # a histogram with negative buckets has no _sum: its buckets say it all
        assert values[f'winnow_chosen_reward_bucket{{le="{float(le)}"}}'] == str(float(sum(r <= le for r in rewards)))
    assert values["winnow_queue_depth"] == "0.0"


def test_metrics_public(tiny_policy, monkeypatch):
    monkeypatch.setenv("WINNOW_METRICS_KEY", "sk-m")
    config = ServeConfig(model=str(tiny_policy), device="cpu", api_key_env="WINNOW_METRICS_KEY", metrics_public=True)
    with serve_in_thread(build_app(config)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200
        assert httpx.get(f"{url}/v1/models").status_code == 401


def test_openai_backend_relays_the_upstream_stream(plain):
    """``--backend openai`` in front of the plain server: the upstream's deltas pass through
    one for one, re-labelled with this server's model name."""
    url, _ = plain
    config = ServeConfig(model="tiny", served_model_name="front", backend="openai", base_url=f"{url}/v1")
    with serve_in_thread(build_app(config)) as front:
        args = dict(messages=CHAT, max_tokens=16, seed=4, stream=True, stream_options={"include_usage": True})
        upstream = list(api(url).chat.completions.create(model="tiny", **args))
        relayed = list(api(front).chat.completions.create(model="front", **args))
    assert {c.model for c in relayed} == {"front"}

    def contents(chunks):
        return [c.delta.content for chunk in chunks for c in chunk.choices if c.delta.content]

    assert contents(relayed) == contents(upstream) and len(contents(relayed)) > 2
    assert relayed[-1].usage.completion_tokens == upstream[-1].usage.completion_tokens


def test_langchain_chat_openai(plain):
    """LangChain's ChatOpenAI, as an agent framework would call it: invoke and stream."""
    langchain_openai = pytest.importorskip("langchain_openai")
    url, _ = plain
    chat = langchain_openai.ChatOpenAI(
        base_url=f"{url}/v1", api_key="none", model="tiny", max_tokens=12, seed=9, max_retries=0
    )
    whole = chat.invoke("describe a rainy monday commute")
    streamed = "".join(part.content for part in chat.stream("describe a rainy monday commute"))
    assert isinstance(whole.content, str) and streamed == whole.content


class Recorder:
    """A ``winnow.generate.Watch`` that streams every prompt and records the deltas."""

    def __init__(self):
        self.deltas: dict[tuple[int, int], list[str]] = {}

    def streams(self, prompt: int) -> bool:
        return True

    def text(self, prompt: int, sample: int, delta: str) -> None:
        self.deltas.setdefault((prompt, sample), []).append(delta)

    def cancelled(self, prompt: int) -> bool:
        return False


def test_streamed_text_never_shows_part_of_a_stop_string(plain):
    """A 3-character stop string taken from the middle of an unstopped sample: the deltas of
    the stopped run are a prefix of its final text at every step, never a part of the stop
    string, and the final text is what the unwatched backend returns."""
    from winnow.generate import Sampling
    from winnow.records import Prompt

    backend = plain[1].state.backend
    prompts = [Prompt(id="a", text="the quick brown"), Prompt(id="b", text="a kitchen table")]
    free = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=40)
    unstopped = backend.generate(prompts, free, 3)
    stop = unstopped[0].text[10:13]
    stopped = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=40, stop=(stop,))
    recorder = Recorder()
    watched = backend.generate(prompts, stopped, 3, watch=recorder)
    assert [c.text for c in watched] == [c.text for c in backend.generate(prompts, stopped, 3)]
    assert watched[0].text == unstopped[0].text[: unstopped[0].text.index(stop)]
    for c in watched:
        deltas = recorder.deltas.get(
            (prompts.index(next(p for p in prompts if p.id == c.prompt_id)), c.sample_index), []
        )
        sofar = ""
        for d in deltas:
            sofar += d
            assert c.text.startswith(sofar) and stop not in sofar


def test_a_client_leaving_a_relayed_stream_stops_the_upstream(plain):
    """``--backend openai``: a client that drops a relayed stream after its first delta closes
    the upstream stream too, so the upstream server stops decoding for it."""
    url, app = plain
    config = ServeConfig(model="tiny", served_model_name="front", backend="openai", base_url=f"{url}/v1")
    front_app = build_app(config)
    body = {"model": "front", "messages": CHAT, "max_tokens": 200, "n": 2, "temperature": 0.0, "stream": True}
    with serve_in_thread(front_app) as front, counted(app.state.backend.lm, delay_s=0.01) as steps:
        closed = _stream_until_first_delta(front, body)
        wait_for(
            lambda: app.state.batcher.running == 0, 30, "the upstream idle"
        )  # as in test_a_disconnect_stops_decoding
        after = sum(t > closed + 0.1 for t in steps)
    assert after <= 2 and len(steps) < 60


def test_streamed_text_is_the_final_text_with_tokenization_space_cleanup(plain):
    """With ``clean_up_tokenization_spaces`` (which rewrites " ." as "." once the "." comes)
    the deltas joined are a prefix of the final text at every point (the server sends the
    rest with the finishing chunk)."""
    from winnow.generate import Sampling
    from winnow.records import Prompt

    backend = plain[1].state.backend
    prompts = [Prompt(id="a", text="the quick brown fox , the lazy dog ."), Prompt(id="b", text="it 's late .")]
    sampling = Sampling(n=3, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=40)
    before = backend.tokenizer.clean_up_tokenization_spaces
    backend.tokenizer.clean_up_tokenization_spaces = True
    try:
        recorder = Recorder()
        rows = backend.generate(prompts, sampling, 8, watch=recorder)
    finally:
        backend.tokenizer.clean_up_tokenization_spaces = before
    for c in rows:
        i = [p.id for p in prompts].index(c.prompt_id)
        sofar = ""
        for delta in recorder.deltas.get((i, c.sample_index), []):
            sofar += delta
            assert c.text.startswith(sofar)
