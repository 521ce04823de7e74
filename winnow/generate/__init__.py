"""Generation backends behind one small Protocol, chosen by an explicit name.

A backend turns prompts into completions; the stage (``winnow.stages.generate``) owns
sharding, seeding, the run folder and provenance. A new engine (vLLM, an OpenAI-compatible
server) is one more module satisfying ``Backend`` and one more entry in ``make_backend``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from winnow.errors import WinnowError
from winnow.records import Completion, Prompt


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters passed to every backend; all of them are honoured."""

    n: int
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int


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


def make_backend(name: str, model: str, *, device: str = "auto", batch_size: int = 8) -> Backend:
    match name:
        case "hf":
            from winnow.generate.hf import HFBackend

            return HFBackend(model, device=device, batch_size=batch_size)
        case _:
            raise WinnowError(f"unknown backend {name!r} (choose from: hf)")
