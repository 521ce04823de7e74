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
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from winnow import remote
from winnow.generate.contract import Sampling
from winnow.generate.openai_api import OpenAIBackend, extra_body
from winnow.records import Completion
from winnow.replies import NO_REASON, finish_reason
from winnow.rewards import RewardTimeout
from winnow.rewards.apply import RewardApplier
from winnow.serve import stream
from winnow.serve.answer import Asked
from winnow.serve.metrics import Metrics
from winnow.serve.reward import score_candidates
from winnow.serve.work import ApiError


@dataclass(frozen=True)
class Relay:
    """One streamed request relayed to the upstream server, and what answers it."""

    backend: OpenAIBackend
    asked: Asked
    sampling: Sampling
    """The request's sampling, checked against the caps (``n`` answers, each streamed)."""
    served: str
    """The model name the chunks carry (this server's, not the upstream's)."""
    reward: RewardApplier | None
    """Best-of-N mode with ``best_of`` 1: the one answer is scored once complete."""
    metrics: Metrics


@dataclass
class Received:
    """What the upstream stream has sent so far, by choice index."""

    texts: dict[int, str] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    usage: Any = None
    """The upstream's usage chunk (``prompt_tokens``, ``completion_tokens``); None until it comes."""
    first_at: float | None = None
    """``time.perf_counter()`` at the first content byte."""


async def relay(r: Relay) -> AsyncGenerator[bytes, None]:
    """Open the upstream stream (errors here are this request's status) and return the events."""
    import openai

    api = remote.make_client(r.backend.client)
    try:
        upstream = await _open(api, r)
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
    return _events(api, upstream, r)


async def _open(api: Any, r: Relay) -> Any:
    """The upstream's stream of chunks, from the endpoint the backend would sample the prompt on."""
    sampling, prompt = r.sampling, r.asked.prompt
    common: dict[str, Any] = dict(
        model=r.backend.model,
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        seed=r.asked.req.seed,
        extra_body=extra_body(sampling) or None,
        stream=True,
        stream_options={"include_usage": True},
    )
    if sampling.stop:
        common["stop"] = list(sampling.stop)
    endpoint = "chat" if r.asked.kind == "chat" else r.backend.endpoint_of(prompt)
    if endpoint == "chat":
        return await api.chat.completions.create(messages=prompt.as_messages(), **common)
    return await api.completions.create(prompt=prompt.text, **common)


async def _events(api: Any, upstream: Any, r: Relay) -> AsyncGenerator[bytes, None]:
    chunks = stream.Chunks(r.asked.kind, r.asked.prompt.id, int(time.time()), r.served, r.asked.include_usage)
    got = Received()
    try:
        if r.asked.kind == "chat":
            for i in range(r.sampling.n):
                yield chunks.role(i)
        async for chunk in upstream:
            for event in _received(chunk, r.asked.kind, chunks, got):
                yield event
        try:
            rewards = await _scored(r, got)
        except RewardTimeout as e:
            yield stream.error(504, str(e), "server_error", "reward_timeout")
            yield stream.DONE
            return
        completion_tokens = got.usage.completion_tokens if got.usage is not None else 0
        for j in range(r.sampling.n):
            yield _finish(chunks, r, got, j, rewards)
        prompt_tokens = got.usage.prompt_tokens if got.usage is not None else 0
        if r.asked.include_usage:
            yield chunks.usage(prompt_tokens, completion_tokens)
        yield stream.DONE
        r.metrics.answered(
            candidates=r.sampling.n,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            rewards=rewards or [],
            arrived=r.asked.arrived,
            streamed=True,
            first_at=got.first_at,
        )
    finally:
        await upstream.close()
        await api.close()


def _received(chunk: Any, kind: str, chunks: stream.Chunks, got: Received) -> list[bytes]:
    """One upstream chunk noted in ``got``; the deltas it carries, re-framed as this server's."""
    out = []
    if getattr(chunk, "usage", None) is not None:
        got.usage = chunk.usage
    for choice in chunk.choices:
        delta = choice.delta.content if kind == "chat" else choice.text
        if delta:
            got.first_at = got.first_at or time.perf_counter()
            got.texts[choice.index] = got.texts.get(choice.index, "") + delta
            out.append(chunks.delta(choice.index, delta))
        if choice.finish_reason is not None:
            try:
                got.finish[choice.index] = finish_reason(choice.finish_reason)
            except remote.InvalidReply:  # mid-stream: the answer is already on its way
                got.finish[choice.index] = NO_REASON
    return out


async def _scored(r: Relay, got: Received) -> list[float | None] | None:
    """Each answer's reward (None = unscored), scored once complete; None without a reward."""
    if r.reward is None:
        return None
    prompt = r.asked.prompt
    rows = [
        Completion(prompt.id, j, r.served, got.texts.get(j, ""), 0, got.finish.get(j, "stop"))
        for j in range(r.sampling.n)
    ]
    totals = await asyncio.to_thread(score_candidates, r.reward, [prompt], rows)
    return [None if x != x else x for x in totals]  # NaN = unscored


def _finish(chunks: stream.Chunks, r: Relay, got: Received, j: int, rewards: list[float | None] | None) -> bytes:
    """Choice ``j``'s finishing chunk: ``num_tokens`` when it is the only one; ``reward``."""
    choice_extra: dict[str, Any] = {}
    if r.sampling.n == 1 and got.usage is not None:
        choice_extra["num_tokens"] = got.usage.completion_tokens
    body_extra: dict[str, Any] = {}
    if rewards is not None:
        choice_extra["reward"] = rewards[j]
        body_extra["candidate_rewards"] = [rewards[j]]
    return chunks.finish(j, got.finish.get(j, "stop"), choice_extra, body_extra)
