"""Server-sent events as the OpenAI API streams them.

Each event is ``data: <compact JSON>\\n\\n``; the stream ends with ``data: [DONE]\\n\\n``.
A chat stream sends ``chat.completion.chunk`` objects: first a delta with the role, then
deltas with content, then one chunk per choice with an empty delta and its
``finish_reason``; a text stream sends ``text_completion`` objects with ``text``. With
``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk
with no choices carries the usage. winnow's extensions ride on the finishing chunk of each
choice: ``num_tokens`` and, in Best-of-N mode, ``reward`` (and ``candidate_rewards`` on
the body of the last one). Lines starting with ``:`` are SSE comments, which clients
ignore: the server sends ``: keep-alive`` while an answer is not ready to stream.
"""

from __future__ import annotations

import json
import re
from typing import Any

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of the stream


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def pieces(text: str) -> list[str]:
    """A finished answer cut into word-sized deltas whose concatenation is ``text``.

    >>> pieces("Hello there,  world\\n")
    ['Hello ', 'there,  ', 'world\\n']
    """
    return [p for p in re.findall(r"\s*\S+\s*|\s+", text) if p] if text else []


class Chunks:
    """The events of one streamed answer: ``kind`` is "chat" or "text"."""

    def __init__(self, kind: str, id: str, created: int, model: str, include_usage: bool):
        self.kind, self.include_usage = kind, include_usage
        self.head: dict[str, Any] = {
            "id": id,
            "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": created,
            "model": model,
        }

    def _chunk(self, choices: list[dict], **extra) -> bytes:
        body = {**self.head, "choices": choices, **extra}
        if self.include_usage and "usage" not in body:
            body["usage"] = None
        return event(body)

    def _choice(self, index: int, content: dict, finish_reason: str | None, **extra) -> dict:
        if self.kind == "chat":
            return {"index": index, "delta": content, "logprobs": None, "finish_reason": finish_reason, **extra}
        return {
            "index": index,
            "text": content.get("content", ""),
            "logprobs": None,
            "finish_reason": finish_reason,
            **extra,
        }

    def role(self, index: int) -> bytes:
        """Chat streams open each choice with the assistant role (text streams send nothing)."""
        return self._chunk([self._choice(index, {"role": "assistant", "content": ""}, None)])

    def delta(self, index: int, text: str) -> bytes:
        return self._chunk([self._choice(index, {"content": text}, None)])

    def finish(self, index: int, finish_reason: str, choice_extra: dict, body_extra: dict) -> bytes:
        return self._chunk([self._choice(index, {}, finish_reason, **choice_extra)], **body_extra)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return self._chunk([], usage=usage)


def error(status: int, message: str, type: str, code: str | None) -> bytes:
    """An error met after the stream began (its 200 is already sent): the OpenAI error body
    as an event, which the openai client raises as an ``APIError``."""
    return event({"error": {"message": message, "type": type, "param": None, "code": code, "status": status}})
