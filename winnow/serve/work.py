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
from winnow.serve.reward import score_candidates

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
    room = backend.context_length() - sampling.max_new_tokens
    out: list[Outcome | ApiError | None] = [None] * len(prompts)
    keep = []
    for i, length in enumerate(lengths):
        if tickets[i].cancelled:
            out[i] = GONE
        elif length > config.max_prompt_tokens:
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
    rows: list[Completion] = []
    if keep:
        kept = [prompts[i] for i in keep]
        if getattr(backend, "streams", False):
            watch = TicketWatch([tickets[i] for i in keep])
            rows = backend.generate(kept, sampling, seed, watch=watch)  # type: ignore[call-arg]
        else:
            rows = backend.generate(kept, sampling, seed)
    n = sampling.n
    rewards: list[float] | None = None
    scored = [slot for slot, i in enumerate(keep) if not tickets[i].cancelled]
    if reward is not None and scored:
        try:
            got = score_candidates(reward, prompts, [rows[s * n + j] for s in scored for j in range(n)])
        except RewardTimeout as e:
            for i in keep:
                out[i] = ApiError(504, str(e), type="server_error", code="reward_timeout")
            return out  # type: ignore[return-value]  # every slot is filled
        rewards = [float("nan")] * len(rows)
        for k, s in enumerate(scored):
            rewards[s * n : (s + 1) * n] = got[k * n : (k + 1) * n]
    for slot, i in enumerate(keep):
        part = rows[slot * n : (slot + 1) * n]
        assert all(c.prompt_id == prompts[i].id for c in part)  # rows come grouped by prompt, in order
        if tickets[i].cancelled:
            out[i] = GONE
            continue
        out[i] = Outcome(
            prompt_tokens=lengths[i],
            candidates=part,
            rewards=rewards[slot * n : (slot + 1) * n] if rewards is not None else None,
        )
    return out  # type: ignore[return-value]  # every slot is filled above
