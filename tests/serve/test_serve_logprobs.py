"""``winnow serve`` returns per-token log-probabilities when asked (chat ``logprobs`` with
``top_logprobs``, completions ``logprobs: K``): the hf backend's own, token for token; and the
``openai`` backend, pointed at it, gets each completion's confidence from them."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from serving import serve_in_thread
from tiny_models import PROMPTS

from winnow.config import ServeConfig
from winnow.generate import Sampling, make_backend
from winnow.generate.openai_api import OpenAIBackend, request_seed
from winnow.remote import ClientSettings
from winnow.serve.main import build_app

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = [{"role": "user", "content": "write two sentences about a kitchen table"}]


@pytest.fixture(scope="module")
def url(tiny_policy):
    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", max_n=4)
    with serve_in_thread(build_app(config)) as root:
        yield root


@pytest.fixture(scope="module")
def hf(tiny_policy):
    return make_backend("hf", str(tiny_policy), device="cpu")


def test_chat_logprobs_are_the_hf_backends_token_for_token(url, hf):
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 6, "seed": 5, "n": 2, "logprobs": True, "top_logprobs": 3}
    got = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    sampling = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6, top_logprobs=3, top_tokens=True)
    from winnow.records import Prompt

    expected = hf.generate([Prompt(id="c", messages=tuple(CHAT))], sampling, seed=5)
    for choice, c in zip(got["choices"], expected, strict=True):
        content = choice["logprobs"]["content"]
        assert choice["message"]["content"] == c.text and len(content) == c.num_tokens == choice["num_tokens"]
        assert [e["logprob"] for e in content] == list(c.logprobs.sampled)
        assert [e["token"] for e in content] == [hf.tokenizer.decode([t]) for t in c.logprobs.tokens]
        for e, top in zip(content, c.logprobs.top, strict=True):
            assert [t["logprob"] for t in e["top_logprobs"]] == [y for _, y in top]
            assert e["top_logprobs"][0]["bytes"] == list(e["top_logprobs"][0]["token"].encode())


def test_completions_logprobs_list_tokens_alternatives_and_offsets(url):
    body = {"model": "tiny", "prompt": "the quick brown", "max_tokens": 5, "seed": 2, "logprobs": 2}
    choice = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == choice["num_tokens"]
    assert all(
        1 <= len(top) <= 2 and max(top.values()) >= x
        for top, x in zip(lp["top_logprobs"], lp["token_logprobs"], strict=True)
    )
    assert lp["text_offset"] == list(np.cumsum([0] + [len(t) for t in lp["tokens"]])[:-1])
    plain = httpx.post(f"{url}/v1/completions", json={**body, "logprobs": None}, timeout=60).json()["choices"][0]
    assert plain["text"] == choice["text"] and "logprobs" not in plain  # asking changes no token


@pytest.mark.parametrize(
    ("path", "fields", "param", "message"),
    [
        ("chat", {"top_logprobs": 2}, "top_logprobs", "top_logprobs needs logprobs: true"),
        ("chat", {"logprobs": True, "stream": True}, "logprobs", "logprobs is not available with stream: true"),
        ("text", {"logprobs": 1, "stream": True}, "logprobs", "logprobs is not available with stream: true"),
        ("text", {"logprobs": 21}, "logprobs", None),
    ],
)
def test_logprobs_it_cannot_give_are_refused_by_name(url, path, fields, param, message):
    body = {"model": "tiny", "max_tokens": 2, **fields}
    body |= {"messages": CHAT} if path == "chat" else {"prompt": "x"}
    r = httpx.post(f"{url}/v1/{'chat/completions' if path == 'chat' else 'completions'}", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    if message:
        assert r.json()["error"]["message"] == message


@pytest.mark.parametrize("endpoint", ["chat", "auto"])
def test_openai_backend_gets_confidence_from_winnow_serve(url, hf, endpoint):
    """Against the server, each completion's log-probabilities are the hf backend's for the same
    request seed (prompt i's: ``request_seed(seed, i)``, n in one request), and so is its
    confidence on the chat endpoint. The completions endpoint keys the top tokens by their text,
    so a position whose top tokens share one (byte pieces of a character) counts them once."""
    # one request at a time: the server batches concurrent ones under the first one's seed
    backend = OpenAIBackend("tiny", client=ClientSettings(base_url=f"{url}/v1", concurrency=1), endpoint=endpoint)
    sampling = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6, top_logprobs=4)
    got = backend.generate(PROMPTS, sampling, seed=11)
    assert backend.n_mode == "n"
    for i, prompt in enumerate(PROMPTS):
        expected = hf.generate([prompt], sampling, seed=request_seed(11, i))
        for c, e in zip(got[2 * i : 2 * i + 2], expected, strict=True):
            assert c.text == e.text and c.num_tokens == e.num_tokens
            assert list(c.logprobs.sampled) == list(e.logprobs.sampled)
            if endpoint == "chat":
                np.testing.assert_allclose(c.logprobs.confidence, e.logprobs.confidence, rtol=1e-6)


def test_a_confidence_vote_picks_the_answer_with_the_most_confidence():
    """Five candidates, hand-built: 4 holds three votes but little confidence (0.2 + 0.3 +
    0.1), 3 two votes and 4.0 of it; the winner's most confident candidate comes first, the
    rest by reward. A majority vote would pick 4."""
    from winnow.confidence import TokenLogprobs
    from winnow.records import Completion
    from winnow.serve.answer import choose
    from winnow.serve.work import Outcome

    def candidate(j: int, text: str, confidence: tuple[float, ...]) -> Completion:
        lp = TokenLogprobs(sampled=(-1.0,) * len(confidence), confidence=confidence)
        return Completion("p", j, "tiny", text, len(confidence), "stop", logprobs=lp)

    candidates = [
        candidate(0, "= 3", (1.0, 1.0)),  # lowest group confidence: the mean, shorter than the window
        candidate(1, "= 4", (0.2,)),
        candidate(2, "= 4", (0.4, 0.2)),
        candidate(3, "= 3", (3.0,)),
        candidate(4, "= 4", (0.1,)),
    ]
    got = Outcome(prompt_tokens=3, candidates=candidates, rewards=[0.9, 0.1, 0.2, 0.3, 0.5])
    assert [(c.sample_index, r) for c, r in choose("confidence", got, 2)] == [(3, 0.3), (0, 0.9)]
    assert choose("majority", got, 1)[0][0].sample_index == 1


def test_a_best_of_n_server_votes_by_confidence(tiny_policy):
    from winnow.config import ScoreConfig

    config = ServeConfig(model=str(tiny_policy), served_model_name="tiny", device="cpu", best_of=4)
    with serve_in_thread(build_app(config, ScoreConfig(reward_fn="length"))) as root:
        body = {"model": "tiny", "prompt": "x", "max_tokens": 4, "aggregate": "confidence", "return_candidates": True}
        r = httpx.post(f"{root}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    assert len(got["candidates"]) == 4 and got["choices"][0]["text"] == got["candidates"][got["selected_index"]]["text"]
