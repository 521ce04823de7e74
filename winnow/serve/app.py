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

Where each part lives: ``routes`` (the routes, and how a request is answered), ``server``
(what the routes share: batcher, metrics, relay gate), ``incoming`` (key, body, fields),
``answer`` (caps, choices, the JSON body), ``events`` (streams fed by the batcher),
``relay`` (``--backend openai`` streams relayed), ``work`` (the backend thread). This module
makes the app and turns errors into the OpenAI error body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from winnow.config import ImagesConfig, ServeConfig
from winnow.generate.contract import Backend
from winnow.rewards.apply import RewardApplier
from winnow.rewards.pick import Judge
from winnow.serve import schema
from winnow.serve.answer import choose as _aggregate  # noqa: F401 -- the name tests/serve/test_serve.py imports
from winnow.serve.metrics import CountStatus
from winnow.serve.routes import router
from winnow.serve.server import Server
from winnow.serve.work import ApiError

log = logging.getLogger("winnow.serve")


def create_app(
    backend: Backend,
    config: ServeConfig,
    *,
    backend_name: str,
    reward: RewardApplier | None = None,
    judge: Judge | None = None,
    images: ImagesConfig | None = None,
) -> FastAPI:
    """The app over a built backend; ``reward`` (the score stage's applier) turns on Best-of-N,
    ``judge`` (the judge that picks) makes it pick Best-of-N's answer by default; ``images``:
    the limit on a request's images (default: the ``images`` section's defaults)."""
    server = Server.build(backend, config, backend_name=backend_name, reward=reward, judge=judge, images=images)
    app = FastAPI(title="winnow serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.state.batcher = server.batcher
    app.state.backend = backend
    app.state.metrics = server.metrics
    app.add_middleware(CountStatus, metrics=server.metrics)
    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, server_error)
    app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The batcher's loop runs while the app serves."""
    batcher = app.state.server.batcher
    task = asyncio.create_task(batcher.run_forever())
    yield  # uvicorn lets in-flight requests finish (up to its grace period) before it gets here
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    batcher.close()


def error_response(e: ApiError) -> JSONResponse:
    detail = schema.ErrorDetail(message=e.message, type=e.type, param=e.param, code=e.code)
    return JSONResponse(schema.ErrorBody(error=detail).model_dump(), status_code=e.status, headers=e.headers)


async def api_error(request: Request, e: ApiError) -> JSONResponse:
    return error_response(e)


async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
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


async def server_error(request: Request, e: Exception) -> JSONResponse:
    log.error("request failed: %s: %s", type(e).__name__, e)
    return error_response(ApiError(500, f"the backend failed: {type(e).__name__}", type="server_error"))
