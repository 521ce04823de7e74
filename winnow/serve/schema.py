"""Request and response bodies of the OpenAI API, as far as ``winnow serve`` implements it.

Requests are validated strictly, as OpenAI validates them: a field of the wrong JSON type
(``"max_tokens": "4"``, ``"n": true``, ``"seed": 5.0``) is a 400 naming it, never converted; a
number field takes an integer (``"temperature": 1``). Unknown fields are refused
(``extra="forbid"``). An OpenAI field the server does not implement (``presence_penalty``,
``logit_bias`` ...) is accepted at its neutral value, the one clients send by default, which
leaves the answer as it is (``NEUTRAL``); any other value is a 400 naming it, never silently
dropped. Beyond the
official fields, requests may carry ``top_k``, ``min_p``, ``repetition_penalty`` (as vLLM
accepts them) and, in Best-of-N mode, ``best_of``, ``aggregate``, ``select_by``, ``budget`` and
``return_candidates``; responses add ``num_tokens`` and, in Best-of-N mode, ``reward`` to
each choice and ``candidate_rewards`` to the body (with ``return_candidates``, also
``candidates``, ``selected_index``, ``selected_by`` and ``judge_agrees``). Where a judge
picked, the body also carries ``judge_usage``: the judge's tokens, apart from ``usage``,
which counts the served model's alone.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from winnow.config import GenerateConfig
from winnow.config.fields import bounds, problem_of

MAX_STOP = 16
"""Most stop strings a request may give (OpenAI takes 4; vLLM more)."""
MAX_STOP_CHARS = 256


class Strict(BaseModel):
    # strict: a JSON value of the wrong type is refused, not converted ("4" is no integer, true
    # no number), except that a float field takes an integer, as JSON and OpenAI have it.
    # allow_inf_nan: JSON has no Infinity or NaN, but pydantic's parser reads them; no field wants them
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


NEUTRAL: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (0.0,),
    "frequency_penalty": (0.0,),
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "echo": (False,),
    "suffix": (None, ""),
}
"""OpenAI fields ``winnow serve`` does not implement, each with its neutral values: those that
leave the answer as it is, which chat front-ends and client libraries send by default. Each is
a request field (typed as OpenAI types it); a request whose value is not neutral is refused."""


def is_neutral(field: str, value: Any, neutral: dict[str, tuple[Any, ...]] = NEUTRAL) -> bool:
    """Whether ``value`` is one of the field's neutral values, type included (``0`` is not ``false``).

    >>> is_neutral("echo", False), is_neutral("echo", 0), is_neutral("presence_penalty", 0.0)
    (True, False, True)
    >>> is_neutral("response_format", {"type": "json_object"})
    False
    """
    return any(type(value) is type(n) and value == n for n in neutral[field])


def like(default: Any, name: str, *, sides: tuple[str, ...] = ("ge", "gt", "le", "lt"), **more: float) -> Any:
    """A request field bounded as generate's config field ``name`` is (its ``sides`` of it):
    one range for ``winnow generate`` and the server."""
    limits = {**bounds(GenerateConfig, name, sides=sides), **more}
    return Field(default, ge=limits.get("ge"), gt=limits.get("gt"), le=limits.get("le"), lt=limits.get("lt"))


class StreamOptions(Strict):
    include_usage: bool = False
    """Send a last chunk with the request's usage (every candidate's tokens count)."""


class SamplingFields(Strict):
    """Fields shared by chat and text completion requests, each bounded here, at the edge: a
    value the backend could not sample with (a seed past 64 bits, a temperature whose
    division overflows) is a 400 naming the field, never a failure inside a shared batch.

    The sampling fields take their bounds from generate's config fields (``GenerateConfig``),
    so a request is refused exactly where ``winnow generate`` refuses the same value; n,
    best_of and max_tokens take only the lower bound there, their most is the server's own
    setting (``max_n``, ``max_best_of``, ``max_tokens``)."""

    model: str
    n: int = like(1, "n", sides=("ge",))
    best_of: int | None = like(None, "n", sides=("ge",))
    temperature: float = like(1.0, "temperature", sides=("le",), ge=0)
    """0 is greedy; else at least generate's floor (``config.MIN_TEMPERATURE``, checked below)."""
    top_p: float = like(1.0, "top_p")
    max_tokens: int | None = like(None, "max_new_tokens")
    seed: int | None = like(None, "seed")
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    top_k: int = like(0, "top_k")
    min_p: float = like(0.0, "min_p")
    repetition_penalty: float = like(1.0, "repetition_penalty")
    aggregate: str | None = None
    """Best-of-N: how the answer is chosen from the candidates: ``best`` (highest reward),
    ``majority`` or ``weighted`` (votes over their final answers), ``confidence`` (votes
    weighted by the model's token confidence, from log-probabilities every backend gives);
    the list is ``answer.AGGREGATES``."""
    select_by: str | None = None
    """Best-of-N: what picks the answer: ``reward`` (``aggregate``'s choice) or ``judge`` (the
    judge model the server was started with, ``--select-by judge``, comparing the candidates
    in a tournament); default: the server's ``--select-by``. The list is ``answer.SELECT_BY``."""
    budget: int | None = Field(None, ge=1)
    """Best-of-N: most completion tokens the candidates may use together. It buys whole
    candidates at their worst case: ``min(best_of, budget // max_tokens)`` are sampled, each
    with its full ``max_tokens``, so ``usage.completion_tokens`` never passes it; a budget
    that buys fewer than ``n`` candidates is a 400."""
    return_candidates: bool = False
    """Best-of-N: the body also carries ``candidates`` (every candidate sampled, with its
    text and reward) and ``selected_index`` (the candidate the first choice is)."""
    presence_penalty: float = 0.0
    """Not implemented: only 0 is accepted (``NEUTRAL``)."""
    frequency_penalty: float = 0.0
    """Not implemented: only 0 is accepted."""
    logit_bias: dict[str, int] | None = None
    """Not implemented: only null or ``{}`` is accepted."""

    neutral: ClassVar[dict[str, tuple[Any, ...]]] = NEUTRAL
    """The neutral values of this body's unimplemented fields (a body may narrow ``NEUTRAL``)."""

    @field_validator(*NEUTRAL, check_fields=False)
    @classmethod
    def _neutral_only(cls, value: Any, info: ValidationInfo) -> Any:
        field = info.field_name or ""
        if not is_neutral(field, value, cls.neutral):
            accepted = " or ".join(_json(n) for n in cls.neutral[field])
            raise ValueError(
                f"not implemented by winnow serve: only {accepted} (which leaves the answer unchanged) "
                f"is accepted, got {_json(value)}"
            )
        return value

    @field_validator("temperature")
    @classmethod
    def _not_tiny(cls, value: float) -> float:
        problem = problem_of(GenerateConfig, "temperature", value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings, got {len(stops)}")
        for s in stops:
            if not s:
                raise ValueError("a stop string must not be empty")
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(f"a stop string has at most {MAX_STOP_CHARS} characters, got {len(s)}")
        return value

    def asked_logprobs(self) -> int | None:
        """Top log-probabilities asked for per token; None: no logprobs (each body says how it asks)."""
        return None

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def _json(value: Any) -> str:
    """A value as the client wrote it, near enough: ``-1.0`` (a float field's -1) as ``-1``."""
    return json.dumps(int(value) if isinstance(value, float) and value.is_integer() else value)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str
    """A ``data:image/...;base64,`` URL (the server downloads nothing)."""
    detail: Literal["auto"] = "auto"
    """Only ``auto``: the model's processor decides the resolution."""


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart | ImagePart]
    """Text, or content parts: text and images (for a vision-language model)."""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = like(None, "max_new_tokens")
    logprobs: bool | None = None
    """true: each choice's ``logprobs.content`` gives every token's log-probability under the
    model's own distribution (before temperature and the other sampling settings), with its
    ``top_logprobs`` most likely alternatives (``--backend hf``; not with ``stream``)."""
    top_logprobs: int | None = Field(None, ge=0, le=20)
    """With logprobs: the most likely tokens listed at each position, 0 to 20."""

    def asked_logprobs(self) -> int | None:
        """Top log-probabilities asked for per token; None: no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None

    response_format: dict[str, Any] | None = None
    """Not implemented: only null or ``{"type": "text"}`` is accepted."""
    tools: list[dict[str, Any]] | None = None
    """Not implemented: only null or ``[]`` is accepted."""
    tool_choice: str | dict[str, Any] | None = None
    """Not implemented: only null or ``"none"`` is accepted."""


class CompletionRequest(SamplingFields):
    prompt: str
    logprobs: int | None = Field(None, ge=0, le=20)
    """Each choice's ``logprobs`` gives every token's log-probability under the model's own
    distribution, with this many most likely alternatives per position (0 to 20; 0: the
    sampled tokens' alone); ``--backend hf``, not with ``stream``."""
    echo: bool = False
    """Not implemented: only false is accepted."""
    suffix: str | None = None
    """Not implemented: only null or ``""`` is accepted."""

    def asked_logprobs(self) -> int | None:
        """Top log-probabilities asked for per token; None: no logprobs."""
        return self.logprobs


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class JudgeUsage(BaseModel):
    """What the judge that picked used for one request (``select_by: judge``). Apart from
    ``usage``, which counts the served model's tokens alone: the judge is another model, at
    another price, and ``usage.completion_tokens`` stays within the request's ``budget``."""

    calls: int
    """Judge calls the tournament made."""
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    calls_without_usage: int = 0
    """Calls whose reply gave no ``usage``: their prompt tokens are missing from
    ``prompt_tokens``, their completion tokens are the reply's own count."""
    cost: float | None = None
    """What the tokens cost at the server's ``--pick-price-per-mtok``; None without one."""


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    """One entry per completion token, the sampled token's log-probability and its alternatives."""


class TextLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    """'stop' or 'length'; with ``--backend openai``, another reason the upstream gave
    (``content_filter``, ``abort``) or ``other`` when it gave none."""
    logprobs: ChatLogprobs | None = None
    """With ``logprobs: true``: every completion token's log-probability (EOS included)."""
    num_tokens: int
    """Completion tokens of this choice (winnow extension: usage only gives the total)."""
    reward: float | None = None
    """Best-of-N: this answer's reward (None = unscored)."""


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    """'stop' or 'length'; with ``--backend openai``, another reason the upstream gave
    (``content_filter``, ``abort``) or ``other`` when it gave none."""
    logprobs: TextLogprobs | None = None
    """With ``logprobs: K``: every completion token's log-probability (EOS included)."""
    num_tokens: int
    reward: float | None = None


class Candidate(BaseModel):
    """One candidate sampled for a Best-of-N answer (``return_candidates``)."""

    index: int
    """Its place in sampling order: the index into ``candidate_rewards``."""
    text: str
    finish_reason: str
    num_tokens: int
    reward: float | None
    """Its reward (None = unscored)."""
    step_scores: list[float] | None = None
    """One score per step from a process reward model (``--prm-model``); None without one."""
    confidence: float | None = None
    """Its lowest group confidence, what a ``confidence`` vote weighs it by
    (``winnow.confidence``); None when it was sampled without log-probabilities."""


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    candidate_rewards: list[float | None] | None = None
    """Best-of-N: the reward of every candidate sampled, in sampling order (None = unscored)."""
    candidates: list[Candidate] | None = None
    """``return_candidates``: every candidate sampled, in sampling order."""
    selected_index: int | None = None
    """``return_candidates``: the index (in ``candidates``) of the first choice's candidate."""
    selected_by: str | None = None
    """``return_candidates``: what picked it, ``reward`` or ``judge``."""
    judge_agrees: bool | None = None
    """``return_candidates`` with ``selected_by: judge``: whether the judge's pick is the
    candidate the highest reward picks (the earliest on a tie); None without a judge or
    when no candidate is scored."""
    judge_calls: int | None = None
    """``return_candidates`` with ``selected_by: judge``: the judge calls its tournament made."""
    judge_usage: JudgeUsage | None = None
    """``selected_by: judge``: the judge's tokens (left out when no judge picked)."""


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    candidate_rewards: list[float | None] | None = None
    candidates: list[Candidate] | None = None
    selected_index: int | None = None
    selected_by: str | None = None
    judge_agrees: bool | None = None
    judge_calls: int | None = None
    judge_usage: JudgeUsage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "winnow"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail
