"""The routes: ``GET /health``, ``GET /metrics``, ``GET /v1/models``,
``POST /v1/chat/completions`` and ``POST /v1/completions``.

Each reads the app's ``Server`` from ``request.app.state.server``. A completion request is
read (key, body, fields), checked against the caps, then answered one of three ways: a
JSON body after the batcher ran it, an event stream fed by the batcher (``events``), or
(``--backend openai``, answer known as sampled) the upstream's stream relayed (``relay``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from winnow.errors import WinnowError
from winnow.generate.contract import Sampling
from winnow.generate.openai_api import OpenAIBackend
from winnow.prompts import chat_with_images
from winnow.records import Prompt
from winnow.serve import schema, stream
from winnow.serve.answer import Asked, body, check_aggregate, check_select_by, sampling_of
from winnow.serve.events import batched_events
from winnow.serve.incoming import M, authorize, parse, read_body
from winnow.serve.metrics import CONTENT_TYPE
from winnow.serve.relay import Relay, relay
from winnow.serve.server import ClientGone, Server
from winnow.serve.work import ApiError, Ticket

log = logging.getLogger("winnow.serve")

LISTING = {"candidates", "selected_index", "selected_by", "judge_agrees", "judge_calls"}
"""Body fields only ``return_candidates`` asks for (left out otherwise, not sent as null)."""

router = APIRouter()


def server_of(request: Request) -> Server:
    """The ``Server`` of the app this request came to (``create_app`` put it there)."""
    return request.app.state.server


@router.get("/health")
async def health(request: Request) -> dict:
    s = server_of(request)
    return {"status": "ok", "model": s.served, "queued": len(s.batcher.pending), "running": s.batcher.running}


@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    s = server_of(request)
    if not s.config.metrics_public:
        authorize(request, s.key)
    return Response(s.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/models")
async def models(request: Request) -> dict:
    s = server_of(request)
    authorize(request, s.key)
    return schema.ModelList(data=[schema.ModelCard(id=s.served, created=s.created)]).model_dump()


@router.post("/v1/chat/completions")
async def chat(request: Request) -> Any:
    arrived = time.perf_counter()
    s, req = await admitted(request, schema.ChatCompletionRequest)
    prompt = chat_prompt(f"chatcmpl-{uuid.uuid4().hex}", req, max_image_bytes=s.images.max_bytes)
    return await answer(s, request, Asked("chat", req, prompt, req.max_tokens or req.max_completion_tokens, arrived))


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    arrived = time.perf_counter()
    s, req = await admitted(request, schema.CompletionRequest)
    prompt = Prompt(id=f"cmpl-{uuid.uuid4().hex}", text=req.prompt)
    return await answer(s, request, Asked("text", req, prompt, req.max_tokens, arrived))


def chat_prompt(name: str, req: schema.ChatCompletionRequest, *, max_image_bytes: int) -> Prompt:
    """The request's messages as the prompt ``name``. Content parts (a vision-language
    request's text and ``image_url`` parts) are read as a prompts file's are, images decoded
    and checked (at most ``max_image_bytes`` each, ``--max-image-bytes``), a bad one answered
    400 naming the part; plain text messages are taken as they are."""
    messages = [m.model_dump(exclude_defaults=True) for m in req.messages]
    if all(isinstance(m["content"], str) for m in messages):
        return Prompt(id=name, messages=tuple(messages))
    try:
        return chat_with_images(messages, id=name, max_image_bytes=max_image_bytes)
    except WinnowError as e:
        raise ApiError(400, str(e).removeprefix(f"{name}: "), param="messages") from None


async def admitted(request: Request, model: type[M]) -> tuple[Server, M]:
    """The server, and the request's body (within ``max_body_bytes``) parsed as ``model``,
    once the request's key is checked: where both completion routes start."""
    s = server_of(request)
    authorize(request, s.key)
    return s, parse(model, await read_body(request, s.config.max_body_bytes))


async def answer(s: Server, request: Request, asked: Asked) -> Any:
    """Check the request, queue it, and answer: a JSON body, or an event stream."""
    req, prompt, rewarded = asked.req, asked.prompt, s.reward is not None
    if req.model != s.served:
        raise ApiError(
            404,
            f"model {req.model!r} is not served here (it serves {s.served!r})",
            param="model",
            code="model_not_found",
        )
    sampling = sampling_of(req, s.config, asked.max_tokens, rewarded=rewarded, backend_name=s.backend_name)
    check_aggregate(req.aggregate, rewarded=rewarded)
    check_select_by(req.select_by, req.aggregate, rewarded=rewarded, judged=s.judge is not None)
    if s.config.log_prompts:
        log.info("%s prompt: %r", prompt.id, prompt.content)
    live = not rewarded or sampling.n == 1
    if req.stream and live and s.backend_name == "openai" and not req.return_candidates:
        return await relayed(s, asked, sampling)
    ticket = Ticket(prompt, live=req.stream and live)
    if req.stream:
        ticket.loop, ticket.events = asyncio.get_running_loop(), asyncio.Queue()
    job = s.enqueue(sampling, ticket, req.seed)
    if req.stream:
        events = batched_events(s, asked, ticket, job)
        return StreamingResponse(events, media_type=stream.MEDIA_TYPE, headers=stream.HEADERS)
    try:
        got = await s.wait(request, ticket, job)
    except ClientGone:
        return Response(status_code=499)
    picked, verdict = await s.chosen(asked, got)
    used = s.judge_usage(verdict)
    s.count(got, picked, asked.arrived, streamed=False, judge=used)
    tokenizer = getattr(s.backend, "tokenizer", None)  # names the tokens of a logprobs body (hf only)
    asked_logprobs = req.asked_logprobs()
    answered = body(
        asked.kind,
        prompt.id,
        s.served,
        got,
        picked,
        listing=req.return_candidates,
        logprobs=asked_logprobs,
        tokenizer=tokenizer,
        verdict=verdict,
        judge_usage=used,
    )
    left_out = (set() if req.return_candidates else LISTING) | ({"judge_usage"} if verdict is None else set())
    return answered.model_dump(exclude_none=not rewarded, exclude=left_out)


async def relayed(s: Server, asked: Asked, sampling: Sampling) -> StreamingResponse:
    """The upstream's stream relayed, counted against the relay gate until it ends."""
    assert isinstance(s.backend, OpenAIBackend)  # relayed only when backend_name is "openai"
    if not s.relays.enter():
        raise s.busy()
    try:
        events = await relay(Relay(s.backend, asked, sampling, s.served, s.reward, s.metrics))
    except BaseException:
        s.relays.leave()
        raise

    async def counted() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield event
        finally:
            s.relays.leave()
            await events.aclose()  # closes the upstream stream if the client left between events

    return StreamingResponse(counted(), media_type=stream.MEDIA_TYPE, headers=stream.HEADERS)
