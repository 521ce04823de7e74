"""What an answer is made of: the request's sampling checked against the caps, the
choices picked from the candidates, and the JSON body around them.

Everything here is pure (no I/O, no server state): a request's fields and the server's
``ServeConfig`` in, a ``Sampling``, a list of choices or a pydantic body out; a bad field
raises ``ApiError`` (400, naming the field).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel

from winnow import select
from winnow.config import ServeConfig
from winnow.config.generate import CONFIDENCE_WINDOW, MAX_TOP_LOGPROBS
from winnow.errors import WinnowError
from winnow.generate.contract import Sampling, check_sampling
from winnow.records import Completion, Prompt
from winnow.rewards.judge import render_prompt
from winnow.rewards.pick import Pick
from winnow.serve import schema
from winnow.serve.work import ApiError, Outcome

Picked = list[tuple[Completion, float | None]]
"""The choices to return, best first: each completion with its reward (None = unscored or
no reward)."""

AGGREGATES: tuple[str, ...] = tuple(dict.fromkeys((*select.AGGREGATES, "confidence")))
"""How a request may ask the answer to be chosen (``aggregate``): ``best`` = the
highest-reward candidates; ``majority`` and ``weighted`` = the vote over the candidates'
final answers, plain or reward-weighted (``winnow.select.aggregate``); ``confidence`` = the
vote weighted by each candidate's lowest group confidence (DeepConf: ``winnow.confidence``),
from ``CONFIDENCE_TOP`` top log-probabilities per token over windows of
``CONFIDENCE_WINDOW`` tokens. ``UNSERVED`` names those a server cannot do."""
CONFIDENCE_TOP = MAX_TOP_LOGPROBS
"""Top log-probabilities per token a ``confidence`` vote asks the backend for (DeepConf's 20)."""
UNSERVED: dict[str, str] = {
    "prm-weighted": "weighs votes by a process reward model's scores apart from the other rewards, which "
    "winnow bon does; a server sums its rewards: serve with --prm-model as the only reward and ask for weighted",
}
"""Aggregates a server cannot do, each with why (the end of a sentence)."""
SELECT_BY: tuple[str, ...] = ("reward", "judge")
"""What may pick a request's answer (``select_by``): ``reward`` = ``aggregate``'s choice;
``judge`` = the tournament of the judge the server was started with (``winnow.rewards.pick``):
its pick first, then the rest by reward."""


def body(
    kind: str,
    id: str,
    served: str,
    got: Outcome,
    picked: Picked,
    *,
    listing: bool = False,
    logprobs: int | None = None,
    tokenizer=None,
    verdict: Pick | None = None,
    judge_usage: schema.JudgeUsage | None = None,
) -> BaseModel:
    """The JSON answer: a chat completion or a text completion with the picked choices
    (``listing``: and every candidate, ``listed``, ``verdict`` being the judge's tournament where
    a judge picked; ``logprobs``, the top log-probabilities asked per token: each choice's,
    its tokens named by ``tokenizer``; ``judge_usage``, the judge's tokens where it picked)."""
    created = int(time.time())
    more = extras(got) | (listed(got, picked, verdict) if listing else {}) | {"judge_usage": judge_usage}
    if kind == "chat":
        chat = [
            schema.ChatChoice.model_validate(
                dict(
                    index=i,
                    message=schema.AssistantMessage(content=c.text),
                    finish_reason=c.finish_reason,
                    num_tokens=c.num_tokens,
                    reward=r,
                    logprobs=chat_logprobs(c, logprobs, tokenizer) if logprobs is not None else None,
                )
            )
            for i, (c, r) in enumerate(picked)
        ]
        return schema.ChatCompletion(id=id, created=created, model=served, choices=chat, **more)
    text = [
        schema.TextChoice.model_validate(
            dict(
                index=i,
                text=c.text,
                finish_reason=c.finish_reason,
                num_tokens=c.num_tokens,
                reward=r,
                logprobs=text_logprobs(c, logprobs, tokenizer) if logprobs is not None else None,
            )
        )
        for i, (c, r) in enumerate(picked)
    ]
    return schema.TextCompletion(id=id, created=created, model=served, choices=text, **more)


LOGPROB_FLOOR = -9999.0
"""A log-probability of -inf (a token the model rules out) as OpenAI writes it: JSON has no -inf."""


def chat_logprobs(c: Completion, k: int, tokenizer) -> schema.ChatLogprobs | None:
    """A chat choice's ``logprobs``: each token, its log-probability and its k most likely alternatives."""
    lp = c.logprobs
    if lp is None:
        return None

    def entry(token: int, value: float) -> dict:
        text = tokenizer.decode([token])
        return {"token": text, "logprob": max(value, LOGPROB_FLOOR), "bytes": list(text.encode("utf-8"))}

    content = [
        schema.TokenLogprob(**entry(t, x), top_logprobs=[schema.TopLogprob(**entry(i, y)) for i, y in top[:k]])
        for t, x, top in zip(lp.tokens, lp.sampled, lp.top, strict=True)
    ]
    return schema.ChatLogprobs(content=content)


def text_logprobs(c: Completion, k: int, tokenizer) -> schema.TextLogprobs | None:
    """A text choice's ``logprobs``: tokens, their log-probabilities, the k most likely alternatives
    of each (by token text), and where each token starts in the text."""
    lp = c.logprobs
    if lp is None:
        return None
    tokens = [tokenizer.decode([t]) for t in lp.tokens]
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return schema.TextLogprobs(
        tokens=tokens,
        token_logprobs=[max(x, LOGPROB_FLOOR) for x in lp.sampled],
        top_logprobs=[{tokenizer.decode([i]): max(y, LOGPROB_FLOOR) for i, y in top[:k]} for top in lp.top],
        text_offset=offsets,
    )


def check_aggregate(name: str | None, *, rewarded: bool) -> None:
    """A 400 naming ``aggregate`` for a name not in ``AGGREGATES`` or one a server cannot do."""
    if name is None:
        return
    if name not in AGGREGATES:
        raise ApiError(400, f"aggregate must be one of {', '.join(AGGREGATES)}, got {name!r}", param="aggregate")
    if name in UNSERVED:
        raise ApiError(400, f"aggregate {name!r} {UNSERVED[name]}", param="aggregate", code="aggregate_not_available")
    if not rewarded:
        raise ApiError(400, "aggregate needs a server started with a reward (Best-of-N mode)", param="aggregate")


def choose(name: str | None, got: Outcome, n: int) -> Picked:
    """The n answers to return, chosen as ``aggregate`` says (default and ``best``: ``pick``)."""
    from winnow.select import aggregate

    rewards = got.rewards if got.rewards is not None else [math.nan] * len(got.candidates)
    match name:
        case None | "best":
            return pick(got, n)
        case "majority" | "weighted":
            # the vote's winner first, then the rest by reward (a vote names one answer; n > 1 asks for more)
            return led_by(got, aggregate([c.text for c in got.candidates], rewards, name), n)
        case "confidence":
            # the vote's winner, each candidate weighing its lowest group confidence (DeepConf)
            weights = [confidence_of(c) for c in got.candidates]
            return led_by(got, aggregate([c.text for c in got.candidates], rewards, name, confidence=weights), n)
        case _:  # refused in check_aggregate
            raise ApiError(400, f"aggregate {name!r} is not available", param="aggregate")


def led_by(got: Outcome, chosen: int, n: int) -> Picked:
    """The n answers to return with candidate ``chosen`` first (a vote's or a judge's), then
    the rest by reward; by reward alone when ``chosen`` is -1 (no winner)."""
    ranked = pick(got, len(got.candidates))
    if chosen < 0:
        return ranked[:n]
    first = got.candidates[chosen]
    return ([x for x in ranked if x[0] is first] + [x for x in ranked if x[0] is not first])[:n]


def check_select_by(name: str | None, aggregate: str | None, *, rewarded: bool, judged: bool) -> str:
    """What picks the request's answer (``select_by``, else the server's: ``judge`` where it was
    started with one); a 400 naming ``select_by`` for a name not in ``SELECT_BY``, a judge the
    server lacks, or any choice without a reward, and naming ``aggregate`` for a vote beside a judge."""
    if name is not None and name not in SELECT_BY:
        raise ApiError(400, f"select_by must be one of {', '.join(SELECT_BY)}, got {name!r}", param="select_by")
    if name is not None and not rewarded:
        raise ApiError(400, "select_by needs a server started with a reward (Best-of-N mode)", param="select_by")
    if name == "judge" and not judged:
        raise ApiError(
            400,
            "select_by judge needs a server started with a judge that picks "
            "(--select-by judge --pick-judge URL --pick-model NAME)",
            param="select_by",
        )
    chosen = name or ("judge" if judged else "reward")
    if chosen == "judge" and aggregate not in (None, "best"):
        raise ApiError(
            400,
            f"aggregate {aggregate!r} votes, and a judge picks in place of a vote: ask select_by reward to vote",
            param="aggregate",
        )
    return chosen


def judge_key(seed: int | None, content) -> str:
    """What seeds the order a judge is shown a request's candidates in (with ``pick.seed``):
    the request's seed and prompt, so one request asked twice is judged in one order.

    >>> judge_key(1, "q") == judge_key(1, "q") != judge_key(2, "q"), len(judge_key(None, "q"))
    (True, 16)
    """
    return hashlib.sha256(f"{seed}\n{render_prompt(content)}".encode()).hexdigest()[:16]


def confidence_of(c: Completion) -> float:
    """A candidate's lowest group confidence over ``CONFIDENCE_WINDOW`` tokens (what its vote
    weighs); NaN when it was sampled without log-probabilities or has no token.

    >>> from winnow.confidence import TokenLogprobs
    >>> confidence_of(Completion("p", 0, "m", "= 4", 3, "stop", TokenLogprobs((-0.1,) * 3, (2.0, 4.0, 3.0))))
    3.0
    """
    from winnow.confidence import WEIGHT, summarize

    if c.logprobs is None:
        return math.nan
    value = summarize(c.logprobs.confidence, CONFIDENCE_WINDOW)[WEIGHT]
    return math.nan if value is None else value


def extras(got: Outcome) -> dict:
    completion_tokens = sum(c.num_tokens for c in got.candidates)
    usage = schema.Usage(
        prompt_tokens=got.prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=got.prompt_tokens + completion_tokens,
    )
    out: dict[str, Any] = {"usage": usage}
    if got.rewards is not None:
        out["candidate_rewards"] = [None if math.isnan(r) else r for r in got.rewards]
    return out


def listed(got: Outcome, picked: Picked, verdict: Pick | None = None) -> dict[str, Any]:
    """``return_candidates``: every candidate in sampling order, ``selected_index``, the place
    among them of the first choice (found by identity: two candidates may share a text), and
    ``selected_by``; where a judge picked (``verdict``), whether the highest reward picks the
    same candidate (``judge_agrees``; None when none is scored) and the judge's calls."""
    rewards = got.rewards if got.rewards is not None else [math.nan] * len(got.candidates)
    steps = got.step_scores if got.step_scores is not None else [None] * len(got.candidates)
    candidates = [
        schema.Candidate(
            index=j,
            text=c.text,
            finish_reason=c.finish_reason,
            num_tokens=c.num_tokens,
            reward=None if math.isnan(r) else r,
            step_scores=s,
            confidence=None if math.isnan(confidence_of(c)) else confidence_of(c),
        )
        for j, (c, r, s) in enumerate(zip(got.candidates, rewards, steps, strict=True))
    ]
    first = picked[0][0]
    selected = next(j for j, c in enumerate(got.candidates) if c is first)
    out: dict[str, Any] = {"candidates": candidates, "selected_index": selected, "selected_by": "reward"}
    if verdict is not None:
        scored = any(not math.isnan(r) for r in rewards)
        reward_pick = next(j for j, c in enumerate(got.candidates) if c is pick(got, 1)[0][0])
        out |= {"selected_by": "judge", "judge_agrees": reward_pick == selected if scored else None}
        out["judge_calls"] = verdict.calls
    return out


def pick(got: Outcome, n: int) -> Picked:
    """The n answers to return: all n samples, or the n best candidates (NaN last, ties by index)."""
    if got.rewards is None:
        return [(c, None) for c in got.candidates[:n]]
    rewards = got.rewards
    order = sorted(range(len(got.candidates)), key=lambda j: (math.isnan(rewards[j]), -_or0(rewards[j]), j))
    return [(got.candidates[j], None if math.isnan(rewards[j]) else rewards[j]) for j in order[:n]]


def _or0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def candidates_count(req: schema.SamplingFields, config: ServeConfig, tokens: int) -> int:
    """Best-of-N: how many candidates to sample: the request's ``best_of`` (else the server's,
    at least ``n``), capped by its ``budget`` at ``budget // max_tokens`` whole candidates.

    The budget counts each candidate at its worst case (``tokens``, its ``max_tokens``), so
    what is sampled never passes it whatever the lengths turn out to be; a candidate's
    ``max_tokens`` is never cut to fit more of them (a cut answer loses its final line)."""
    k = req.best_of if req.best_of is not None else max(config.best_of, req.n)
    if k < req.n:
        raise ApiError(400, f"best_of ({k}) must be >= n ({req.n})", param="best_of")
    if k > config.max_best_of:
        raise ApiError(400, f"best_of must be <= {config.max_best_of}, got {k}", param="best_of")
    if req.budget is None:
        return k
    if req.budget < req.n * tokens:
        raise ApiError(
            400,
            f"budget must be >= n * max_tokens ({req.n} * {tokens} = {req.n * tokens}), got {req.budget}",
            param="budget",
        )
    return min(k, req.budget // tokens)


def plain_count(req: schema.SamplingFields) -> int:
    """Without a reward: ``n`` samples; every Best-of-N field is refused by name."""
    if req.best_of is not None and req.best_of != req.n:
        raise ApiError(400, "best_of needs a server started with a reward (Best-of-N mode)", param="best_of")
    for name in ("budget", "return_candidates"):
        if getattr(req, name) not in (None, False):
            raise ApiError(400, f"{name} needs a server started with a reward (Best-of-N mode)", param=name)
    return req.n


def sampling_of(
    req: schema.SamplingFields, config: ServeConfig, max_tokens: int | None, *, rewarded: bool, backend_name: str
) -> Sampling:
    """The request's sampling settings, each checked against its cap (400 naming the field)."""
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "stream_options needs stream: true", param="stream_options")
    if req.n > config.max_n:
        raise ApiError(400, f"n must be <= {config.max_n}, got {req.n}", param="n")
    tokens = max_tokens if max_tokens is not None else config.default_max_tokens
    if tokens > config.max_tokens:
        raise ApiError(400, f"max_tokens must be <= {config.max_tokens}, got {tokens}", param="max_tokens")
    k = candidates_count(req, config, tokens) if rewarded else plain_count(req)
    sampling = Sampling(
        n=k,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        max_new_tokens=tokens,
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        stop=req.stop_strings(),
    )
    try:
        check_sampling(backend_name, sampling)
    except WinnowError as e:
        raise ApiError(400, str(e).split(": ", 1)[-1], param=str(e).split(":", 1)[0].split(".")[-1]) from None
    if req.aggregate == "confidence":  # the vote weighs each candidate's confidence
        sampling = replace(sampling, top_logprobs=max(sampling.top_logprobs, CONFIDENCE_TOP))
    return with_logprobs(req, sampling, backend_name)


def with_logprobs(req: schema.SamplingFields, sampling: Sampling, backend_name: str) -> Sampling:
    """``sampling`` asking the backend for the log-probabilities the request wants (at least
    one top one: the contract's confidence needs it), or refused by name."""
    if isinstance(req, schema.ChatCompletionRequest) and req.top_logprobs and not req.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    asked = req.asked_logprobs()
    if asked is None:
        return sampling
    if req.stream:
        raise ApiError(400, "logprobs is not available with stream: true", param="logprobs")
    if backend_name != "hf":
        raise ApiError(
            400, f"logprobs needs a server on the hf backend (this one runs {backend_name})", param="logprobs"
        )
    return replace(sampling, top_logprobs=max(asked, 1, sampling.top_logprobs), top_tokens=True)


Kind = Literal["chat", "text"]
"""``chat`` for ``/v1/chat/completions``, ``text`` for ``/v1/completions``: the shape of
the answer."""


@dataclass(frozen=True)
class Asked:
    """One request as its route read it: what every later step needs of it."""

    kind: Kind
    req: schema.SamplingFields
    prompt: Prompt
    max_tokens: int | None
    """The request's ``max_tokens`` (or ``max_completion_tokens``); None = the server's default."""
    arrived: float
    """``time.perf_counter()`` at arrival: where latency and time to first token start."""

    @property
    def include_usage(self) -> bool:
        """A streamed answer ends with a usage chunk (``stream_options.include_usage``)."""
        return bool(self.req.stream_options and self.req.stream_options.include_usage)
