"""Generation backends behind one small Protocol, chosen by an explicit name.

A backend turns prompts into completions; the stage (``winnow.stages.generate``) owns
sharding, seeding, the run folder and provenance. A new engine (vLLM, an OpenAI-compatible
server) is one more module satisfying ``Backend`` and one more entry in ``make_backend``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from winnow.errors import WinnowError
from winnow.records import Completion, Prompt

if TYPE_CHECKING:
    from winnow.remote import ClientSettings


@dataclass(frozen=True)
class Sampling:
    """The one sampling contract every backend receives (the seed comes per call).

    The first five fields are honoured by every backend. The optional ones have a neutral
    value (``OPTIONAL_SAMPLING``); a backend that cannot honour one refuses a non-neutral
    value by name before anything is sampled (``check_sampling``), never ignores it.
    """

    n: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top token's; 0 = off."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty on tokens already in the prompt or completion; 1 = off."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion (not included in its text); finish_reason 'stop'."""


OPTIONAL_SAMPLING: dict[str, object] = {"min_p": 0.0, "repetition_penalty": 1.0, "stop": ()}
"""Optional sampling fields and their neutral ("off") values."""

BACKENDS: dict[str, frozenset[str]] = {
    # top_k, min_p and repetition_penalty travel to an openai server as extra body fields (see openai_api)
    "hf": frozenset({"min_p", "repetition_penalty", "stop"}),
    "openai": frozenset({"min_p", "repetition_penalty", "stop"}),
    "vllm": frozenset({"min_p", "repetition_penalty", "stop"}),
}
"""Every backend name, with the optional sampling fields it honours: the one list of backends."""


def check_sampling(backend: str, sampling: Sampling) -> None:
    """Refuse, by name, an optional sampling field the backend would not honour."""
    for name, neutral in OPTIONAL_SAMPLING.items():
        value = getattr(sampling, name)
        if value != neutral and name not in BACKENDS[backend]:
            raise WinnowError(
                f"generate.{name}: backend {backend!r} does not support {name} (got {value!r}); "
                f"leave it at {neutral!r} or use a backend that does"
            )


class Watch(Protocol):
    """Follows one ``generate`` call while it runs (``winnow serve`` streams and cancels with it).

    ``prompt`` is the index of a prompt in the call's list, ``sample`` a sample index.
    """

    def streams(self, prompt: int) -> bool:
        """Whether this prompt's text should be reported as it is sampled."""
        ...

    def text(self, prompt: int, sample: int, delta: str) -> None:
        """More text of a streamed sample; the deltas are a prefix of its final text."""
        ...

    def cancelled(self, prompt: int) -> bool:
        """Whether to stop sampling this prompt (its rows are then cut short, to be discarded)."""
        ...


class Backend(Protocol):
    model: str
    """The model spec as given; recorded on every completion row."""

    def context_length(self) -> int:
        """Most tokens (prompt + completion) the model takes."""
        ...

    def prompt_lengths(self, prompts: list[Prompt]) -> list[int]:
        """Tokens of each prompt once rendered for the model: shape (len(prompts),)."""
        ...

    def generate(self, prompts: list[Prompt], sampling: Sampling, seed: int) -> list[Completion]:
        """``sampling.n`` completions per prompt, sample_index 0..n-1, grouped by prompt."""
        ...


def make_backend(
    name: str,
    model: str,
    *,
    device: str = "auto",
    batch_size: int = 8,
    dtype: str = "auto",
    engine: dict | None = None,
    client: ClientSettings | None = None,
    endpoint: str = "auto",
) -> Backend:
    """The backend ``name`` for ``model``. ``engine`` holds vLLM engine options
    (tensor_parallel_size, gpu_memory_utilization, max_model_len), passed through as given;
    ``client`` (server address, key variable, retries) and ``endpoint`` are for ``openai``.
    Inside ``kept_backends`` the same arguments give back the backend already made."""

    def make() -> Backend:
        return _make_backend(
            name,
            model,
            device=device,
            batch_size=batch_size,
            dtype=dtype,
            engine=engine,
            client=client,
            endpoint=endpoint,
        )

    if _KEPT is None:
        return make()
    key = repr((name, model, device, batch_size, dtype, sorted((engine or {}).items()), client, endpoint))
    if key not in _KEPT:
        _KEPT[key] = make()
    return _KEPT[key]


_KEPT: dict[str, Backend] | None = None
"""Backends held loaded while ``kept_backends`` is active; None: every call loads anew."""


@contextlib.contextmanager
def kept_backends() -> Iterator[None]:
    """Within: ``make_backend`` loads a model once for the same arguments, however many stages
    ask for it (an adaptive run's steps are a generate stage each: without this each step
    would load the policy again). The backends are closed when the outermost one ends."""
    global _KEPT
    if _KEPT is not None:
        yield
        return
    _KEPT = {}
    try:
        yield
    finally:
        kept, _KEPT = _KEPT, None
        for backend in kept.values():
            if hasattr(backend, "close"):
                backend.close()


def is_kept(backend: Backend) -> bool:
    """Whether ``kept_backends`` holds ``backend`` (its closing then waits for the context's end)."""
    return _KEPT is not None and any(b is backend for b in _KEPT.values())


def _make_backend(
    name: str,
    model: str,
    *,
    device: str,
    batch_size: int,
    dtype: str,
    engine: dict | None,
    client: ClientSettings | None,
    endpoint: str,
) -> Backend:
    match name:
        case "hf":
            from winnow.generate.hf import HFBackend

            return HFBackend(model, device=device, batch_size=batch_size, dtype=dtype)
        case "openai":
            from winnow.generate.openai_api import OpenAIBackend

            if client is None:
                raise WinnowError("backend openai needs a server: set generate.base_url (--base-url)")
            return OpenAIBackend(model, client=client, endpoint=endpoint)
        case "vllm":
            from winnow.generate.vllm import VLLMBackend

            return VLLMBackend(model, dtype=dtype, **(engine or {}))
        case _:
            raise WinnowError(f"unknown backend {name!r} (choose from: {', '.join(BACKENDS)})")
