"""What a 200 reply of an OpenAI-compatible server must hold before a row is made of it.

The reply is read as raw JSON (the official client's models coerce ``true`` and ``"7"`` to
token counts and fill missing fields), bounded in size, and checked field by field. Any
departure is a ``remote.InvalidReply``, which ``remote.call`` retries like a 5xx and, if it
persists, turns into one line naming the prompt: nothing a server invents reaches a shard.
Shared by the ``openai`` generation backend and the judge reward, so the two cannot drift.

Rules of one choice (``choices`` is a non-empty list of objects whose ``index`` fields are 0..k-1):

- text: ``message.content`` (chat) or ``text`` (completions), a string of valid Unicode (no
  lone surrogate) of at most ``TEXT_CHARS_PER_TOKEN`` characters per token of
  ``max_tokens``. Missing, null, ``0``, ``false``, ``[]`` are all refused, never read as "".
- token count: the choice's ``num_tokens`` (``winnow serve``), else ``usage.completion_tokens``
  for a lone choice, else the length of its logprobs; an int (not a bool, not a string) in
  [0, max_tokens]. ``usage.completion_tokens``, when given, is such an int up to
  candidates * max_tokens, where candidates is the number of choices, or, for a reply of a
  Best-of-N server that bills every candidate it sampled (``winnow serve --best-of K``), the
  length of its ``candidate_rewards`` (a list of at least as many entries as choices). Such a
  total is never read as one choice's count.
- finish reason: kept as the server gave it (``stop``, ``length``, ``content_filter``,
  ``abort``...), a short name; missing or null is ``other``. Only ``stop`` counts as a
  completion that ended on its own (``ended_on_its_own``): selection's ``drop_truncated``
  and the report's cut share count every other reason.
- usage (``usage_of``): ``usage.prompt_tokens``, when given, an int in [0, 2**31).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from winnow.confidence import TokenLogprobs
from winnow.remote import InvalidReply

TEXT_CHARS_PER_TOKEN = 256
"""Most characters of text per token of max_tokens: a generous bound (the longest tokens of
common vocabularies are runs of a few dozen spaces or dashes)."""
BYTES_PER_TOKEN = 2048
"""Most bytes of reply per token asked for (n * max_tokens): room for the text escaped as
``\\uXXXX`` and for a logprobs entry per token."""
BODY_SLACK = 64 * 1024
"""Bytes of reply beyond that: ids, usage, headers of the JSON object."""
NO_REASON = "other"
"""The finish reason of a choice whose server gave none (missing or null)."""
MAX_PROMPT_TOKENS = 1 << 31
"""Most prompt tokens a reply's usage may report (no context is longer)."""
REASON_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass
class Choice:
    text: str
    num_tokens: int | None
    finish_reason: str
    logprobs: TokenLogprobs | None = None
    """Per-token log-probabilities, when they were asked for (``parse_choices(top_logprobs=k)``)."""


def reply_limit(n: int, max_tokens: int, *, top_logprobs: int = 0) -> int:
    """Most bytes a reply of ``n`` choices of at most ``max_tokens`` tokens may take, with
    ``top_logprobs`` top entries per token beside each token's own.

    >>> reply_limit(1, 16), reply_limit(1, 16, top_logprobs=20)
    (98304, 753664)
    """
    return BODY_SLACK + n * max_tokens * BYTES_PER_TOKEN * (1 + top_logprobs)


def ended_on_its_own(finish_reason: str) -> bool:
    """Only 'stop' (EOS or a stop string): 'length' was cut, and 'content_filter', 'abort'
    or 'other' were ended by the server, not the model.

    >>> [ended_on_its_own(r) for r in ("stop", "length", "content_filter", "other")]
    [True, False, False, False]
    """
    return finish_reason == "stop"


def finish_reason(value: Any, where: str = "choice") -> str:
    """The server's reason as given; ``other`` when it gave none; an invalid reply when it is
    not a short name.

    >>> finish_reason("length"), finish_reason("content_filter"), finish_reason(None)
    ('length', 'content_filter', 'other')
    """
    if value is None:
        return NO_REASON
    if not isinstance(value, str) or not REASON_NAME.fullmatch(value):
        raise InvalidReply(f"{where}: finish_reason {_short(value)} is not a reason's name")
    return value


def parse_choices(body: Any, *, chat: bool, max_tokens: int, top_logprobs: int = 0) -> list[Choice]:
    """The choices of a decoded chat (``chat=True``) or text completion, in index order.

    body: the reply's JSON. Returns one Choice per entry of ``choices``; ``num_tokens`` is
    None when the reply says nothing of it (callers that need it refuse that themselves).
    top_logprobs: k > 0 when the request asked for k top log-probabilities per token: each
    choice must then carry them (``token_logprobs``), and its ``logprobs`` holds them.
    """
    rows = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not all(isinstance(c, dict) for c in rows):
        raise InvalidReply(f"no list of choices in {type(body).__name__}")
    if not rows:
        raise InvalidReply("an empty list of choices")
    if sorted(_index(c) for c in rows) != list(range(len(rows))):
        raise InvalidReply(f"choice indices {[c.get('index') for c in rows][:8]} are not 0..{len(rows) - 1}")
    rows = sorted(rows, key=_index)
    usage = body.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise InvalidReply(f"usage {_short(usage)} is not an object")
    total = (usage or {}).get("completion_tokens")
    sampled = candidates_sampled(body, len(rows))
    if total is not None:
        _count(total, sampled * max_tokens, "usage.completion_tokens")
    choices = [_choice(c, chat, max_tokens, total if sampled == 1 else None) for c in rows]
    if top_logprobs:
        for choice, c in zip(choices, rows, strict=True):
            choice.logprobs = token_logprobs(c.get("logprobs"), chat=chat, k=top_logprobs, where=f"choice {c['index']}")
    return choices


def candidates_sampled(body: dict, choices: int) -> int:
    """How many completions the reply's usage pays for: its ``choices``, or the length of its
    ``candidate_rewards`` where a Best-of-N server lists every candidate it sampled (their
    tokens are all in ``usage.completion_tokens``, as the caller pays for all of them).

    >>> candidates_sampled({}, 2), candidates_sampled({"candidate_rewards": [0.5, None, 1.0, 2.0]}, 1)
    (2, 4)
    >>> candidates_sampled({"candidate_rewards": [1.0]}, 2)
    Traceback (most recent call last):
    ...
    winnow.remote.InvalidReply: candidate_rewards [1.0] is not a list of at least 2 candidates' rewards
    """
    listed = body.get("candidate_rewards")
    if listed is None:
        return choices
    if not isinstance(listed, list) or len(listed) < choices:
        raise InvalidReply(
            f"candidate_rewards {_short(listed)} is not a list of at least {choices} candidates' rewards"
        )
    return len(listed)


def token_logprobs(value: Any, *, chat: bool, k: int, where: str) -> TokenLogprobs:
    """A choice's ``logprobs`` as asked with k top log-probabilities, read strictly.

    Chat: ``{"content": [{"logprob": x, "top_logprobs": [{"logprob": y}, ...]}, ...]}``;
    completions: ``{"token_logprobs": [x, ...], "top_logprobs": [{"<token>": y, ...}, ...]}``.
    Each log-probability is a finite number <= 0 (an int or a float, not a bool); each token
    has at least one top entry, and its confidence is minus the mean of its k highest (a
    completions reply keys them by token text, so two tokens of one text arrive as one).
    """
    pairs = _chat_pairs(value) if chat else _text_pairs(value)
    if pairs is None:
        raise InvalidReply(f"{where}: no per-token logprobs, though {k} top log-probabilities were asked for")
    sampled, confidence = [], []
    for t, (x, tops) in enumerate(pairs):
        if not isinstance(tops, list) or not tops:
            raise InvalidReply(f"{where}: token {t} has no top log-probabilities")
        sampled.append(_logprob(x, f"{where}: token {t}"))
        values = sorted((_logprob(y, f"{where}: token {t}") for y in tops), reverse=True)
        confidence.append(-float(np.mean(values[:k])))
    return TokenLogprobs(tuple(sampled), tuple(confidence))


def _chat_pairs(value: Any) -> list[tuple[Any, Any]] | None:
    """(sampled log-probability, top log-probabilities) per token of a chat choice's logprobs."""
    content = value.get("content") if isinstance(value, dict) else None
    if not isinstance(content, list) or not all(isinstance(e, dict) for e in content):
        return None
    return [(e.get("logprob"), _top_values(e.get("top_logprobs"))) for e in content]


def _top_values(tops: Any) -> Any:
    """A chat token's ``top_logprobs`` entries' log-probabilities (as given when not a list of objects)."""
    if isinstance(tops, list) and all(isinstance(t, dict) for t in tops):
        return [t.get("logprob") for t in tops]
    return tops


def _text_pairs(value: Any) -> list[tuple[Any, Any]] | None:
    """(sampled log-probability, top log-probabilities) per token of a completions choice's logprobs."""
    if not isinstance(value, dict):
        return None
    sampled, tops = value.get("token_logprobs"), value.get("top_logprobs")
    if not isinstance(sampled, list) or not isinstance(tops, list) or len(sampled) != len(tops):
        return None
    return [(x, list(t.values()) if isinstance(t, dict) else t) for x, t in zip(sampled, tops, strict=True)]


def _logprob(value: Any, where: str) -> float:
    """A log-probability: a finite number <= 0, not a bool."""
    if type(value) not in (int, float) or not math.isfinite(value) or value > 0:
        raise InvalidReply(f"{where}: logprob {_short(value)} is not a finite number <= 0")
    return float(value)


def usage_of(body: dict, choices: list[Choice]) -> dict:
    """What one request used: ``{"prompt_tokens": P, "completion_tokens": C}`` from the
    reply's ``usage`` (checked by ``parse_choices`` first). P is None when the reply gives
    none; C, when it gives none, is the sum of the choices' own counts.

    >>> c = [Choice("hi", 2, "stop")]
    >>> usage_of({"usage": {"prompt_tokens": 9, "completion_tokens": 2}}, c), usage_of({}, c)
    ({'prompt_tokens': 9, 'completion_tokens': 2}, {'prompt_tokens': None, 'completion_tokens': 2})
    """
    usage = body.get("usage") or {}
    prompt = usage.get("prompt_tokens")
    if prompt is not None:
        _count(prompt, MAX_PROMPT_TOKENS, "usage.prompt_tokens")
    completion = usage.get("completion_tokens")
    if completion is None:
        completion = sum(c.num_tokens or 0 for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def _choice(c: dict, chat: bool, max_tokens: int, usage_count: Any) -> Choice:
    where = f"choice {c['index']}"
    holder, key = (c.get("message"), "content") if chat else (c, "text")
    if not isinstance(holder, dict):
        raise InvalidReply(f"{where}: no message object")
    if key not in holder:
        raise InvalidReply(f"{where}: no {key}")
    text = holder[key]
    if not isinstance(text, str):
        raise InvalidReply(f"{where}: {key} {_short(text)} is not a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidReply(f"{where}: text is not valid Unicode (a lone surrogate)") from None
    if len(text) > max_tokens * TEXT_CHARS_PER_TOKEN:
        raise InvalidReply(f"{where}: {len(text)} characters, more than {max_tokens} tokens can hold")
    count = c.get("num_tokens")
    if count is None:
        count = usage_count
    if count is None:
        logprobs = c.get("logprobs")
        tokens = None
        if isinstance(logprobs, dict):
            tokens = logprobs.get("content") if chat else logprobs.get("tokens")
        count = len(tokens) if isinstance(tokens, list) else None
    if count is not None:
        _count(count, max_tokens, f"{where}: num_tokens")
    return Choice(text=text, num_tokens=count, finish_reason=finish_reason(c.get("finish_reason"), where))


def _index(c: dict) -> int:
    index = c.get("index")
    if type(index) is not int:
        raise InvalidReply(f"choice index {_short(index)} is not an integer")
    return index


def _count(value: Any, most: int, what: str) -> None:
    """A token count: an int (``true`` and ``"7"`` are not) in [0, most]."""
    if type(value) is not int or not 0 <= value <= most:
        raise InvalidReply(f"{what} {_short(value)} is not a token count in [0, {most}]")


def _short(value: Any) -> str:
    """A value for a message line, cut to 60 characters (a reply may hold anything)."""
    text = json.dumps(value[:61] if isinstance(value, str) else value, ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."
