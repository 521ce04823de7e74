"""Talking to an OpenAI-compatible server: one async client, bounded concurrency, retries,
per-minute limits (``winnow.budget``).

Shared by the ``openai`` generation backend and the judge reward. Settings are plain values
(picklable, so a backend built from them can be shipped to a worker process or a Ray actor);
the client itself is made inside the event loop that uses it. The API key is read from the
environment variable named in the settings and never stored: not on the settings, not in a
config, manifest or error message.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from winnow.budget import Pacer
from winnow.config import GenerateConfig, ScoreConfig, ServeConfig
from winnow.errors import WinnowError, install_hint

T = TypeVar("T")

NO_KEY = "not-needed"
"""What the client sends when no key is configured (servers such as vLLM ignore it)."""


@dataclass(frozen=True)
class ClientSettings:
    """How to reach one server and how hard to try."""

    base_url: str
    """The server's API root, e.g. ``http://127.0.0.1:8000/v1``."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (the key itself is never stored)."""
    concurrency: int = 16
    """Requests in flight at once."""
    timeout: float = 120.0
    """Seconds one request may take before it counts as failed (and is retried)."""
    max_retries: int = 5
    """Retries after the first try, on 429, 5xx, timeouts and dropped connections."""
    backoff: float = 0.5
    """First wait in seconds; doubled every retry (with jitter), at most ``max_backoff``."""
    max_backoff: float = 30.0
    skip_failed: bool = False
    """A prompt whose request still fails after the retries is left without completions and
    reported (``generate.on_error: skip``) rather than ending the call."""
    requests_per_minute: float | None = None
    """Requests started per minute at most (``winnow.budget.Pacer``); None: no limit."""
    tokens_per_minute: float | None = None
    """Prompt plus completion tokens per minute at most; None: no limit."""

    def pacer(self) -> Pacer:
        """A pacer of these limits, for the requests that are to share it."""
        return Pacer(requests_per_minute=self.requests_per_minute, tokens_per_minute=self.tokens_per_minute)

    def api_key(self) -> str:
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise WinnowError(f"api_key_env: environment variable {self.api_key_env} is not set or empty")
        return key


def generate_client(config: GenerateConfig) -> ClientSettings | None:
    """How the openai generation backend reaches its server (None for local backends)."""
    if config.backend != "openai" or not config.base_url:
        return None
    return ClientSettings(
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        concurrency=config.concurrency,
        timeout=config.request_timeout,
        max_retries=config.max_retries,
        backoff=config.retry_backoff,
        skip_failed=config.on_error == "skip",
        requests_per_minute=config.max_requests_per_minute,
        tokens_per_minute=config.max_tokens_per_minute,
    )


def upstream_client(config: ServeConfig) -> ClientSettings | None:
    """How ``winnow serve --backend openai`` reaches the upstream server (None for local backends)."""
    if config.backend != "openai" or not config.base_url:
        return None
    return ClientSettings(base_url=config.base_url, api_key_env=config.upstream_api_key_env)


def judge_client(config: ScoreConfig, url: str | None = None) -> ClientSettings:
    """How a judge reaches its server (the judge reward's ``reward_judge``, or ``url``: the
    fallback judge's): the ``openai`` backend's client, the judge's settings."""
    return ClientSettings(
        base_url=url or config.reward_judge or "",
        api_key_env=config.judge_api_key_env,
        concurrency=config.judge_concurrency,
        timeout=config.judge_request_timeout,
        max_retries=config.judge_max_retries,
        backoff=config.judge_retry_backoff,
        requests_per_minute=config.judge_max_requests_per_minute,
        tokens_per_minute=config.judge_max_tokens_per_minute,
    )


def make_client(settings: ClientSettings):
    """An ``openai.AsyncOpenAI`` client with its own retries off (``call`` retries instead)."""
    try:
        from openai import AsyncOpenAI
    except ImportError:
        raise WinnowError(f"the openai backend and judge need the openai package: {install_hint('openai')}") from None
    return AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key(), max_retries=0, timeout=settings.timeout)


class InvalidReply(Exception):
    """A 200 answer that is not what the API promises (bad JSON, no choices, a count that is
    not a count): retried like a 5xx, since a proxy or an overloaded server may send one."""


def is_transient(error: BaseException) -> bool:
    """429, 5xx, timeouts, dropped connections and invalid 200 replies are worth another try;
    other answers are not."""
    import openai

    if isinstance(
        error, openai.APIConnectionError | InvalidReply | TimeoutError
    ):  # APITimeoutError is a connection error
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code == 429 or error.status_code >= 500
    return False


def describe(error: BaseException) -> str:
    """One line for an error message: the HTTP status and the server's message, if any."""
    import openai

    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {error.message}"
    if isinstance(error, InvalidReply):
        return f"an invalid reply: {error}"
    if isinstance(error, TimeoutError):
        return f"no complete answer within the {error.args[0] if error.args else '?'} s request timeout"
    return f"{type(error).__name__}: {error}"


def backoff_delay(settings: ClientSettings, attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, backoff * 2**attempt], capped.

    A server's Retry-After, when given, is a floor (still capped at ``max_backoff``).
    """
    ceiling = min(settings.max_backoff, settings.backoff * 2**attempt)
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.max_backoff))
    return delay


def _retry_after(error: BaseException) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def call(
    settings: ClientSettings,
    what: str,
    request: Callable[[], Awaitable[T]],
    pacer: Pacer | None = None,
    estimate: int = 0,
) -> T:
    """Await ``request()``, retrying transient failures; then a WinnowError naming ``what``.

    ``what`` names the unit of work (``prompt 'p3'``), so the error says which prompt failed.
    A non-transient error (400, 401, 404) is raised at once as it is: callers that can do
    something about it (fall back from n > 1) catch ``openai.APIStatusError`` themselves.
    ``pacer``: every try waits for its start under the per-minute limits first, booked at
    ``estimate`` tokens (the request settles it from its reply); the wait is not part of
    the request's timeout.
    """
    for attempt in range(settings.max_retries + 1):
        if pacer is not None:
            await pacer.wait(estimate)
        try:
            return await _whole(settings.timeout, request)
        except Exception as e:  # openai's errors; anything else is a bug and re-raised below
            if not is_transient(e):
                raise
            if attempt == settings.max_retries:
                raise WinnowError(
                    f"{what}: server {settings.base_url} failed {attempt + 1} times, last with {describe(e)}; "
                    "finished shards are kept, rerun the same command to resume"
                ) from None
            await asyncio.sleep(backoff_delay(settings, attempt, _retry_after(e)))
    raise AssertionError("unreachable")


async def create(api, *, chat: bool, limit: int, **params) -> Any:
    """POST ``/chat/completions`` (``chat``) or ``/completions``; the reply's JSON, decoded here.

    The body is read in pieces and refused (an InvalidReply) once it passes ``limit``
    bytes, so a server cannot make the client hold more than the reply could need. Not
    the client's parsed models: they coerce ``true`` to 1 and fill missing fields, which
    ``winnow.replies`` must see as the server sent them. A 4xx/5xx raises as usual.
    """
    resource = api.chat.completions if chat else api.completions
    async with resource.with_streaming_response.create(**params) as response:
        data = bytearray()
        async for piece in response.iter_bytes():
            data += piece
            if len(data) > limit:
                raise InvalidReply(f"a reply of more than {limit} bytes, more than max_tokens can produce")
    return json.loads(bytes(data))  # ValueError (not JSON, not UTF-8) is an InvalidReply in _whole


async def _whole(timeout: float, request: Callable[[], Awaitable[T]]) -> T:
    """``request()`` bounded as a whole: the client's own timeout is per read, so a server
    drip-feeding its body a byte at a time would otherwise never time out. A reply that the
    client cannot decode (not JSON) is an InvalidReply."""
    try:
        return await asyncio.wait_for(request(), timeout)
    except TimeoutError:
        raise TimeoutError(f"{timeout:g}") from None
    except ValueError as e:  # json.JSONDecodeError, or a model the client could not build
        raise InvalidReply(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None


async def gather_bounded(
    limit: int, jobs: list[Callable[[], Awaitable[Any]]], semaphore: asyncio.Semaphore | None = None
) -> list[Any]:
    """Run ``jobs`` with at most ``limit`` in flight; results in the jobs' order.

    ``semaphore``: one shared with other calls (then it alone bounds what is in flight, over
    all of them). The first failure cancels the jobs still running and is raised.
    """
    semaphore = semaphore or asyncio.Semaphore(limit)

    async def one(job):
        async with semaphore:
            return await job()

    tasks = [asyncio.ensure_future(one(job)) for job in jobs]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


P = ParamSpec("P")


def blocking(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of the coroutine function ``fn``: the same parameters, run to the
    end in an event loop of its own (so it cannot be called inside a running loop: a server
    awaits ``fn`` itself). One body serves both, so the two cannot drift; the twin is named
    ``fn``'s name less ``_async``, and its docstring is ``fn``'s after a line saying so.

    >>> async def double_async(x: int) -> int:
    ...     return 2 * x
    >>> double = blocking(double_async)
    >>> double(3), double.__name__
    (6, 'double')
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(fn(*args, **kwargs))

    run.__name__ = fn.__name__.removesuffix("_async")
    run.__qualname__ = fn.__qualname__.removesuffix("_async")
    run.__doc__ = f"``{fn.__name__}`` run to the end in an event loop of its own.\n\n{fn.__doc__ or ''}"
    return run
