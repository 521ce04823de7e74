"""The FastAPI application: routes, bearer key, caps, batching, streaming and Best-of-N.

Routes: ``GET /health``, ``GET /metrics``, ``GET /v1/models``, ``POST /v1/chat/completions``
and ``POST /v1/completions``. Every error is the OpenAI error body with a matching status:
401 for a missing or wrong key, 400 for a bad field or a cap exceeded (naming the field),
404 for an unknown model or path, 405 for a wrong method, 429 (with Retry-After) when the
queue is full, 504 when the reward overran its time limit. There are no /docs or
/openapi.json pages.

A completions prompt is handed to the backend as a text prompt, which it renders as it
renders any text prompt (the ``hf`` backend applies the model's chat template when the
model has one), so ``--backend openai`` against this server samples what ``hf`` would.

Best-of-N mode (a reward is given): a request samples ``best_of`` candidates (the
request's, else the server's default, at least ``n``), scores them with the reward and
returns the ``n`` best, best first; each choice carries its ``reward`` and the body
``candidate_rewards`` (every candidate, in sampling order; None = unscored, ranked last).

Streaming (``stream: true``): when the answer is known as it is sampled (no reward, or
``best_of`` 1) its tokens are streamed as the backend samples them (``hf``: from the
decode loop; ``openai``: the upstream's stream relayed). With ``best_of`` > 1 nothing can
be sent before every candidate is scored: the server sends SSE comment keep-alives every
``keepalive_s`` meanwhile, then the chosen answers as deltas (see ``stream``).

A client that goes away cancels its request: out of the queue at once, and (``hf``) its
rows stop at the next decode step. The server keeps no state between requests beyond its
queue: a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from winnow.config import ServeConfig
from winnow.errors import WinnowError
from winnow.generate.contract import Backend, Sampling, check_sampling
from winnow.records import Completion, Prompt
from winnow.rewards.apply import RewardApplier
from winnow.serve import schema, stream
from winnow.serve.batcher import Batcher, Job, QueueFull
from winnow.serve.metrics import CountStatus, Metrics
from winnow.serve.work import ApiError, Outcome, Ticket, work

log = logging.getLogger("winnow.serve")

AGGREGATES: dict[str, bool] = {"best": True, "majority": True, "weighted": True}
"""How a request may ask the answer to be chosen (``aggregate``), and whether this server
does it: ``best`` = the highest-reward candidates; ``majority`` and ``weighted`` = the vote
over the candidates' final answers, plain or reward-weighted (``winnow.select.aggregate``)."""


def error_response(e: ApiError) -> JSONResponse:
    detail = schema.ErrorDetail(message=e.message, type=e.type, param=e.param, code=e.code)
    return JSONResponse(schema.ErrorBody(error=detail).model_dump(), status_code=e.status, headers=e.headers)


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


def create_app(
    backend: Backend, config: ServeConfig, *, backend_name: str, reward: RewardApplier | None = None
) -> FastAPI:
    """The app over a built backend; ``reward`` (the score stage's applier) turns on Best-of-N."""
    served = config.served_model_name or config.model
    key = _api_key(config)
    created = int(time.time())
    batcher = Batcher(
        lambda tickets, sampling, seed: work(backend, config, reward, tickets, sampling, seed),
        window_s=config.batch_window_ms / 1000,
        max_batch=config.max_batch_prompts,
        max_queue=config.max_queue,
    )
    metrics = Metrics(lambda: len(batcher.pending), lambda: batcher.running)
    batcher.on_batch = metrics.batch_size.observe

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher.run_forever())
        yield  # uvicorn lets in-flight requests finish (up to its grace period) before it gets here
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        batcher.close()

    app = FastAPI(title="winnow serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.backend = backend
    app.state.metrics = metrics
    app.add_middleware(CountStatus, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        """Unknown paths and methods answer in the OpenAI error body too."""
        if e.status_code == 404:
            message = f"no route {request.url.path} (this server has /v1/chat/completions, /v1/completions, /v1/models)"
            return error_response(ApiError(404, message, code="unknown_url"))
        if e.status_code == 405:
            return error_response(
                ApiError(
                    405,
                    f"method {request.method} is not allowed on {request.url.path}",
                    code="method_not_allowed",
                    headers=dict(e.headers or {}),
                )
            )
        return error_response(ApiError(e.status_code, str(e.detail)))

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception):
        log.error("request failed: %s: %s", type(e).__name__, e)
        return error_response(ApiError(500, f"the backend failed: {type(e).__name__}", type="server_error"))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": served, "queued": len(batcher.pending), "running": batcher.running}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not config.metrics_public:
            _authorize(request, key)
        from winnow.serve.metrics import CONTENT_TYPE

        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        _authorize(request, key)
        return schema.ModelList(data=[schema.ModelCard(id=served, created=created)]).model_dump()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        arrived = time.perf_counter()
        _authorize(request, key)
        req = _parse(schema.ChatCompletionRequest, await _read_body(request, config.max_body_bytes))
        messages = tuple(m.model_dump() for m in req.messages)
        prompt = Prompt(id=f"chatcmpl-{uuid.uuid4().hex}", messages=messages)
        return await _answer(request, "chat", req, prompt, req.max_tokens or req.max_completion_tokens, arrived)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        arrived = time.perf_counter()
        _authorize(request, key)
        req = _parse(schema.CompletionRequest, await _read_body(request, config.max_body_bytes))
        prompt = Prompt(id=f"cmpl-{uuid.uuid4().hex}", text=req.prompt)
        return await _answer(request, "text", req, prompt, req.max_tokens, arrived)

    async def _answer(request: Request, kind: str, req, prompt: Prompt, max_tokens: int | None, arrived: float):
        """Check the request, queue it, and answer: a JSON body, or an event stream."""
        if req.model != served:
            raise ApiError(
                404,
                f"model {req.model!r} is not served here (it serves {served!r})",
                param="model",
                code="model_not_found",
            )
        sampling = _sampling(req, config, max_tokens, rewarded=reward is not None, backend_name=backend_name)
        _check_aggregate(req.aggregate, rewarded=reward is not None)
        if config.log_prompts:
            log.info("%s prompt: %r", prompt.id, prompt.content)
        live = reward is None or sampling.n == 1
        if req.stream and live and backend_name == "openai":
            return await _relayed(kind, req, prompt, sampling, arrived)
        ticket = Ticket(prompt, live=req.stream and live)
        if req.stream:
            ticket.loop, ticket.events = asyncio.get_running_loop(), asyncio.Queue()
        job = _enqueue(sampling, ticket, req.seed)
        if req.stream:
            events = _events(kind, req, prompt, ticket, job, arrived)
            return StreamingResponse(events, media_type=stream.MEDIA_TYPE, headers=stream.HEADERS)
        try:
            got = await _wait(request, ticket, job)
        except ClientGone:
            return Response(status_code=499)
        picked = _aggregate(req.aggregate, got, req.n)
        _count(got, picked, arrived, streamed=False)
        body = _body(kind, prompt.id, served, got, picked)
        return body.model_dump(exclude_none=reward is None)

    def _busy() -> ApiError:
        return ApiError(
            429,
            f"the server is busy ({config.max_queue} requests waiting); retry after {config.retry_after_s} s",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(config.retry_after_s)},
        )

    def _enqueue(sampling: Sampling, ticket: Ticket, seed: int | None) -> Job:
        try:
            return batcher.enqueue(sampling, ticket, seed)
        except QueueFull:
            raise _busy() from None

    relays = [0]  # upstream streams being relayed: they skip the batcher, so they are capped here

    async def _relayed(kind: str, req, prompt: Prompt, sampling: Sampling, arrived: float) -> StreamingResponse:
        from winnow.serve.relay import relay

        if relays[0] >= config.max_queue:
            raise _busy()
        relays[0] += 1
        try:
            events = await relay(backend, config, reward, kind, req, prompt, sampling, served, metrics, arrived)
        except BaseException:
            relays[0] -= 1
            raise

        async def counted():
            try:
                async for event in events:
                    yield event
            finally:
                relays[0] -= 1
                await events.aclose()  # closes the upstream stream if the client left between events

        return StreamingResponse(counted(), media_type=stream.MEDIA_TYPE, headers=stream.HEADERS)

    async def _wait(request: Request, ticket: Ticket, job: Job) -> Outcome:
        """The request's outcome, or ``ClientGone`` (its work cancelled) if the client leaves first."""
        waiter = asyncio.ensure_future(batcher.wait(job))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not waiter.done():  # the client left, or this handler is being cancelled
                ticket.cancelled = True
                waiter.cancel()
        if not waiter.done() or waiter.cancelled():
            raise ClientGone
        return _outcome(waiter.result())

    async def _events(kind: str, req, prompt: Prompt, ticket: Ticket, job: Job, arrived: float):
        """The SSE stream of one request served through the batcher."""
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        chunks = stream.Chunks(kind, prompt.id, int(time.time()), served, include_usage)
        assert ticket.events is not None
        waiter = asyncio.ensure_future(batcher.wait(job))
        sent: dict[int, str] = {}  # sample index -> text streamed so far (live)
        first: list[float] = []
        getter: asyncio.Future | None = None
        try:
            if kind == "chat":
                for i in range(req.n):
                    yield chunks.role(i)
            while not waiter.done() or not ticket.events.empty():
                if ticket.events.empty():
                    getter = asyncio.ensure_future(ticket.events.get())
                    done, _ = await asyncio.wait(
                        {waiter, getter}, timeout=config.keepalive_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not getter.done():
                        getter.cancel()
                        if not done:
                            yield stream.KEEPALIVE
                        continue
                    sample, delta = getter.result()
                else:
                    sample, delta = ticket.events.get_nowait()
                sent[sample] = sent.get(sample, "") + delta
                first = first or [time.perf_counter()]
                yield chunks.delta(sample, delta)
            try:
                got = _outcome(waiter.result())
            except ApiError as e:
                yield stream.error(e.status, e.message, e.type, e.code)
                yield stream.DONE
                return
            except Exception as e:  # noqa: BLE001 -- the 200 is sent: the error goes in the stream
                log.error("request failed: %s: %s", type(e).__name__, e)
                yield stream.error(500, f"the backend failed: {type(e).__name__}", "server_error", None)
                yield stream.DONE
                return
            picked = _aggregate(req.aggregate, got, req.n)
            extras = _extras(got)
            for index, (c, r) in enumerate(picked):
                done_text = sent.get(index, "") if ticket.live else ""
                if not c.text.startswith(done_text):  # cannot happen with hf._StepWatch's rules; say so if it does
                    log.warning("%s: streamed text is not a prefix of the final text", prompt.id)
                rest = c.text[len(done_text) :] if c.text.startswith(done_text) else ""
                for piece in stream.pieces(rest):
                    first = first or [time.perf_counter()]
                    yield chunks.delta(index, piece)
                choice_extra: dict[str, Any] = {"num_tokens": c.num_tokens}
                body_extra: dict[str, Any] = {}
                if reward is not None:
                    choice_extra["reward"] = r
                    if index == len(picked) - 1:
                        body_extra["candidate_rewards"] = extras["candidate_rewards"]
                yield chunks.finish(index, c.finish_reason, choice_extra, body_extra)
            if include_usage:
                usage = extras["usage"]
                yield chunks.usage(usage.prompt_tokens, usage.completion_tokens)
            yield stream.DONE
            _count(got, picked, arrived, streamed=True, first_at=first[0] if first else None)
        finally:
            if getter is not None:
                getter.cancel()
            if not waiter.done():  # the client left mid-stream: stop its work
                ticket.cancelled = True
                waiter.cancel()

    def _count(got: Outcome, picked, arrived: float, *, streamed: bool, first_at: float | None = None) -> None:
        now = time.perf_counter()
        label = "true" if streamed else "false"
        metrics.candidates.inc(len(got.candidates))
        metrics.prompt_tokens.inc(got.prompt_tokens)
        metrics.completion_tokens.inc(sum(c.num_tokens for c in got.candidates))
        metrics.ttft.labels(label).observe((first_at or now) - arrived)
        metrics.latency.labels(label).observe(now - arrived)
        for _, r in picked:
            if r is not None:
                metrics.reward.observe(r)

    return app


def _body(kind: str, id: str, served: str, got: Outcome, picked: list[tuple[Completion, Any]]) -> BaseModel:
    """The JSON answer: a chat completion or a text completion with the picked choices."""
    created = int(time.time())
    if kind == "chat":
        chat = [
            schema.ChatChoice.model_validate(
                dict(
                    index=i,
                    message=schema.AssistantMessage(content=c.text),
                    finish_reason=c.finish_reason,
                    num_tokens=c.num_tokens,
                    reward=r,
                )
            )
            for i, (c, r) in enumerate(picked)
        ]
        return schema.ChatCompletion(id=id, created=created, model=served, choices=chat, **_extras(got))
    text = [
        schema.TextChoice.model_validate(
            dict(index=i, text=c.text, finish_reason=c.finish_reason, num_tokens=c.num_tokens, reward=r)
        )
        for i, (c, r) in enumerate(picked)
    ]
    return schema.TextCompletion(id=id, created=created, model=served, choices=text, **_extras(got))


def _outcome(result: Outcome | ApiError) -> Outcome:
    if isinstance(result, ApiError):
        raise result
    return result


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read by then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _check_aggregate(name: str | None, *, rewarded: bool) -> None:
    if name is None:
        return
    if name not in AGGREGATES:
        raise ApiError(400, f"aggregate must be one of {', '.join(AGGREGATES)}, got {name!r}", param="aggregate")
    if not AGGREGATES[name]:
        served = ", ".join(k for k, on in AGGREGATES.items() if on)
        raise ApiError(
            400,
            f"aggregate {name!r} is not available on this server yet (available: {served})",
            param="aggregate",
            code="aggregate_not_available",
        )
    if not rewarded:
        raise ApiError(400, "aggregate needs a server started with a reward (Best-of-N mode)", param="aggregate")


def _aggregate(name: str | None, got: Outcome, n: int) -> list[tuple[Completion, float | None]]:
    """The n answers to return, chosen as ``aggregate`` says (default and ``best``: ``_pick``)."""
    match name:
        case None | "best":
            return _pick(got, n)
        case "majority" | "weighted":
            # the vote's winner first, then the rest by reward (a vote names one answer; n > 1 asks for more)
            from winnow.select import aggregate

            ranked = _pick(got, len(got.candidates))
            rewards = got.rewards if got.rewards is not None else [math.nan] * len(got.candidates)
            chosen = aggregate([c.text for c in got.candidates], rewards, name)
            if chosen < 0:
                return ranked[:n]
            first = got.candidates[chosen]
            return ([x for x in ranked if x[0] is first] + [x for x in ranked if x[0] is not first])[:n]
        case _:  # refused in _check_aggregate
            raise ApiError(400, f"aggregate {name!r} is not available", param="aggregate")


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
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "stream_options needs stream: true", param="stream_options")
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
        union_tags = ("str", "int", "float", "bool")  # pydantic names the member of a union it tried
        loc = [str(x) for x in first["loc"] if str(x) not in union_tags and not str(x).startswith("list[")]
        param = ".".join(loc) or None
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        if first["type"].endswith("_type"):  # strict types: say what came, as it came ("4" is a string)
            got = json.dumps(first["input"])
            message += f", got {got if len(got) <= 60 else got[:57] + '...'}"
        raise ApiError(400, f"{param}: {message}", param=param) from None
