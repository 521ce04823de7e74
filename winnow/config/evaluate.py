"""``eval``: held-out evaluation, ``winnow eval`` and ``winnow run --eval-prompts``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from winnow.config.fields import bounded, check_fields, seed_field

MAX_BOOTSTRAP_ITERS = 1_000_000
"""The bootstrap holds iters x prompts draws; beyond a million the interval no longer moves."""


@dataclass
class EvalConfig:
    """Held-out evaluation (``winnow.evaluation``): each model samples the same prompts with the
    generate section's options and seed, the score section's reward scores them; the result
    is each model's mean reward (and pass@1, pass@k with ``score.pass_threshold``) and each
    gain with a paired bootstrap 95% interval, prompts resampled."""

    section: ClassVar[str] = "eval"

    prompts: str | None = None
    """``winnow run``: held-out prompts (a prompts file, read as ``--prompts`` is, with the same
    ``--prompt-column`` and ``--id-column``; in a YAML file, relative to its folder); the
    starting model and each round's checkpoint are evaluated on them in ``RUN_DIR/eval/``."""
    baseline: str | None = None
    """``winnow eval``: a second model evaluated on the same prompts with the same seeds; the
    result adds the gain over it with its paired bootstrap 95% interval."""
    bootstrap_iters: int = bounded(10_000, ge=1, le=MAX_BOOTSTRAP_ITERS)
    """Bootstrap resamples of the prompts for each interval."""
    bootstrap_seed: int = seed_field(0)
    """Seed of the bootstrap resamples."""

    def validate(self) -> None:
        check_fields(self)
