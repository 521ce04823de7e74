"""Several rounds of rejection sampling, as Llama 2 ran it (``winnow run --rounds R``).

Layout: each round is an ordinary run directory of its own, so each of its stages resumes
as in a single-round run, and a killed run resumes in the round it was in::

    RUN_DIR/round-1/generate, score, select, sft   samples from the starting model(s)
    RUN_DIR/round-2/generate, score, select, sft   samples from round 1's checkpoint
    ...

Round r samples from round r-1's checkpoint (round 1 from the configured models) with a
seed of its own, so rounds do not reuse each other's random draws. Its selection chooses,
for each prompt, among the candidates of all rounds so far (``pool="all"``, the Llama 2
way; ``winnow.pool``) or of round r alone (``"latest"``); its rows name their round. It
then fine-tunes the starting checkpoint (``sft_from="start"``, the default: the
selected data improve, the recipe stays the same) or round r-1's checkpoint
(``"previous"``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from winnow import stages
from winnow.config import GenerateConfig, RoundsConfig, TrainConfig
from winnow.records import Prompt

Step = Callable[[str], contextlib.AbstractContextManager]
"""A context manager around each stage of a round, given a label (the demo times them)."""


def round_dir(run_dir: str | Path, r: int) -> Path:
    return Path(run_dir) / f"round-{r}"


def rounds_in(run_dir: str | Path) -> list[int]:
    """The r of each ``round-<r>`` folder in ``run_dir``, in order ([] for a single-round run dir)."""
    found = (p.name.split("-", 1)[1] for p in Path(run_dir).glob("round-*") if p.is_dir())
    return sorted(int(r) for r in found if r.isdigit())


def round_seed(seed: int, r: int) -> int:
    """Round 1 keeps the configured seed (its folder matches a single-round run's);
    later rounds get seeds of their own, derived from it."""
    return seed if r == 1 else int(np.random.SeedSequence([seed, r]).generate_state(1)[0])


def run_rounds(
    run_dir: str | Path,
    prompts: list[Prompt],
    configs: dict,
    rounds: RoundsConfig,
    *,
    step: Step | None = None,
    reward=None,
) -> dict:
    """Run ``rounds.count`` rounds; configs hold "generate", "score", "select" and "sft"
    (sft.model: the starting checkpoint). Returns each round's stage manifests, by round.
    ``reward``: a reward callable that overrides the score config's (library use)."""
    rounds.validate()
    summary = {}
    checkpoint = None
    for r in range(1, (rounds.count or 1) + 1):
        summary[r] = run_round(run_dir, r, prompts, configs, rounds, previous=checkpoint, step=step, reward=reward)
        checkpoint = summary[r]["sft"]["checkpoint"]
    return summary


def run_round(
    run_dir: str | Path,
    r: int,
    prompts: list[Prompt],
    configs: dict,
    rounds: RoundsConfig,
    *,
    previous: str | None,
    step: Step | None = None,
    reward=None,
) -> dict:
    """Round ``r`` in ``RUN_DIR/round-<r>/``; ``previous`` is round r-1's checkpoint (None for r = 1)."""
    from winnow.sft import sft

    step = step or (lambda _: contextlib.nullcontext())
    folder = round_dir(run_dir, r)
    generate: GenerateConfig = configs["generate"]
    start: TrainConfig = configs["sft"]
    models = generate.models if previous is None else [previous]
    out = {}
    with step(f"round {r}: generate"):
        out["generate"] = stages.generate(
            folder,
            prompts,
            replace(generate, models=models, seed=round_seed(generate.seed, r)),
            executor=configs.get("executor"),
            image_store=round_dir(run_dir, 1),  # later rounds' images are hard links to round 1's
        )
    with step(f"round {r}: score"):
        out["score"] = stages.score(folder, configs["score"], reward=reward, executor=configs.get("executor"))
    pool = {s: round_dir(run_dir, s) for s in range(1, r + 1)} if rounds.pool == "all" else {r: folder}
    with step(f"round {r}: select"):
        out["select"] = stages.select(folder, configs["select"], pool=pool)
    base = previous if rounds.sft_from == "previous" and previous is not None else start.model
    with step(f"round {r}: sft"):
        out["sft"] = sft(folder, replace(start, model=base))
    return out
