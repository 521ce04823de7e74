"""API requests within a per-minute budget, and what they used and cost.

**Pacing** (``Pacer``): ``max_requests_per_minute`` R and ``max_tokens_per_minute`` T are
kept as a leaky bucket with no burst: a request waits until both allow it, and is booked
against both as it goes.

- requests: starts are at least 60/R seconds apart, so no minute (and no second, as
  providers that enforce a limit per second count it) holds more than its share;
- tokens: a request started at ``s`` pays ``cost * 60/T`` seconds of the token budget, so
  the next one starts no earlier than ``s + cost * 60/T``. The cost is an *estimate* before
  the reply (``estimate_tokens``: the prompt's characters / 4, plus max_tokens for each
  choice asked for), and is *corrected* by the reply's usage (prompt + completion tokens)
  once it comes (``Pacer.settle``): a reply that used less gives the difference back to the
  requests still waiting, one that used more pushes them later.

A pacer lives in one process and is shared by the concurrent requests of one backend or
judge (its asyncio tasks; it holds no asyncio object, so shards on several event loops
share it as well). Pacing only delays requests: what each request asks for (its seed) is
the same, so the rows are the same with and without a limit.

**Usage** (``Usage``): requests, prompt and completion tokens as the API reports them,
summed per stage; with a price (``IN,OUT`` per million tokens) their cost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

CHARS_PER_TOKEN = 4
"""Characters per token of the estimate before a reply (OpenAI's rule of thumb for English)."""


def estimate_tokens(prompt_chars: int, max_tokens: int, n: int = 1) -> int:
    """Tokens a request may use, before its reply says: the prompt's characters / 4
    (rounded up) plus ``max_tokens`` for each of its ``n`` choices.

    >>> estimate_tokens(41, 16), estimate_tokens(0, 8, n=3)
    (27, 24)
    """
    return -(-prompt_chars // CHARS_PER_TOKEN) + n * max_tokens


class Pacer:
    """Requests per minute and tokens per minute for the requests that share it.

    ``clock``: seconds, monotonic (tests pass their own); ``None`` limits: no limit.

    >>> pacer = Pacer(requests_per_minute=60, tokens_per_minute=600)  # 1 s a request; 10 tokens a second
    >>> pacer.book(5, at=0.0); pacer.ready_at()  # the request limit: the next at 1 s
    1.0
    >>> pacer.book(100, at=1.0); pacer.ready_at()  # 100 tokens: 10 s of the budget from its start
    11.0
    >>> pacer.settle(100, 40); pacer.ready_at()  # it used 40: the next may start 6 s sooner
    5.0
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.request_gap = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.token_gap = 60.0 / tokens_per_minute if tokens_per_minute else 0.0
        self.clock = clock
        self.next_request = -math.inf
        """Earliest start of the next request under the request limit."""
        self.next_token = -math.inf
        """Earliest start of the next request under the token limit (when the budget spent so far is paid)."""

    @property
    def limited(self) -> bool:
        return bool(self.request_gap or self.token_gap)

    def ready_at(self) -> float:
        """The earliest time the next request may start under both limits."""
        return max(self.next_request, self.next_token)

    def book(self, estimate: int, *, at: float) -> None:
        """A request estimated at ``estimate`` tokens starts at ``at`` (at or after ``ready_at``)."""
        self.next_request = at + self.request_gap
        self.next_token = at + estimate * self.token_gap

    def settle(self, estimate: int, used: int | None) -> None:
        """A reply's usage replaces its request's estimate (None: the reply said nothing, the
        estimate stands)."""
        if used is not None:
            self.next_token += (used - estimate) * self.token_gap

    async def wait(self, estimate: int) -> None:
        """Sleep until the limits allow a request, then book it at that moment. Booked when it
        goes, not ahead: a caller held up (a busy event loop) delays the ones after it rather
        than letting them through together once it is free."""
        if not self.limited:
            return
        while (delay := self.ready_at() - self.clock()) > 0:
            await asyncio.sleep(delay)
        self.book(estimate, at=self.clock())


def per_worker(config: T, fields: tuple[str, ...], workers: int) -> T:
    """``config`` with each per-minute limit named in ``fields`` divided among ``workers``
    processes (each holds a pacer of its own, so together they keep the whole limit).

    >>> from winnow.config import GenerateConfig
    >>> per_worker(GenerateConfig(max_requests_per_minute=600), LIMITS["generate"], 4).max_requests_per_minute
    150.0
    """
    shares = {f: getattr(config, f) / workers for f in fields if getattr(config, f) is not None}
    return dataclasses.replace(config, **shares) if workers > 1 and shares else config  # type: ignore[type-var]


LIMITS = {
    "generate": ("max_requests_per_minute", "max_tokens_per_minute"),
    "score": ("judge_max_requests_per_minute", "judge_max_tokens_per_minute"),
}
"""Each section's per-minute limits (what ``per_worker`` divides)."""


@dataclass
class Usage:
    """What a stage's API requests used, as the API's ``usage`` reports it.

    ``requests``: replies counted; ``unreported``: those of them whose reply gave no usage
    (their prompt tokens are missing from ``prompt_tokens``; their completion tokens are the
    choices' own counts).
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unreported: int = 0

    def add(self, entry: dict) -> None:
        """One request's ``{"prompt_tokens": P, "completion_tokens": C}`` (P None: unreported)."""
        self.requests += 1
        self.prompt_tokens += entry.get("prompt_tokens") or 0
        self.completion_tokens += entry.get("completion_tokens") or 0
        self.unreported += entry.get("prompt_tokens") is None

    @classmethod
    def of_rows(cls, entries: Iterable[dict]) -> Usage:
        """The sum of requests' entries.

        >>> Usage.of_rows([{"prompt_tokens": 3, "completion_tokens": 4}, {"prompt_tokens": None, "completion_tokens": 2}])
        Usage(requests=2, prompt_tokens=3, completion_tokens=6, unreported=1)
        """
        total = cls()
        for entry in entries:
            total.add(entry)
        return total

    def record(self, price_per_mtok: list[float] | None = None) -> dict:
        """The manifest's entry: the counts, and the cost when a price is given.

        >>> Usage(2, 1_000, 500).record([0.15, 0.6])
        {'requests': 2, 'prompt_tokens': 1000, 'completion_tokens': 500, 'price_per_mtok': [0.15, 0.6], 'cost': 0.00045}
        """
        out: dict = {"requests": self.requests, "prompt_tokens": self.prompt_tokens}
        out["completion_tokens"] = self.completion_tokens
        if self.unreported:
            out["requests_without_usage"] = self.unreported
        if price_per_mtok is not None:
            out["price_per_mtok"] = list(price_per_mtok)
            out["cost"] = cost(self.prompt_tokens, self.completion_tokens, price_per_mtok)
        return out


def cost(prompt_tokens: int, completion_tokens: int, price_per_mtok: list[float]) -> float:
    """What the tokens cost at ``[IN, OUT]`` per million, rounded to 1e-9 (float noise off).

    >>> cost(2_000_000, 500_000, [0.15, 0.6])
    0.6
    """
    price_in, price_out = price_per_mtok
    return round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 9)
