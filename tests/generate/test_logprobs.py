"""Per-token log-probabilities from the transformers backend: the decode loop's equal a plain
forward pass's ``log_softmax`` at the sampled tokens, the ``generate()`` fallback gives the
same, asking for them never changes a sampled token, and the generate stage keeps the two
confidence numbers (or every token's, when asked)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import PROMPTS

from winnow import stages
from winnow.confidence import summarize
from winnow.config import GenerateConfig
from winnow.errors import WinnowError
from winnow.generate import Sampling, decode, fallback, make_backend

pytestmark = pytest.mark.usefixtures("one_thread")
K = 5


def forward_logprobs(lm, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """log_softmax of one unbatched forward over prompt + completion: (T, V), row t the
    distribution the completion's token t was drawn from."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = lm(ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1)


def test_decode_loop_logprobs_equal_a_forward_pass(tiny_policy):
    """Batched, left-padded, sampled with a penalty and filters, rows finishing at different
    steps: each token's log-probability is the raw model's at that token, and its confidence
    minus the mean of the top-K log-probabilities there."""
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    prompts = [backend.render(p) for p in PROMPTS]
    record = decode.Logprobs(K)
    torch.manual_seed(3)
    rows = decode.sample(
        backend.lm,
        prompts,
        n=2,
        max_new_tokens=9,
        eos_ids=sorted(backend.eos_ids),
        pad_id=0,
        temperature=0.8,
        top_k=40,
        repetition_penalty=1.2,
        logprobs=record,
    )
    for r, tokens in enumerate(rows):
        expected = forward_logprobs(backend.lm, prompts[r // 2], tokens)
        sampled = expected.gather(1, torch.tensor(tokens)[:, None]).squeeze(1)
        confidence = -expected.topk(K, dim=-1).values.mean(dim=-1)
        assert len(record.sampled[r]) == len(tokens) == len(record.confidence[r])
        np.testing.assert_allclose(record.sampled[r], sampled.numpy(), atol=1e-5)
        np.testing.assert_allclose(record.confidence[r], confidence.numpy(), atol=1e-5)


def test_asking_for_logprobs_changes_no_token(tiny_policy):
    backend = make_backend("hf", str(tiny_policy), device="cpu", batch_size=2)
    plain = Sampling(n=3, temperature=1.0, top_p=0.9, top_k=20, max_new_tokens=8, repetition_penalty=1.1)
    scored = Sampling(**{**plain.__dict__, "top_logprobs": K})
    off = backend.generate(PROMPTS, plain, seed=7)
    on = backend.generate(PROMPTS, scored, seed=7)
    assert [c.to_row() for c in on] == [c.to_row() for c in off]
    assert all(c.logprobs is None for c in off)
    assert all(len(c.logprobs.sampled) == c.num_tokens for c in on)


def test_decode_loop_and_generate_path_give_the_same_logprobs(tiny_policy):
    """Greedy (the one sampling both loops draw alike), n=2 so the repeated rows are scored
    too, three prompts of different lengths so the loop pads and drops rows."""
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    prompts = [backend.render(p) for p in PROMPTS]
    kw = dict(n=2, max_new_tokens=7, eos_ids=sorted(backend.eos_ids), pad_id=0, temperature=0.0)
    ours, theirs = decode.Logprobs(K), decode.Logprobs(K)
    rows = decode.sample(backend.lm, prompts, logprobs=ours, **kw)
    assert fallback.sample(backend.lm, prompts, logprobs=theirs, **kw) == rows
    for r in range(len(rows)):
        np.testing.assert_allclose(ours.sampled[r], theirs.sampled[r], atol=1e-5)
        np.testing.assert_allclose(ours.confidence[r], theirs.confidence[r], atol=1e-5)
    assert fallback.sample(backend.lm, prompts, **kw) == rows  # and without them, the same tokens


def test_fallback_logprobs_equal_a_forward_pass(tiny_policy):
    """``generate()``'s path, sampled (not greedy): each token's log-probability is a forward
    pass's."""
    backend = make_backend("hf", str(tiny_policy), device="cpu")
    prompt = backend.render(PROMPTS[0])
    record = decode.Logprobs(K)
    torch.manual_seed(2)
    rows = fallback.sample(backend.lm, [prompt], n=2, max_new_tokens=6, eos_ids=[], pad_id=0, logprobs=record)
    for r, tokens in enumerate(rows):
        expected = forward_logprobs(backend.lm, prompt, tokens)
        np.testing.assert_allclose(
            record.sampled[r], expected.gather(1, torch.tensor(tokens)[:, None]).squeeze(1), atol=1e-4
        )
        np.testing.assert_allclose(record.confidence[r], -expected.topk(K, dim=-1).values.mean(dim=-1), atol=1e-4)


def test_a_model_only_generate_runs_returns_logprobs(tiny_rwkv):
    backend = make_backend("hf", str(tiny_rwkv), device="cpu")
    sampling = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=6, top_logprobs=K)
    assert all(len(c.logprobs.confidence) == c.num_tokens for c in backend.generate(PROMPTS[:2], sampling, seed=2))


def shard_rows(run_dir) -> list[dict]:
    return [json.loads(line) for f in sorted((run_dir / "generate").glob("shard-*.jsonl")) for line in f.open()]


def test_generate_stage_keeps_two_numbers_or_every_token(tmp_path, tiny_policy):
    common = dict(models=[str(tiny_policy)], n=2, max_new_tokens=6, device="cpu", seed=1)
    stages.generate(tmp_path / "off", PROMPTS, GenerateConfig(**common))
    stages.generate(tmp_path / "on", PROMPTS, GenerateConfig(**common, top_logprobs=K, confidence_window=3))
    stages.generate(tmp_path / "all", PROMPTS, GenerateConfig(**common, top_logprobs=K, keep_logprobs=True))
    off, on, every = (shard_rows(tmp_path / name) for name in ("off", "on", "all"))
    assert [r["text"] for r in on] == [r["text"] for r in off]
    assert set(off[0]) == {"prompt_id", "sample_index", "model", "text", "num_tokens", "finish_reason"}
    assert set(on[0]) == set(off[0]) | {"mean_confidence", "lowest_group_confidence"}
    for row, full in zip(on, every, strict=True):
        assert len(full["token_logprobs"]) == len(full["token_confidence"]) == row["num_tokens"]
        assert row["mean_confidence"] == pytest.approx(float(np.mean(full["token_confidence"])), abs=1e-12)
        assert summarize(full["token_confidence"], 3)["lowest_group_confidence"] == pytest.approx(
            row["lowest_group_confidence"], abs=1e-12
        )


def test_confidence_off_keeps_the_stage_config_as_before():
    """A run dir sampled before these fields existed resumes: off, they are not in its config."""
    assert "top_logprobs" not in GenerateConfig().stage_config()
    assert GenerateConfig(top_logprobs=20).stage_config()["confidence_window"] == 32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"keep_logprobs": True}, "generate.keep_logprobs: needs top_logprobs (--top-logprobs K, e.g. 20)"),
        ({"confidence_window": 8}, "generate.confidence_window: needs top_logprobs (--top-logprobs K, e.g. 20)"),
        ({"top_logprobs": 1}, "generate.top_logprobs: must be 0 (off) or a number between 2 and 20, got 1"),
        ({"top_logprobs": 21}, "generate.top_logprobs: must be 0 (off) or a number between 2 and 20, got 21"),
    ],
)
def test_confidence_fields_refused_by_name(fields, message):
    with pytest.raises(WinnowError) as e:
        GenerateConfig(**fields).validate()
    assert str(e.value) == message


# --- what an OpenAI-compatible server returns ---------------------------------------------


def test_replies_read_chat_and_completions_logprobs():
    from winnow.replies import parse_choices

    chat = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "ab"}, "logprobs": {"content": [
        {"token": "a", "logprob": -0.5, "top_logprobs": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1.5}]},
        {"token": "b", "logprob": -2, "top_logprobs": [{"token": "c", "logprob": -1.0}, {"token": "b", "logprob": -2}]},
    ]}}]}  # fmt: skip
    got = parse_choices(chat, chat=True, max_tokens=4, top_logprobs=2)[0].logprobs
    assert got.sampled == (-0.5, -2.0) and got.confidence == (1.0, 1.5)
    text = {"choices": [{"index": 0, "finish_reason": "length", "text": "ab", "logprobs": {
        "tokens": ["a", "b"], "token_logprobs": [-0.5, -2.0], "top_logprobs": [{"a": -0.5, "b": -1.5, "z": -9.0}, {"c": -1.0}],
    }}]}  # fmt: skip
    got = parse_choices(text, chat=False, max_tokens=4, top_logprobs=2)[0].logprobs
    assert got.sampled == (-0.5, -2.0) and got.confidence == (1.0, 1.0)  # the 2 highest; one given, one used


@pytest.mark.parametrize(
    ("logprobs", "message"),
    [
        (None, "choice 0: no per-token logprobs, though 2 top log-probabilities were asked for"),
        ({"content": [{"logprob": -1.0, "top_logprobs": []}]}, "choice 0: token 0 has no top log-probabilities"),
        (
            {"content": [{"logprob": 0.5, "top_logprobs": [{"logprob": -1}]}]},
            "choice 0: token 0: logprob 0.5 is not a finite number <= 0",
        ),
        (
            {"content": [{"logprob": True, "top_logprobs": [{"logprob": -1}]}]},
            "choice 0: token 0: logprob true is not a finite number <= 0",
        ),
    ],
)
def test_replies_refuse_logprobs_a_server_invents(logprobs, message):
    from winnow.remote import InvalidReply
    from winnow.replies import parse_choices

    body = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "a"}, "logprobs": logprobs}]}
    with pytest.raises(InvalidReply) as e:
        parse_choices(body, chat=True, max_tokens=4, top_logprobs=2)
    assert str(e.value) == message


def test_vllm_logprobs_take_the_k_highest_beside_the_sampled_one():
    from types import SimpleNamespace as L

    from winnow.generate.vllm import token_logprobs

    steps = [{1: L(logprob=-0.25), 2: L(logprob=-2.75), 5: L(logprob=-6.0)}, {4: L(logprob=-1.0), 3: L(logprob=-3.0)}]
    got = token_logprobs([5, 3], steps, 2)  # sampled 5 is outside the top 2: vLLM adds it
    assert got.sampled == (-6.0, -3.0) and got.confidence == (1.5, 2.0)
    assert token_logprobs([5, 3], None, 0) is None
    with pytest.raises(WinnowError, match="vLLM returned no log-probabilities for 2 tokens, though 2 were asked for"):
        token_logprobs([5, 3], None, 2)
