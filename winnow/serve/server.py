"""What every route of one app shares: the backend, the reward, the batcher, the metrics
and the cap on relayed streams, with the steps that use them (queue, wait, count).

One ``Server`` per app, kept on ``app.state.server``; it holds nothing a restart would lose
(its queue is the only state between requests).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from fastapi import Request

from winnow.config import ImagesConfig, ServeConfig
from winnow.errors import WinnowError
from winnow.generate.contract import Backend, Sampling
from winnow.rewards.apply import RewardApplier
from winnow.rewards.pick import Judge, Pick, pick_best_async
from winnow.serve import schema
from winnow.serve.answer import Asked, Picked, check_select_by, choose, judge_key, led_by
from winnow.serve.batcher import Batcher, Job, QueueFull
from winnow.serve.incoming import api_key, disconnected
from winnow.serve.metrics import Metrics
from winnow.serve.work import ApiError, Outcome, Ticket, work


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


class RelayGate:
    """The count of upstream streams being relayed (``--backend openai``, streamed, one
    answer per candidate). They skip the batcher, so its queue cap is applied here."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0

    def enter(self) -> bool:
        """Take a place; False (nothing taken) when ``limit`` streams are open."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


@dataclass(eq=False)
class Server:
    """The shared parts of one app; ``reward`` (the score stage's applier) turns on Best-of-N."""

    backend: Backend
    config: ServeConfig
    backend_name: str
    reward: RewardApplier | None
    batcher: Batcher
    metrics: Metrics
    relays: RelayGate
    key: bytes | None
    """``Bearer <key>`` every request must send (``serve.api_key_env``); None = no key."""
    served: str
    """The model name clients ask for (``served_model_name``, else ``model``)."""
    created: int
    """When the app was made (unix seconds): the ``created`` of ``/v1/models``."""
    judge: Judge | None = None
    """The judge that picks (``--select-by judge``): a request's default, ``select_by: judge``."""
    images: ImagesConfig = field(default_factory=ImagesConfig)
    """How a request's images are checked: ``max_bytes`` caps each decoded ``data:`` URL (the
    body cap, ``max_body_bytes``, applies first); a request carries no paths."""

    @classmethod
    def build(
        cls,
        backend: Backend,
        config: ServeConfig,
        *,
        backend_name: str,
        reward: RewardApplier | None,
        judge: Judge | None = None,
        images: ImagesConfig | None = None,
    ) -> Server:
        """The batcher runs ``work`` (sample, then score) over each batch in its thread."""
        key = api_key(config)  # an unset key variable fails before anything is made
        batcher = Batcher(
            lambda tickets, sampling, seed: work(backend, config, reward, tickets, sampling, seed),
            window_s=config.batch_window_ms / 1000,
            max_batch=config.max_batch_prompts,
            max_queue=config.max_queue,
        )
        metrics = Metrics(lambda: len(batcher.pending), lambda: batcher.running)
        batcher.on_batch = metrics.batch_size.observe
        return cls(
            backend=backend,
            config=config,
            backend_name=backend_name,
            reward=reward,
            batcher=batcher,
            metrics=metrics,
            relays=RelayGate(config.max_queue),
            key=key,
            served=config.served_model_name or config.model,
            created=int(time.time()),
            judge=judge,
            images=images or ImagesConfig(),
        )

    def busy(self) -> ApiError:
        """429 with Retry-After: the queue (or the relay gate) is full."""
        return ApiError(
            429,
            f"the server is busy ({self.config.max_queue} requests waiting); retry after {self.config.retry_after_s} s",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(self.config.retry_after_s)},
        )

    def enqueue(self, sampling: Sampling, ticket: Ticket, seed: int | None) -> Job:
        try:
            return self.batcher.enqueue(sampling, ticket, seed)
        except QueueFull:
            raise self.busy() from None

    async def wait(self, request: Request, ticket: Ticket, job: Job) -> Outcome:
        """The request's outcome, or ``ClientGone`` (its work cancelled) if the client leaves first."""
        waiter = asyncio.ensure_future(self.batcher.wait(job))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not waiter.done():  # the client left, or this handler is being cancelled
                ticket.cancelled = True
                waiter.cancel()
        if not waiter.done() or waiter.cancelled():
            raise ClientGone
        return outcome(waiter.result())

    async def chosen(self, asked: Asked, got: Outcome) -> tuple[Picked, Pick | None]:
        """The answers to return and, where the judge picked, its tournament (else None):
        ``choose``'s by reward, or the judge's pick first (its order seeded by ``judge_key``)."""
        req = asked.req
        by = check_select_by(
            req.select_by, req.aggregate, rewarded=self.reward is not None, judged=self.judge is not None
        )
        if by != "judge" or self.judge is None:
            return choose(req.aggregate, got, req.n), None
        try:
            [verdict] = await pick_best_async(
                self.judge,
                [asked.prompt.content],
                [[c.text for c in got.candidates]],
                [got.rewards] if got.rewards is not None else None,
                [judge_key(req.seed, asked.prompt.content)],
            )
        except WinnowError as e:
            raise ApiError(502, f"the judge that picks failed: {e}", type="server_error", code="judge_failed") from None
        return led_by(got, verdict.index, req.n), verdict

    def judge_usage(self, verdict: Pick | None) -> schema.JudgeUsage | None:
        """What the judge's tournament ``verdict`` used, priced at the judge's price; None
        where no judge picked."""
        if verdict is None or self.judge is None:
            return None
        used = verdict.usage.record(self.judge.price_per_mtok)
        return schema.JudgeUsage(
            calls=verdict.calls,
            prompt_tokens=used["prompt_tokens"],
            completion_tokens=used["completion_tokens"],
            total_tokens=used["prompt_tokens"] + used["completion_tokens"],
            calls_without_usage=used.get("requests_without_usage", 0),
            cost=used.get("cost"),
        )

    def count(
        self,
        got: Outcome,
        picked: Picked,
        arrived: float,
        *,
        streamed: bool,
        first_at: float | None = None,
        judge: schema.JudgeUsage | None = None,
    ):
        """The metrics of one request answered through the batcher; ``judge``: what the judge
        that picked its answer used (``judge_usage``), None where none did."""
        used = (judge.calls, judge.prompt_tokens, judge.completion_tokens) if judge is not None else (0, 0, 0)
        self.metrics.answered(
            candidates=len(got.candidates),
            prompt_tokens=got.prompt_tokens,
            completion_tokens=sum(c.num_tokens for c in got.candidates),
            rewards=[r for _, r in picked],
            arrived=arrived,
            streamed=streamed,
            first_at=first_at,
            judge=used,
        )


def outcome(result: Outcome | ApiError) -> Outcome:
    """The batcher's result for one request, its error raised."""
    if isinstance(result, ApiError):
        raise result
    return result
