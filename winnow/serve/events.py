"""The event stream of a request served through the batcher (``stream: true``).

Live (no reward, or ``best_of`` 1): each text delta is sent as the backend samples it
(``work.Ticket``'s queue). Best-of-N: nothing can be sent before every candidate is
scored, so a ``: keep-alive`` comment goes out every ``keepalive_s`` meanwhile. Then the
chosen answers: what was not streamed yet, cut into word-sized deltas, and one finishing
chunk per choice (``stream.Chunks``). An error met after the 200 was sent goes into the
stream as the OpenAI error event. A client that leaves mid-stream cancels its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any

from winnow.rewards.pick import Pick
from winnow.serve import schema, stream
from winnow.serve.answer import Asked, Picked, extras, listed
from winnow.serve.batcher import Job
from winnow.serve.server import Server, outcome
from winnow.serve.work import ApiError, Outcome, Ticket

log = logging.getLogger("winnow.serve")


@dataclass
class Progress:
    """What a stream has sent so far."""

    sent: dict[int, str] = field(default_factory=dict)
    """Sample index -> the text streamed of it so far (live streams only)."""
    first_at: float | None = None
    """``time.perf_counter()`` at the first content byte; None until then."""

    def mark(self) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()


async def batched_events(server: Server, asked: Asked, ticket: Ticket, job: Job) -> AsyncGenerator[bytes, None]:
    """The SSE stream of one request served through the batcher."""
    chunks = stream.Chunks(asked.kind, asked.prompt.id, int(time.time()), server.served, asked.include_usage)
    waiter = asyncio.ensure_future(server.batcher.wait(job))
    progress = Progress()
    try:
        if asked.kind == "chat":
            for i in range(asked.req.n):
                yield chunks.role(i)
        sampled = _sampled(ticket, waiter, chunks, server.config.keepalive_s, progress)
        async with contextlib.aclosing(sampled):
            async for event in sampled:
                yield event
        try:
            got = outcome(waiter.result())
            picked, verdict = await server.chosen(asked, got)
        except ApiError as e:
            yield stream.error(e.status, e.message, e.type, e.code)
            yield stream.DONE
            return
        except Exception as e:  # noqa: BLE001 -- the 200 is sent: the error goes in the stream
            log.error("request failed: %s: %s", type(e).__name__, e)
            yield stream.error(500, f"the backend failed: {type(e).__name__}", "server_error", None)
            yield stream.DONE
            return
        rewarded = server.reward is not None
        used = server.judge_usage(verdict)
        for event in _answered(chunks, asked, got, picked, ticket.live, rewarded, progress, verdict, used):
            yield event
        yield stream.DONE
        server.count(got, picked, asked.arrived, streamed=True, first_at=progress.first_at, judge=used)
    finally:
        if not waiter.done():  # the client left mid-stream: stop its work
            ticket.cancelled = True
            waiter.cancel()


async def _sampled(
    ticket: Ticket, waiter: asyncio.Future, chunks: stream.Chunks, keepalive_s: float, progress: Progress
) -> AsyncGenerator[bytes, None]:
    """Deltas as the backend sends them, keep-alives while none comes; ends once the batch
    is done and every delta it sent has gone out."""
    assert ticket.events is not None
    events = ticket.events
    getter: asyncio.Future | None = None
    try:
        while not waiter.done() or not events.empty():
            if events.empty():
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({waiter, getter}, timeout=keepalive_s, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    if not done:
                        yield stream.KEEPALIVE
                    continue
                sample, delta = getter.result()
            else:
                sample, delta = events.get_nowait()
            progress.sent[sample] = progress.sent.get(sample, "") + delta
            progress.mark()
            yield chunks.delta(sample, delta)
    finally:
        if getter is not None:
            getter.cancel()


def _answered(
    chunks: stream.Chunks,
    asked: Asked,
    got: Outcome,
    picked: Picked,
    live: bool,
    rewarded: bool,
    progress: Progress,
    verdict: Pick | None = None,
    judge_usage: schema.JudgeUsage | None = None,
) -> Iterator[bytes]:
    """The chosen answers after what was streamed live: the rest of each text, its finishing
    chunk (``num_tokens``; Best-of-N: ``reward``, and on the last ``candidate_rewards``, with
    ``return_candidates`` also ``candidates`` and ``selected_index``, and ``judge_usage`` where
    a judge picked), the usage."""
    more = extras(got)
    for index, (c, r) in enumerate(picked):
        done_text = progress.sent.get(index, "") if live else ""
        if not c.text.startswith(done_text):  # cannot happen with hf._StepWatch's rules; say so if it does
            log.warning("%s: streamed text is not a prefix of the final text", asked.prompt.id)
        rest = c.text[len(done_text) :] if c.text.startswith(done_text) else ""
        for piece in stream.pieces(rest):
            progress.mark()
            yield chunks.delta(index, piece)
        choice_extra: dict[str, Any] = {"num_tokens": c.num_tokens}
        body_extra: dict[str, Any] = {}
        if rewarded:
            choice_extra["reward"] = r
            if index == len(picked) - 1:
                body_extra["candidate_rewards"] = more["candidate_rewards"]
                if asked.req.return_candidates:
                    body_extra |= _as_json(listed(got, picked, verdict))
                if judge_usage is not None:
                    body_extra["judge_usage"] = judge_usage.model_dump()
        yield chunks.finish(index, c.finish_reason, choice_extra, body_extra)
    if asked.include_usage:
        usage = more["usage"]
        yield chunks.usage(usage.prompt_tokens, usage.completion_tokens)


def _as_json(fields: dict[str, Any]) -> dict[str, Any]:
    """Pydantic values (the candidates) as the plain JSON values an event carries."""
    return {k: [x.model_dump() for x in v] if isinstance(v, list) else v for k, v in fields.items()}
