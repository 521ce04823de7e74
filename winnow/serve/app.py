"""The FastAPI application: routes, bearer key, caps, batching and Best-of-N.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions``. Every error is the OpenAI error body with a matching status:
401 for a missing or wrong key, 400 for a cap exceeded, malformed JSON or an unknown
field, 404 for an unknown model, 429 (with Retry-After) when the queue is full.

A completions prompt is handed to the backend as a text prompt, which it renders as it
renders any text prompt (the ``hf`` backend applies the model's chat template when the
model has one), so ``--backend openai`` against this server samples what ``hf`` would.

Best-of-N mode (a reward is given): a request samples ``best_of`` candidates (the
request's, else the server's default, at least ``n``), scores them with the reward and
returns the ``n`` best, best first; each choice carries its ``reward`` and the body
``candidate_rewards`` (every candidate, in sampling order; None = unscored, ranked last).

The server keeps no state between requests beyond its queue: a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from winnow.config import ServeConfig
from winnow.errors import WinnowError
from winnow.generate import Backend, Sampling, check_sampling
from winnow.records import Completion, Prompt
from winnow.serve import schema
from winnow.serve.batcher import Batcher, QueueFull

log = logging.getLogger("winnow.serve")


class ApiError(Exception):
    """An answer in the OpenAI error format."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param=None, code=None, headers=None
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        detail = schema.ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return JSONResponse(schema.ErrorBody(error=detail).model_dump(), status_code=self.status, headers=self.headers)


@dataclass
class Outcome:
    """One request's result from the backend thread."""

    prompt_tokens: int
    candidates: list[Completion]
    rewards: list[float] | None
    """Best-of-N: one per candidate (NaN = unscored); None without a reward."""


def create_app(
    backend: Backend, config: ServeConfig, *, backend_name: str, reward=None, reward_name: str | None = None
) -> FastAPI:
    """The app over a built backend; ``reward`` (the reward contract) turns on Best-of-N."""
    served = config.served_model_name or config.model
    key = _api_key(config)
    created = int(time.time())
    batcher = Batcher(
        lambda prompts, sampling, seed: _work(backend, config, reward, reward_name, prompts, sampling, seed),
        window_s=config.batch_window_ms / 1000,
        max_batch=config.max_batch_prompts,
        max_queue=config.max_queue,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher.run_forever())
        yield  # uvicorn lets in-flight requests finish before it gets here on SIGTERM
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        batcher.close()

    app = FastAPI(title="winnow serve", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception):
        log.error("request failed: %s: %s", type(e).__name__, e)
        return ApiError(500, f"the backend failed: {type(e).__name__}", type="server_error").response()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": served, "queued": len(batcher.pending), "running": batcher.running}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        _authorize(request, key)
        return schema.ModelList(data=[schema.ModelCard(id=served, created=created)]).model_dump()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        _authorize(request, key)
        req = _parse(schema.ChatCompletionRequest, await _read_body(request, config.max_body_bytes))
        messages = tuple(m.model_dump() for m in req.messages)
        prompt = Prompt(id=f"chatcmpl-{uuid.uuid4().hex}", messages=messages)
        got, sampled = await _complete(req, prompt, req.max_tokens or req.max_completion_tokens)
        choices = [
            schema.ChatChoice(
                index=i,
                message=schema.AssistantMessage(content=c.text),
                finish_reason=c.finish_reason,
                num_tokens=c.num_tokens,
                reward=r,
            )
            for i, (c, r) in enumerate(sampled)
        ]
        body = schema.ChatCompletion(
            id=prompt.id, created=int(time.time()), model=served, choices=choices, **_extras(got)
        )
        return body.model_dump(exclude_none=reward is None)

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict:
        _authorize(request, key)
        req = _parse(schema.CompletionRequest, await _read_body(request, config.max_body_bytes))
        prompt = Prompt(id=f"cmpl-{uuid.uuid4().hex}", text=req.prompt)
        got, sampled = await _complete(req, prompt, req.max_tokens)
        choices = [
            schema.TextChoice(index=i, text=c.text, finish_reason=c.finish_reason, num_tokens=c.num_tokens, reward=r)
            for i, (c, r) in enumerate(sampled)
        ]
        body = schema.TextCompletion(
            id=prompt.id, created=int(time.time()), model=served, choices=choices, **_extras(got)
        )
        return body.model_dump(exclude_none=reward is None)

    async def _complete(req: schema.SamplingFields, prompt: Prompt, max_tokens: int | None):
        """Check the request against the caps, queue it, and pick the answers to return."""
        if req.model != served:
            raise ApiError(404, f"model {req.model!r} is not served here (it serves {served!r})", param="model",
                           code="model_not_found")  # fmt: skip
        sampling = _sampling(req, config, max_tokens, rewarded=reward is not None, backend_name=backend_name)
        if config.log_prompts:
            log.info("%s prompt: %r", prompt.id, prompt.content)
        try:
            got = await batcher.submit(sampling, prompt, req.seed)
        except QueueFull:
            raise ApiError(
                429,
                f"the server is busy ({config.max_queue} requests waiting); retry after {config.retry_after_s} s",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(config.retry_after_s)},
            ) from None
        if isinstance(got, ApiError):
            raise got
        return got, _pick(got, req.n)

    return app


def _extras(got: Outcome) -> dict:
    completion_tokens = sum(c.num_tokens for c in got.candidates)
    usage = schema.Usage(
        prompt_tokens=got.prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=got.prompt_tokens + completion_tokens,
    )
    extras: dict[str, Any] = {"usage": usage}
    if got.rewards is not None:
        extras["candidate_rewards"] = [None if math.isnan(r) else r for r in got.rewards]
    return extras


def _pick(got: Outcome, n: int) -> list[tuple[Completion, float | None]]:
    """The n answers to return: all n samples, or the n best candidates (NaN last, ties by index)."""
    if got.rewards is None:
        return [(c, None) for c in got.candidates[:n]]
    rewards = got.rewards
    order = sorted(range(len(got.candidates)), key=lambda j: (math.isnan(rewards[j]), -_or0(rewards[j]), j))
    return [(got.candidates[j], None if math.isnan(rewards[j]) else rewards[j]) for j in order[:n]]


def _or0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _sampling(
    req: schema.SamplingFields, config: ServeConfig, max_tokens: int | None, *, rewarded: bool, backend_name: str
) -> Sampling:
    """The request's sampling settings, each checked against its cap (400 naming the field)."""
    if req.stream:
        raise ApiError(400, "stream is not supported by this server", param="stream")
    if req.n > config.max_n:
        raise ApiError(400, f"n must be <= {config.max_n}, got {req.n}", param="n")
    if rewarded:
        k = req.best_of if req.best_of is not None else max(config.best_of, req.n)
        if k < req.n:
            raise ApiError(400, f"best_of ({k}) must be >= n ({req.n})", param="best_of")
        if k > config.max_best_of:
            raise ApiError(400, f"best_of must be <= {config.max_best_of}, got {k}", param="best_of")
    else:
        if req.best_of is not None and req.best_of != req.n:
            raise ApiError(400, "best_of needs a server started with a reward (Best-of-N mode)", param="best_of")
        k = req.n
    tokens = max_tokens if max_tokens is not None else config.default_max_tokens
    if tokens > config.max_tokens:
        raise ApiError(400, f"max_tokens must be <= {config.max_tokens}, got {tokens}", param="max_tokens")
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
    return sampling


def _work(
    backend: Backend, config: ServeConfig, reward, reward_name, prompts: list[Prompt], sampling: Sampling, seed: int
) -> list[Outcome | ApiError]:
    """In the backend thread: check prompt lengths, sample the batch, score it (Best-of-N)."""
    from winnow.rewards import call_reward

    lengths = backend.prompt_lengths(prompts)
    room = backend.context_length() - sampling.max_new_tokens
    out: list[Outcome | ApiError | None] = [None] * len(prompts)
    keep = []
    for i, length in enumerate(lengths):
        if length > config.max_prompt_tokens:
            out[i] = ApiError(
                400,
                f"the prompt has {length} tokens; at most {config.max_prompt_tokens} are accepted",
                param="messages",
            )
        elif length > room:
            out[i] = ApiError(
                400,
                f"the prompt has {length} tokens, and with max_tokens {sampling.max_new_tokens} it exceeds "
                f"the model's context of {backend.context_length()}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        else:
            keep.append(i)
    rows = backend.generate([prompts[i] for i in keep], sampling, seed) if keep else []
    n = sampling.n
    rewards: list[float] | None = None
    if reward is not None and rows:
        by_id = {p.id: p for p in prompts}
        rewards = call_reward(
            reward,
            reward_name or "reward",
            [by_id[c.prompt_id].content for c in rows],
            [c.text for c in rows],
            prompt_ids=[c.prompt_id for c in rows],
            sample_indices=[c.sample_index for c in rows],
        )
    for slot, i in enumerate(keep):
        part = rows[slot * n : (slot + 1) * n]
        assert all(c.prompt_id == prompts[i].id for c in part)  # rows come grouped by prompt, in order
        out[i] = Outcome(
            prompt_tokens=lengths[i],
            candidates=part,
            rewards=rewards[slot * n : (slot + 1) * n] if rewards is not None else None,
        )
    return out  # type: ignore[return-value]  # every slot is filled above


def _api_key(config: ServeConfig) -> bytes | None:
    if not config.api_key_env:
        return None
    import os

    key = os.environ.get(config.api_key_env)
    if not key:
        raise WinnowError(f"serve.api_key_env: environment variable {config.api_key_env} is not set or empty")
    return f"Bearer {key}".encode()


def _authorize(request: Request, expected: bytes | None) -> None:
    """Constant-time comparison of the Authorization header with ``Bearer <key>``."""
    if expected is None:
        return
    got = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(got, expected):
        raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(400, f"the request body is larger than {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(400, f"the request body is larger than {limit} bytes", code="request_too_large")
    return bytes(body)


def _parse(model: type[BaseModel], body: bytes):
    """Validate a JSON body against its pydantic model; malformed JSON or a bad field -> 400."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise ApiError(400, f"malformed JSON: {first['msg']}", code="invalid_json") from None
        param = ".".join(str(x) for x in first["loc"]) or None
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ApiError(400, f"{param}: {message}", param=param) from None
