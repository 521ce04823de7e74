"""The contract between the generate stage (or the server) and a backend: what to sample
(``Sampling``), the backend's three methods (``Backend``) and the observer of one call
(``Watch``), with the one list of backend names and the optional sampling fields each
honours. Backends import this module, never the package that dispatches to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, get_args

from winnow.config import GenerateConfig
from winnow.config.fields import Backend as BackendName
from winnow.errors import WinnowError
from winnow.records import Completion, Prompt


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
    top_logprobs: int = 0
    """Return each completion's per-token log-probabilities (``Completion.logprobs``), with
    each token's confidence from the k most likely tokens' log-probabilities; 0 = off.
    Every backend does; it never changes what is sampled. (What to return, not how to
    sample: not among ``OPTIONAL_SAMPLING``.)"""
    top_tokens: bool = False
    """With top_logprobs, ``hf`` only (``winnow serve`` refuses logprobs on other backends):
    also the sampled token ids and each position's k most likely (token id, log-probability)
    pairs (``TokenLogprobs.tokens``, ``.top``), which a server's logprobs body names."""


OPTIONAL_SAMPLING: dict[str, object] = {"min_p": 0.0, "repetition_penalty": 1.0, "stop": ()}
"""Optional sampling fields and their neutral ("off") values."""

BACKENDS: dict[str, frozenset[str]] = {
    # top_k, min_p and repetition_penalty travel to an openai server as extra body fields (see openai_api)
    "hf": frozenset({"min_p", "repetition_penalty", "stop"}),
    "openai": frozenset({"min_p", "repetition_penalty", "stop"}),
    "vllm": frozenset({"min_p", "repetition_penalty", "stop"}),
}
"""Every backend, with the optional sampling fields it honours (the names are ``config.fields.Backend``'s)."""
assert tuple(BACKENDS) == get_args(BackendName), "BACKENDS must follow config.fields.Backend"


def check_sampling(backend: str, sampling: Sampling) -> None:
    """Refuse, by name, an optional sampling field the backend would not honour."""
    for name, neutral in OPTIONAL_SAMPLING.items():
        value = getattr(sampling, name)
        if value != neutral and name not in BACKENDS[backend]:
            raise WinnowError(
                f"generate.{name}: backend {backend!r} does not support {name} (got {value!r}); "
                f"leave it at {neutral!r} or use a backend that does"
            )


def sampling_of(config: GenerateConfig) -> Sampling:
    """The sampling contract ``config`` asks its backend to honour, checked against what that
    backend honours (``check_sampling``)."""
    sampling = Sampling(
        n=config.n,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_new_tokens=config.max_new_tokens,
        min_p=config.min_p,
        repetition_penalty=config.repetition_penalty,
        stop=tuple(config.stop),
        top_logprobs=config.top_logprobs,
    )
    check_sampling(config.backend, sampling)
    return sampling


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
