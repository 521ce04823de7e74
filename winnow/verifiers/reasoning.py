"""Reasoning traces: the answer is the text after the closing tag.

Reasoning models (DeepSeek-R1, Qwen3) write ``<think> ... </think>`` before their answer,
and their chat templates often open the tag in the prompt, so the completion holds only the
closing one. Rewards should judge the answer, not the reasoning: a verifier that read the
reasoning would find the intermediate numbers, a reward model would be paid for length.
A completion whose reasoning never closes has no answer: it scores 0 and is counted
(``unfinished_reasoning`` in the score manifest).
"""

from __future__ import annotations

FORMATS: dict[str, tuple[str, str]] = {"think": ("<think>", "</think>")}
"""Named reasoning formats: name (one of ``config.fields.ReasoningFormat``) -> (opening tag, closing tag)."""


def resolve_tags(tags: list[str] | tuple[str, ...] | None) -> tuple[str, str] | None:
    """``[NAME]`` (a named format) or ``[OPEN, CLOSE]`` -> (OPEN, CLOSE); None stays None.

    >>> resolve_tags(["think"])
    ('<think>', '</think>')
    >>> resolve_tags(["<reasoning>", "</reasoning>"])
    ('<reasoning>', '</reasoning>')
    """
    if not tags:
        return None
    if len(tags) == 1:
        return FORMATS[tags[0]]
    return tags[0], tags[1]


def answer_after_reasoning(text: str, tags: tuple[str, str]) -> str | None:
    """The text after the last closing tag, or None when the reasoning never closed.

    The last closing tag, so no reasoning leaks into the answer; an opening tag after it
    starts reasoning that never closed.

    >>> answer_after_reasoning("<think>6 x 7</think> 42", ("<think>", "</think>"))
    ' 42'
    >>> answer_after_reasoning("6 x 7 is", ("<think>", "</think>")) is None
    True
    >>> answer_after_reasoning("<think>a</think> b <think>c", ("<think>", "</think>")) is None
    True
    """
    open_tag, close_tag = tags
    head, found, answer = text.rpartition(close_tag)
    if not found or open_tag in answer:
        return None
    return answer
