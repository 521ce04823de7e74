"""The ``openai`` backend: completions from any OpenAI-compatible server (vLLM, SGLang, TGI,
llama.cpp, ``winnow serve``, a hosted API), through the official async client.

What is sent: ``n``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop`` and,
when confidence is asked for (``Sampling.top_logprobs`` = k), ``logprobs`` with k top
log-probabilities per token, as the OpenAI API defines them; ``top_k``, ``min_p`` and ``repetition_penalty``, which the
official API lacks, go in the request body as extra fields when they are not neutral
(vLLM, SGLang and ``winnow serve`` read them; a server that does not know them answers
400, which is an error here, never a silent default).

Endpoints: with ``endpoint="auto"`` chat-message prompts go to ``/chat/completions`` (the
server applies its chat template) and text prompts to ``/completions`` (sent as they
are); ``"chat"`` sends text prompts as one user turn, as the ``hf`` backend renders them;
``"completions"`` takes text prompts only.

``n`` samples of a prompt go in one request when the server takes ``n > 1`` and says how
many tokens each choice has (``winnow serve`` adds ``num_tokens`` to each choice; other
servers are asked for logprobs, whose length is the count); otherwise as ``n`` requests
of one. The backend learns which on its first prompt. Every request carries a seed
derived from the shard's seed and the prompt's place in the shard (and the sample's, for
single requests), so a retried or resumed shard asks for exactly the same samples.

Limits (``max_requests_per_minute``, ``max_tokens_per_minute``): every try of every request
waits for its start under them (``winnow.budget.Pacer``, one per backend, shared by all its
shards); a request is booked at an estimate of its tokens and settled by its reply's usage.
Each request's usage (``usage.prompt_tokens``, ``usage.completion_tokens``) is kept on the row
of its first choice (``usage``), and the stage's manifest sums them (and prices them). The
probe's tries that are not kept (choices without token counts) were paid for too: the call's
first row records them (``probe``: the mode learned and each discarded try's usage), the
manifest counts them, and a rerun that resumes the stage takes the mode from that row
instead of paying for the probe again (so its rows are those of an uninterrupted run).

Shards overlap (``submit``): every shard's requests run on one event loop in a thread of
its own, under one semaphore of ``concurrency``, so the next shard's requests start while
the last of the current one finish and the server is kept ``concurrency`` deep across
shard boundaries. What a shard receives does not depend on the timing (its requests carry
its seeds), so a killed run resumes to the same rows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from winnow import remote
from winnow.budget import estimate_tokens
from winnow.config.fields import ENDPOINTS
from winnow.errors import WinnowError
from winnow.generate.contract import Sampling
from winnow.images import openai_messages
from winnow.records import Completion, Prompt
from winnow.replies import Choice, parse_choices, reply_limit, usage_of

Reply = tuple[list[Choice], dict]
"""A request's choices in index order and its usage (``winnow.replies.usage_of``)."""

UNKNOWN_CONTEXT = 1 << 30
"""The server checks prompt lengths itself: locally, no prompt counts as too long."""


def request_seed(seed: int, *path: int) -> int:
    """A 31-bit seed for one request, derived from the shard seed and the request's place."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0]) & 0x7FFFFFFF


class OpenAIBackend:
    """Completions from the server at ``client.base_url``; ``model`` is the served model name."""

    def __init__(self, model: str, *, client: remote.ClientSettings, endpoint: str = "auto"):
        if endpoint not in ENDPOINTS:
            raise WinnowError(f"generate.endpoint: must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        self.model = model
        self.client = client
        self.endpoint = endpoint
        self.n_mode: str | None = None
        """How n > 1 samples are asked for: "n" (one request), "logprobs" (one request,
        counts from logprobs) or "single" (n requests); learned on the first prompt."""
        self._shared: _SharedLoop | None = None
        self.pacer = client.pacer()
        """The per-minute limits, shared by every request of this backend (all its shards)."""

    def context_length(self) -> int:
        return UNKNOWN_CONTEXT

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        return [0] * len(prompts)

    def generate(self, prompts: list[Prompt], sampling: Sampling, seed: int) -> list[Completion]:
        """``sampling.n`` completions per prompt, grouped by prompt, sample_index 0..n-1.

        Requests run concurrently (at most ``client.concurrency`` in flight); a request
        that keeps failing ends the call with an error naming its prompt.
        """
        for p in prompts:
            self.endpoint_of(p)  # refuse a message prompt on 'completions' before any request
        return asyncio.run(self._generate(prompts, sampling, seed))

    def submit(self, prompts: list[Prompt], sampling: Sampling, seed: int) -> concurrent.futures.Future:
        """``generate`` without waiting: a future of its completions. Every submitted call
        shares one event loop, client and semaphore, so at most ``client.concurrency``
        requests are in flight over all of them, and the next shard fills the slots the
        current one frees."""
        for p in prompts:
            self.endpoint_of(p)
        if self._shared is None:
            self._shared = _SharedLoop(self.client)
        shared = self._shared
        return asyncio.run_coroutine_threadsafe(self._generate(prompts, sampling, seed, shared), shared.loop)

    def close(self) -> None:
        """Stop the shared loop of ``submit`` (its client closed); a later submit starts another."""
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    async def _generate(
        self, prompts: list[Prompt], sampling: Sampling, seed: int, shared: _SharedLoop | None = None
    ) -> list[Completion]:
        client = shared.client() if shared is not None else remote.make_client(self.client)
        try:
            n = sampling.n
            first: Reply | None = None
            discarded: list[dict] = []  # the probe's tries not kept: paid for, so counted
            if n > 1 and self.n_mode is None and prompts:
                if shared is None:
                    first = await self._probe(client, prompts[0], sampling, request_seed(seed, 0), discarded)
                else:
                    async with shared.probe_lock():  # overlapping shards: one probe, the others wait for it
                        if self.n_mode is None:
                            first = await self._probe(client, prompts[0], sampling, request_seed(seed, 0), discarded)
            jobs: list[Callable[[], Awaitable[Any]]] = []
            slots: list[tuple[int, int | None]] = []  # (prompt index, sample index or None = all n)
            for i, prompt in enumerate(prompts):
                if i == 0 and first is not None:
                    continue
                if n == 1 or self.n_mode == "single":
                    for j in range(n):
                        jobs.append(self._job(client, prompt, sampling, 1, request_seed(seed, i, j), False))
                        slots.append((i, j))
                else:
                    logprobs = self.n_mode == "logprobs"
                    jobs.append(self._job(client, prompt, sampling, n, request_seed(seed, i), logprobs))
                    slots.append((i, None))
            semaphore = shared.semaphore() if shared is not None else None
            results = await remote.gather_bounded(self.client.concurrency, jobs, semaphore)
        finally:
            if shared is None:
                await client.close()
        choices: dict[tuple[int, int], Choice] = {}
        usage: dict[tuple[int, int], dict] = {}  # a request's usage, at its first choice
        if first is not None:
            choices.update({(0, j): c for j, c in enumerate(first[0])})
            usage[(0, 0)] = first[1]
        failed: dict[int, str] = {}
        for (i, slot), got in zip(slots, results, strict=True):
            if isinstance(got, str):  # skipped (``ClientSettings.skip_failed``): got is why
                failed.setdefault(i, got)
            elif slot is None:
                choices.update({(i, k): c for k, c in enumerate(got[0])})
                usage[(i, 0)] = got[1]
            else:
                choices[(i, slot)] = got[0][0]
                usage[(i, slot)] = got[1]
        kept = [(i, p, j) for i, p in enumerate(prompts) if i not in failed for j in range(n)]
        out = Completions(self._completion(p, j, choices[(i, j)]) for i, p, j in kept)
        out.usage = {(p.id, j): usage[(i, j)] for i, p, j in kept if (i, j) in usage}
        out.failed = {prompts[i].id: why for i, why in sorted(failed.items())}
        if discarded:  # a probe that cost more than the request it kept
            out.probe = {"n_mode": self.n_mode, "usage": discarded}
        return out

    def _job(self, client, prompt: Prompt, sampling: Sampling, n: int, seed: int, logprobs: bool):
        estimate = self.estimate(prompt, sampling, n)

        async def job() -> Reply | str:
            try:
                got = await self._call(
                    prompt, lambda: self._request(client, prompt, sampling, n, seed, logprobs), estimate=estimate
                )
                return self._checked(prompt, got[0], n), got[1]
            except WinnowError as e:  # refused, or still failing after the retries
                if not self.client.skip_failed:
                    raise
                return " ".join(str(e).split())  # the reason: the prompt is skipped

        return job

    async def _call(self, prompt: Prompt, request, refusals: tuple = (), *, estimate: int = 0):
        """``remote.call`` for one prompt, paced (booked at ``estimate`` tokens); a refusal
        (4xx) not in ``refusals`` is an error naming it."""
        import openai

        what = f"prompt {prompt.id!r}"
        try:
            return await remote.call(self.client, what, request, self.pacer, estimate)
        except refusals:
            raise
        except openai.APIStatusError as e:
            raise WinnowError(f"{what}: server {self.client.base_url} answered {remote.describe(e)}") from None

    async def _probe(
        self, client, prompt: Prompt, sampling: Sampling, seed: int, discarded: list[dict]
    ) -> Reply | None:
        """Ask for n samples in one request, then with logprobs; settle ``n_mode``.

        Returns the first prompt's choices and usage when one request gave all n with token
        counts, else None (the prompt is then asked for as n single requests like the rest).
        A try whose choices lack counts is not kept; its usage is appended to ``discarded``
        (the server answered it, so it was paid for).
        """
        import openai

        refusals = (openai.BadRequestError, openai.UnprocessableEntityError)
        for mode in ("n", "logprobs"):
            try:
                got = await self._call(
                    prompt,
                    lambda lp=mode == "logprobs": self._request(client, prompt, sampling, sampling.n, seed, lp),
                    refusals,
                    estimate=self.estimate(prompt, sampling, sampling.n),
                )
            except refusals:
                continue  # the server refuses n > 1 (or logprobs): try the next way
            if len(got[0]) == sampling.n and all(c.num_tokens is not None for c in got[0]):
                self.n_mode = mode
                return got
            discarded.append(got[1])
        self.n_mode = "single"
        return None

    async def _request(self, client, prompt: Prompt, sampling: Sampling, n: int, seed: int, logprobs: bool) -> Reply:
        """One HTTP request; returns its choices in index order, checked (``winnow.replies``),
        and its usage (which settles the pacer's estimate)."""
        chat, params = self.params(prompt, sampling, n, seed, logprobs)
        top = sampling.top_logprobs
        limit = reply_limit(n, sampling.max_new_tokens, top_logprobs=top)
        body = await remote.create(client, chat=chat, limit=limit, **params)
        choices = parse_choices(body, chat=chat, max_tokens=sampling.max_new_tokens, top_logprobs=top)
        usage = usage_of(body, choices)
        used = None if usage["prompt_tokens"] is None else usage["prompt_tokens"] + usage["completion_tokens"]
        self.pacer.settle(self.estimate(prompt, sampling, n), used)
        return choices, usage

    def params(
        self, prompt: Prompt, sampling: Sampling, n: int, seed: int, logprobs: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        """(whether it goes to /chat/completions, the request's parameters as the client takes
        them: ``extra_body`` holds the fields the OpenAI API lacks). ``winnow.openai_batch``
        writes the same parameters into a batch file."""
        common: dict[str, Any] = dict(
            model=self.model,
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            extra_body=extra_body(sampling) or None,
        )
        if sampling.stop:
            common["stop"] = list(sampling.stop)
        chat = self.endpoint_of(prompt) == "chat"
        top = sampling.top_logprobs  # confidence asked for: logprobs with the k top ones (they count tokens too)
        if chat:
            if logprobs or top:
                common.update(logprobs=True, top_logprobs=top)
            common["messages"] = openai_messages(prompt)  # images as data: URL content parts
        else:
            if logprobs or top:
                common["logprobs"] = top
            common["prompt"] = prompt.text
        return chat, common

    def estimate(self, prompt: Prompt, sampling: Sampling, n: int) -> int:
        """Tokens a request for ``n`` samples of ``prompt`` is booked at before its reply."""
        chars = (
            len(prompt.text)
            if prompt.text is not None
            else sum(len(str(m.get("content", ""))) for m in prompt.as_messages())
        )
        return estimate_tokens(chars, sampling.max_new_tokens, n)

    def endpoint_of(self, prompt: Prompt) -> str:
        return endpoint_of(self.endpoint, prompt)

    def _checked(self, prompt: Prompt, choices: list[Choice], n: int) -> list[Choice]:
        if len(choices) != n:
            raise WinnowError(
                f"prompt {prompt.id!r}: server {self.client.base_url} returned {len(choices)} choices for n={n}"
            )
        if any(c.num_tokens is None for c in choices):
            raise WinnowError(
                f"prompt {prompt.id!r}: server {self.client.base_url} reported no token usage for the completion"
            )
        return choices

    def _completion(self, prompt: Prompt, sample_index: int, choice: Choice) -> Completion:
        assert choice.num_tokens is not None  # checked in _checked
        return Completion(
            prompt_id=prompt.id,
            sample_index=sample_index,
            model=self.model,
            text=choice.text,
            num_tokens=choice.num_tokens,
            finish_reason=choice.finish_reason,
            logprobs=choice.logprobs,
        )


class Completions(list):
    """A call's completions (list[Completion], grouped by prompt) and ``failed``: prompt id
    -> why, for the prompts skipped after their request failed (none unless the client
    skips failed requests); the generate stage records those in ``errors.jsonl``.
    ``usage``: (prompt id, sample index) of each request's first completion -> that
    request's ``{"prompt_tokens", "completion_tokens"}`` (``winnow.replies.usage_of``).
    ``probe``: None, or where this call's probe discarded tries (paid for, not kept), the
    mode it learned and each such try's usage: ``{"n_mode": "logprobs", "usage": [{...}]}``."""

    def __init__(self, completions=()):
        super().__init__(completions)
        self.failed: dict[str, str] = {}
        self.usage: dict[tuple[str, int], dict] = {}
        self.probe: dict | None = None


class _SharedLoop:
    """An event loop in a daemon thread with one client, one semaphore of ``concurrency``
    and one probe lock, shared by the overlapping shards of an ``OpenAIBackend``."""

    def __init__(self, settings: remote.ClientSettings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="winnow-openai", daemon=True)
        self.thread.start()
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self._lock: asyncio.Lock | None = None

    # Made on first use, inside the loop that uses them (asyncio objects belong to one loop).
    def client(self):
        if self._client is None:
            self._client = remote.make_client(self.settings)
        return self._client

    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.settings.concurrency)
        return self._semaphore

    def probe_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def close(self) -> None:
        """Cancel what is still running (a stage that failed), close the client, stop the loop."""

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._client is not None:
                await self._client.close()

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def endpoint_of(endpoint: str, prompt: Prompt) -> str:
    """``chat`` or ``completions``: where ``prompt`` is sampled under ``endpoint`` (``auto``:
    chat for a messages prompt). A messages prompt on ``completions`` is refused."""
    if endpoint == "chat" or (endpoint == "auto" and prompt.messages is not None):
        return "chat"
    if prompt.text is None:
        raise WinnowError(f"prompt {prompt.id!r} has chat messages; endpoint 'completions' takes text prompts only")
    return "completions"


def extra_body(sampling: Sampling) -> dict:
    """Sampling fields the OpenAI API lacks, when not neutral (vLLM and SGLang read these names)."""
    extra: dict[str, Any] = {}
    if sampling.top_k > 0:
        extra["top_k"] = sampling.top_k
    if sampling.min_p > 0:
        extra["min_p"] = sampling.min_p
    if sampling.repetition_penalty != 1.0:
        extra["repetition_penalty"] = sampling.repetition_penalty
    return extra


async def _list_models(api):
    """``/models``, or InvalidReply when the body is not a model page (an HTML page, say)."""
    try:
        return await api.models.list()
    except (AttributeError, TypeError) as e:  # the client fails building its page from a str
        raise remote.InvalidReply(f"/models: {type(e).__name__}") from None


def describe_server(client: remote.ClientSettings, models: list[str]) -> dict:
    """What the run records about the server: its URL and the model names it serves.

    Refuses a model the server does not list (a typo would otherwise fail on every
    request). A server without ``/models`` is recorded with ``served_models: None``.
    """
    import openai

    async def fetch() -> list[str] | None:
        api = remote.make_client(client)
        try:
            what = f"listing the models of {client.base_url}"
            page = await remote.call(client, what, lambda: _list_models(api))
            listed = getattr(page, "data", None)
            ids = [m.id for m in listed or [] if isinstance(getattr(m, "id", None), str)]
            if not isinstance(listed, list) or len(ids) != len(listed):
                raise WinnowError(
                    f"{what}: the server's /models answer is not a model list (is --base-url the API root?)"
                )
            return ids
        except openai.NotFoundError:
            return None
        except openai.APIStatusError as e:
            raise WinnowError(f"server {client.base_url}: listing models failed with {remote.describe(e)}") from None
        finally:
            await api.close()

    served = asyncio.run(fetch())
    for model in models:
        if served is not None and model not in served:
            raise WinnowError(
                f"generate.models: server {client.base_url} does not serve {model!r} (it serves: {', '.join(served)})"
            )
    return {"base_url": client.base_url, "served_models": served}
