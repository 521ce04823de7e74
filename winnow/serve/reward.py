"""What a Best-of-N server scores with: the score stage's reward applier
(``winnow.rewards.apply``), under exactly the score options that mean something per request.

A request carries its prompt and nothing else, so the options about prompts columns and
the verifiers that read them, and those about a whole run's statistics or its processes,
are refused at start-up (one line naming the option) rather than accepted and ignored.
"""

from __future__ import annotations

import logging
from dataclasses import fields, replace

from winnow import images
from winnow.config import ScoreConfig
from winnow.errors import WinnowError
from winnow.records import Completion, Prompt
from winnow.rewards import BUILTINS, RewardTimeout
from winnow.rewards.apply import RewardApplier

log = logging.getLogger("winnow.serve")

REFUSED: dict[str, str] = {
    "pass_threshold": "pass statistics are a run's, not a request's",
    "processes": "it sets the processes of CPU-bound verifiers, which a server does not run",
    "reference_column": "a request carries no prompts columns",
    "ifeval_mode": "the ifeval verifier reads prompts columns, which a request does not carry",
    "code_timeout_s": "the code verifier reads prompts columns, which a request does not carry",
    "code_memory_mb": "the code verifier reads prompts columns, which a request does not carry",
    "code_strict_results": "the code verifier reads prompts columns, which a request does not carry",
}
"""Score options ``winnow serve`` refuses, with the reason; it applies every other one."""
REWARD_TIMEOUT_S = 60.0
"""``score.reward_timeout`` in ``winnow serve`` when none is given: a server never waits
for ever on a reward (a call past it answers its requests 504)."""


def server_applier(score: ScoreConfig) -> RewardApplier:
    """The applier a server scores candidates with; refuses what a request cannot use."""
    refuse_unserved(score)
    if score.reward_timeout is None:
        score = replace(score, reward_timeout=REWARD_TIMEOUT_S)
    return RewardApplier(score)


def refuse_unserved(score: ScoreConfig) -> None:
    """One line for a refused option set away from its default, or a verifier as reward.

    >>> refuse_unserved(ScoreConfig(reward_fn="length", reasoning_tags=["think"]))
    >>> refuse_unserved(ScoreConfig(reward_fn="length", pass_threshold=0.5))
    Traceback (most recent call last):
    ...
    winnow.errors.WinnowError: score.pass_threshold: winnow serve does not take it: pass statistics are a run's, not a request's
    """
    defaults = {f.name: f.default for f in fields(ScoreConfig)}
    for name, why in REFUSED.items():
        if getattr(score, name) != defaults[name]:
            raise WinnowError(f"score.{name}: winnow serve does not take it: {why}")
    for kind, spec in score.rewards():
        if kind == "fn" and spec in BUILTINS and BUILTINS[spec].verifier:
            raise WinnowError(
                f"score.reward_fn: {spec!r} is a verifier: it checks a completion against its prompts row's "
                "columns, which a request does not carry; serve with a reward that judges a completion on its own"
            )


def score_candidates(applier: RewardApplier, prompts: list[Prompt], rows: list[Completion]) -> list[float]:
    """The reward of each row (NaN = unscored): ``scored_candidates``'s rewards alone."""
    return scored_candidates(applier, prompts, rows)[0]


def scored_candidates(
    applier: RewardApplier, prompts: list[Prompt], rows: list[Completion]
) -> tuple[list[float], list[list[float] | None]]:
    """The reward of each row (NaN = unscored), applied as the score stage applies it, and
    each row's step scores where a process reward model gave them (None elsewhere): two
    lists of len(rows), in row order.

    Raises ``RewardTimeout`` when a reward call outlasts ``score.reward_timeout``: Python
    cannot stop it, so its thread is abandoned (the log says so) and the server goes on.
    """
    by_id = {p.id: p for p in prompts}
    keywords: dict[str, list] = {
        "prompt_ids": [c.prompt_id for c in rows],
        "sample_indices": [c.sample_index for c in rows],
    }
    if any(by_id[c.prompt_id].images for c in rows):
        keywords["images"] = images.decoded([by_id[c.prompt_id].images for c in rows])
    try:
        got = applier.apply([by_id[c.prompt_id].content for c in rows], [c.text for c in rows], keywords)
    except RewardTimeout as e:
        log.error("%s; its thread is abandoned", e)
        raise
    # a score row's extras (``rewards.apply.row_extras``) carry a process reward model's steps
    return got.total.tolist(), [extra.get("step_scores") for extra in got.paths]
