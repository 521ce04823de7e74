"""Streaming with ``--backend openai``: the upstream server's stream relayed token by token.

Used when the answer is known as it is sampled (no reward, or ``best_of`` 1). The upstream
request is made before the response starts, so an upstream refusal is this request's error
status; the chunks are then re-framed as this server's (its id and model name, the same
framing as ``stream.Chunks``). With a reward and ``best_of`` 1, the one answer is scored
once it is complete and its reward rides on the finishing chunk. A client that leaves
closes the upstream stream, which stops the upstream's sampling for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from winnow import remote
from winnow.generate.contract import Sampling
from winnow.generate.openai_api import OpenAIBackend, extra_body
from winnow.records import Completion, Prompt
from winnow.replies import NO_REASON, finish_reason
from winnow.rewards import RewardTimeout
from winnow.serve import stream
from winnow.serve.reward import score_candidates
from winnow.serve.work import ApiError


async def relay(
    backend,
    config,
    reward,
    kind,
    req,
    prompt: Prompt,
    sampling: Sampling,
    served: str,
    metrics,
    arrived: float,
):
    """Open the upstream stream (errors here are this request's status) and return the events."""
    import openai

    assert isinstance(backend, OpenAIBackend)
    api = remote.make_client(backend.client)
    common: dict[str, Any] = dict(
        model=backend.model,
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        seed=req.seed,
        extra_body=extra_body(sampling) or None,
        stream=True,
        stream_options={"include_usage": True},
    )
    if sampling.stop:
        common["stop"] = list(sampling.stop)
    endpoint = "chat" if kind == "chat" else backend._endpoint_of(prompt)
    try:
        if endpoint == "chat":
            upstream = await api.chat.completions.create(messages=prompt.as_messages(), **common)
        else:
            upstream = await api.completions.create(prompt=prompt.text, **common)
    except openai.APIStatusError as e:
        await api.close()
        raise ApiError(
            e.status_code,
            f"the upstream server answered: {remote.describe(e)}",
            type="upstream_error",
            code="upstream_error",
        ) from None
    except openai.APIError as e:
        await api.close()
        raise ApiError(502, f"the upstream server failed: {type(e).__name__}", type="upstream_error") from None
    return _events(api, upstream, config, reward, kind, req, prompt, sampling, served, metrics, arrived)


async def _events(api, upstream, config, reward, kind, req, prompt, sampling, served, metrics, arrived):
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    chunks = stream.Chunks(kind, prompt.id, int(time.time()), served, include_usage)
    texts: dict[int, str] = {}
    finish: dict[int, str] = {}
    usage = None
    first: float | None = None
    try:
        if kind == "chat":
            for i in range(sampling.n):
                yield chunks.role(i)
        async for chunk in upstream:
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                delta = choice.delta.content if kind == "chat" else choice.text
                if delta:
                    first = first or time.perf_counter()
                    texts[choice.index] = texts.get(choice.index, "") + delta
                    yield chunks.delta(choice.index, delta)
                if choice.finish_reason is not None:
                    try:
                        finish[choice.index] = finish_reason(choice.finish_reason)
                    except remote.InvalidReply:  # mid-stream: the answer is already on its way
                        finish[choice.index] = NO_REASON
        rewards: list[float] | None = None
        if reward is not None:
            rows = [
                Completion(prompt.id, j, served, texts.get(j, ""), 0, finish.get(j, "stop")) for j in range(sampling.n)
            ]
            try:
                rewards = await asyncio.to_thread(score_candidates, reward, [prompt], rows)
            except RewardTimeout as e:
                yield stream.error(504, str(e), "server_error", "reward_timeout")
                yield stream.DONE
                return
        completion_tokens = usage.completion_tokens if usage is not None else 0
        for j in range(sampling.n):
            choice_extra: dict[str, Any] = {}
            if sampling.n == 1 and usage is not None:
                choice_extra["num_tokens"] = completion_tokens
            body_extra: dict[str, Any] = {}
            if rewards is not None:
                value = None if rewards[j] != rewards[j] else rewards[j]  # NaN = unscored
                choice_extra["reward"] = value
                body_extra["candidate_rewards"] = [value]
                if value is not None:
                    metrics.reward.observe(value)
            yield chunks.finish(j, finish.get(j, "stop"), choice_extra, body_extra)
        prompt_tokens = usage.prompt_tokens if usage is not None else 0
        if include_usage:
            yield chunks.usage(prompt_tokens, completion_tokens)
        yield stream.DONE
        now = time.perf_counter()
        metrics.candidates.inc(sampling.n)
        metrics.prompt_tokens.inc(prompt_tokens)
        metrics.completion_tokens.inc(completion_tokens)
        metrics.ttft.labels("true").observe((first or now) - arrived)
        metrics.latency.labels("true").observe(now - arrived)
    finally:
        await upstream.close()
        await api.close()
