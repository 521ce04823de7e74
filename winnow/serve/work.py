"""What runs in the backend thread: one batch of requests sampled, then scored (Best-of-N).

A request travels as a ``Ticket``: its prompt, whether its text is streamed as sampled,
and a ``cancelled`` flag the app sets when its client goes away. The backend (``hf``) reads
the flag every decode step through ``TicketWatch`` and stops that request's rows; its
text deltas come back to the event loop through the ticket's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from winnow.config import ServeConfig
from winnow.generate.contract import Backend, Sampling
from winnow.records import Completion, Prompt
from winnow.rewards import RewardTimeout
from winnow.rewards.apply import RewardApplier
from winnow.serve.reward import scored_candidates

log = logging.getLogger("winnow.serve")


class ApiError(Exception):
    """An answer in the OpenAI error format (``app`` turns it into the response)."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param=None, code=None, headers=None
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


@dataclass
class Outcome:
    """One request's result from the backend thread."""

    prompt_tokens: int
    candidates: list[Completion]
    rewards: list[float] | None
    """Best-of-N: one per candidate (NaN = unscored); None without a reward."""
    step_scores: list[list[float] | None] | None = None
    """Best-of-N: one per candidate, its process reward model's step scores (None: no
    such model, or unscored); None without a reward."""


@dataclass(eq=False)
class Ticket:
    """One request on its way through the batcher."""

    prompt: Prompt
    live: bool = False
    """Stream text as it is sampled (the events go to ``events``)."""
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    events: asyncio.Queue | None = field(default=None, repr=False)
    """(sample index, text delta) pairs, put from the backend thread."""
    cancelled: bool = False
    """Set by the app when the client has gone; read by the backend thread."""

    def push(self, sample: int, delta: str) -> None:
        if self.loop is None or self.events is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(self.events.put_nowait, (sample, delta))


class TicketWatch:
    """``winnow.generate.contract.Watch`` over one batch's tickets (prompt i is ticket i)."""

    def __init__(self, tickets: list[Ticket]):
        self.tickets = tickets

    def streams(self, prompt: int) -> bool:
        return self.tickets[prompt].live

    def text(self, prompt: int, sample: int, delta: str) -> None:
        self.tickets[prompt].push(sample, delta)

    def cancelled(self, prompt: int) -> bool:
        return self.tickets[prompt].cancelled


GONE = ApiError(499, "the client closed the connection", code="client_closed")


def work(
    backend: Backend,
    config: ServeConfig,
    reward: RewardApplier | None,
    tickets: list[Ticket],
    sampling: Sampling,
    seed: int,
) -> list[Outcome | ApiError]:
    """Check prompt lengths, sample the batch, score it (Best-of-N): one result per ticket."""
    prompts = [t.prompt for t in tickets]
    lengths = backend.prompt_lengths(prompts)
    context = backend.context_length()
    out: list[Outcome | ApiError | None] = [
        _refusal(t, length, config.max_prompt_tokens, sampling.max_new_tokens, context)
        for t, length in zip(tickets, lengths, strict=True)
    ]
    keep = [i for i, o in enumerate(out) if o is None]
    rows = _sample(backend, [tickets[i] for i in keep], sampling, seed)
    n = sampling.n
    try:
        scored = _score(reward, prompts, rows, [slot for slot, i in enumerate(keep) if not tickets[i].cancelled], n)
    except RewardTimeout as e:
        for i in keep:
            out[i] = ApiError(504, str(e), type="server_error", code="reward_timeout")
        return out  # type: ignore[return-value]  # every slot is filled
    for slot, i in enumerate(keep):
        part = rows[slot * n : (slot + 1) * n]
        assert all(c.prompt_id == prompts[i].id for c in part)  # rows come grouped by prompt, in order
        if tickets[i].cancelled:
            out[i] = GONE
            continue
        out[i] = Outcome(
            prompt_tokens=lengths[i],
            candidates=part,
            rewards=scored[0][slot * n : (slot + 1) * n] if scored is not None else None,
            step_scores=scored[1][slot * n : (slot + 1) * n] if scored is not None else None,
        )
    return out  # type: ignore[return-value]  # every slot is filled above


def _refusal(ticket: Ticket, length: int, max_prompt_tokens: int, max_new_tokens: int, context: int) -> ApiError | None:
    """Why a request is not sampled (its client left, its prompt is too long); None = it is."""
    if ticket.cancelled:
        return GONE
    if length > max_prompt_tokens:
        return ApiError(
            400,
            f"the prompt has {length} tokens; at most {max_prompt_tokens} are accepted",
            param="messages",
        )
    if length > context - max_new_tokens:
        return ApiError(
            400,
            f"the prompt has {length} tokens, and with max_tokens {max_new_tokens} it exceeds "
            f"the model's context of {context}",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return None


def _sample(backend: Backend, tickets: list[Ticket], sampling: Sampling, seed: int) -> list[Completion]:
    """``sampling.n`` rows per ticket, grouped by ticket in order; a streaming backend is
    handed the tickets to stream text to and to read cancellations from."""
    if not tickets:
        return []
    prompts = [t.prompt for t in tickets]
    if getattr(backend, "streams", False):
        return backend.generate(prompts, sampling, seed, watch=TicketWatch(tickets))  # type: ignore[call-arg]
    return backend.generate(prompts, sampling, seed)


def _score(
    reward: RewardApplier | None, prompts: list[Prompt], rows: list[Completion], scored: list[int], n: int
) -> tuple[list[float], list[list[float] | None]] | None:
    """Best-of-N: the reward and the step scores of each row (NaN and None for the rows of
    slots not in ``scored``, whose client left); None without a reward or when no slot is
    scored. ``RewardTimeout`` passes."""
    if reward is None or not scored:
        return None
    got, steps = scored_candidates(reward, prompts, [rows[s * n + j] for s in scored for j in range(n)])
    rewards = [float("nan")] * len(rows)
    step_scores: list[list[float] | None] = [None] * len(rows)
    for k, s in enumerate(scored):
        rewards[s * n : (s + 1) * n] = got[k * n : (k + 1) * n]
        step_scores[s * n : (s + 1) * n] = steps[k * n : (k + 1) * n]
    return rewards, step_scores
