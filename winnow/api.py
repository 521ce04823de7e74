"""winnow as a library: sample, score and pick in memory, or run the pipeline in a run dir.

In memory (no files written)::

    import winnow

    texts = winnow.sample(["Describe a rainy Monday."], model="smollm2", n=4)  # (M, N) texts
    rewards = winnow.score(["Describe a rainy Monday."], texts, reward="vader")  # (M, N) array
    best = winnow.best_of_n(["Describe a rainy Monday."], model="smollm2", reward="vader", n=8)

In a run directory (resumable, each stage's files and manifest as with the CLI): ``run`` for
generate -> score -> select -> sft (``rounds=`` for several rounds), or one stage at a time
with ``generate_stage``, ``score_stage``, ``select_stage``, ``sft_stage`` and ``dpo_stage``.

Options are the config fields (``winnow.config``), given as keywords; a bad value raises
``WinnowError`` naming the field. A reward is a built-in name (``vader``, ``length``), a
``module:function`` or ``file.py:function`` spec, or any callable
``f(prompts, completions, **kw) -> list[float | None]`` (None: unscored, NaN in the matrix).
A callable reward is identified by its code (``winnow.provenance``), so a score stage refuses
to resume after the function changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from winnow.config import (
    AdaptiveConfig,
    DpoConfig,
    ExecutorConfig,
    GenerateConfig,
    RoundsConfig,
    ScoreConfig,
    SelectConfig,
    TrainConfig,
    build,
)
from winnow.errors import WinnowError
from winnow.records import Prompt

PromptLike = str | Sequence[dict] | Prompt
"""A prompt: plain text, a chat conversation (a list of {"role", "content"} messages) or a Prompt."""
Reward = str | Callable[..., Sequence[float | None]]
"""A reward: a built-in name, a ``module:function`` / ``file.py:function`` spec, or a callable."""


def sample(
    prompts: Sequence[PromptLike],
    *,
    model: str = "smollm2",
    n: int = 8,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    **options: Any,
) -> list[list[str]]:
    """``n`` completions for each prompt: texts of shape (M, n), row i for ``prompts[i]``.

    ``model``: a local Hugging Face folder or ``smollm2`` (the model shipped with the
    package); ``options``: any other generate field (``top_p``, ``stop``, ``backend``,
    ``device``, ``base_url`` ...). The same seed and ``shard_size`` sample exactly what
    ``winnow generate`` writes for these prompts.
    """
    from winnow.stages.generate import shard_seed

    config = build(
        GenerateConfig,
        dict(models=[model], n=n, seed=seed, temperature=temperature, max_new_tokens=max_new_tokens, **options),
        source="winnow.sample",
    )
    rows = as_prompts(prompts)
    backend = _backend(config, model)
    out: list[list[str]] = []
    for i, start in enumerate(range(0, len(rows), config.shard_size)):
        chunk = rows[start : start + config.shard_size]
        completions = backend.generate(chunk, config.sampling(), seed=shard_seed(config.seed, 0, i))
        by_prompt: dict[str, list[str]] = {p.id: [""] * config.n for p in chunk}
        for c in completions:
            by_prompt[c.prompt_id][c.sample_index] = c.text
        out += [by_prompt[p.id] for p in chunk]
    return out


def score(
    prompts: Sequence[PromptLike],
    completions: Sequence[Sequence[str]],
    *,
    reward: Reward | None = "vader",
    reward_model: str | None = None,
    **options: Any,
) -> np.ndarray:
    """The reward matrix: shape (M, N), entry [i, j] the reward of ``completions[i][j]``
    given ``prompts[i]``; NaN where the reward returned None (or a row has fewer than N).

    ``reward_model``: a sequence-classification model folder, used instead of ``reward``;
    ``options``: any other score field (``device``, ``batch_tokens`` ...).

    >>> score(["a", "b"], [["xy", "x"], ["xyz", "no"]], reward="length").tolist()
    [[2.0, 1.0], [3.0, 2.0]]
    """
    from winnow.rewards import call_reward

    rows = as_prompts(prompts)
    # a string is a sequence of characters: read as a row, "xy" would be two completions
    fix = "is a string; give a list of completions per prompt, e.g. [['xy']]"
    if isinstance(completions, str):
        raise WinnowError(f"score: completions {fix}")
    for i, row in enumerate(completions):
        if isinstance(row, str):
            raise WinnowError(f"score: completions[{i}] {fix}")
    if len(rows) != len(completions):
        raise WinnowError(f"score: {len(rows)} prompts but {len(completions)} rows of completions")
    fn, name = _reward(reward, reward_model, options)
    width = max((len(c) for c in completions), default=0)
    matrix = np.full((len(rows), width), np.nan)
    flat = [
        (i, j, p, text) for i, (p, row) in enumerate(zip(rows, completions, strict=True)) for j, text in enumerate(row)
    ]
    if flat:
        values = call_reward(
            fn,
            name,
            [p.content for _, _, p, _ in flat],
            [text for _, _, _, text in flat],
            prompt_ids=[p.id for _, _, p, _ in flat],
            sample_indices=[j for _, j, _, _ in flat],
        )
        for (i, j, _, _), v in zip(flat, values, strict=True):
            matrix[i, j] = v
    return matrix


def best_of_n(
    prompts: Sequence[PromptLike],
    *,
    model: str = "smollm2",
    reward: Reward | None = "vader",
    n: int = 8,
    seed: int = 0,
    reward_model: str | None = None,
    **options: Any,
) -> list[str | None]:
    """Best-of-N: for each prompt, the highest-reward of ``n`` samples (shape (M,); the
    earliest sample wins a tie; None where every sample was unscored).

    ``options`` go to ``sample`` (``temperature``, ``max_new_tokens``, ``top_p`` ...).
    """
    from winnow.select import top_per_prompt

    texts = sample(prompts, model=model, n=n, seed=seed, **options)
    rewards = score(prompts, texts, reward=reward, reward_model=reward_model)
    best = top_per_prompt(rewards)
    return [row[j] if j >= 0 else None for row, j in zip(texts, best.tolist(), strict=True)]


def run(
    run_dir: str | Path,
    prompts: str | Path | Sequence[PromptLike],
    *,
    generate: GenerateConfig | dict | None = None,
    score: ScoreConfig | dict | None = None,
    select: SelectConfig | dict | None = None,
    sft: TrainConfig | dict | None = None,
    rounds: int | None = None,
    pool: str = "all",
    sft_from: str = "start",
    executor: ExecutorConfig | dict | None = None,
    adaptive: AdaptiveConfig | dict | None = None,
) -> dict:
    """generate -> score -> select -> sft in ``run_dir``, as ``winnow run`` does (rerunning
    resumes). Each section is a config or a dict of its fields (defaults for the rest);
    ``sft.model`` defaults to the first generate model. ``rounds``: that many rounds, each in
    ``run_dir/round-<r>`` (``winnow.rounds``). ``adaptive`` (``{"step": 2, "stop_when":
    "pass"}``): sample in steps up to ``generate.n`` (``winnow.adaptive``). Returns each
    stage's manifest (by round).
    """
    from winnow.pipeline import run_stages

    configs: dict[str, Any] = {
        "generate": _section(GenerateConfig, generate, "generate"),
        "score": _section(ScoreConfig, score, "score"),
        "select": _section(SelectConfig, select, "select"),
        "executor": _section(ExecutorConfig, executor, "executor"),
        "adaptive": _section(AdaptiveConfig, adaptive, "adaptive"),
    }
    train = _section(TrainConfig, sft, "sft")
    configs["sft"] = train if train.model else replace(train, model=configs["generate"].models[0])
    configs["rounds"] = build(RoundsConfig, {"count": rounds, "pool": pool, "sft_from": sft_from}, source="rounds")
    return run_stages(run_dir, _prompt_source(prompts), configs)


def generate_stage(
    run_dir: str | Path, prompts: str | Path | Sequence[PromptLike], config: GenerateConfig | None = None, **fields
) -> dict:
    """The generate stage into ``run_dir/generate`` (``winnow generate``); returns its manifest.
    ``fields``: GenerateConfig fields (``models=[...]``, ``n`` ...) when no ``config`` is given."""
    from winnow import stages

    return stages.generate(run_dir, _prompt_source(prompts), config or _section(GenerateConfig, fields, "generate"))


def score_stage(
    run_dir: str | Path, config: ScoreConfig | None = None, *, reward: Reward | None = None, **fields
) -> dict:
    """The score stage into ``run_dir/score`` (``winnow score``): the (M, N) matrix in
    ``score/rewards.npy``. ``reward`` may be a callable (identified by its code for resume)."""
    from winnow import stages

    config = config or _section(ScoreConfig, fields, "score")
    if callable(reward):
        return stages.score(run_dir, replace(config, reward_fn=_name(reward)), reward=reward)
    if reward is not None:
        config = replace(config, reward_fn=reward)
    return stages.score(run_dir, config)


def select_stage(run_dir: str | Path, config: SelectConfig | None = None, **fields) -> dict:
    """The select stage into ``run_dir/select`` (``winnow select``; ``pairs=`` for preference pairs)."""
    from winnow import stages

    return stages.select(run_dir, config or _section(SelectConfig, fields, "select"))


def sft_stage(run_dir: str | Path, config: TrainConfig | None = None, **fields) -> dict:
    """Fine-tune on ``run_dir/select/selected.jsonl`` into ``run_dir/sft/checkpoint`` (``winnow sft``)."""
    from winnow.sft import sft

    return sft(run_dir, config or _section(TrainConfig, fields, "sft"))


def dpo_stage(run_dir: str | Path, config: DpoConfig | None = None, **fields) -> dict:
    """DPO on ``run_dir/select/pairs.jsonl`` into ``run_dir/dpo/checkpoint`` (``winnow dpo``)."""
    from winnow.dpo import dpo

    return dpo(run_dir, config or _section(DpoConfig, fields, "dpo"))


def as_prompts(prompts: Sequence[PromptLike]) -> list[Prompt]:
    """Prompts with ids "0", "1", ... (a Prompt keeps its own): texts or chat conversations.

    >>> as_prompts(["hi", [{"role": "user", "content": "yo"}]])[1].messages
    ({'role': 'user', 'content': 'yo'},)
    """
    if isinstance(prompts, str):
        raise WinnowError("prompts: expected a list of prompts, got one string (wrap it in a list)")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, Prompt):
            out.append(p)
        elif isinstance(p, str):
            out.append(Prompt(id=str(i), text=p))
        elif isinstance(p, Sequence) and all(isinstance(m, dict) and "role" in m and "content" in m for m in p):
            out.append(Prompt(id=str(i), messages=tuple(dict(m) for m in p if isinstance(m, dict))))
        else:
            raise WinnowError(f"prompts[{i}]: expected text or a list of {{role, content}} messages, got {p!r}")
    if len({p.id for p in out}) != len(out):
        raise WinnowError("prompts: ids must be unique")
    return out


def _prompt_source(prompts: str | Path | Sequence[PromptLike]) -> list[Prompt]:
    """A prompts file (as ``--prompts`` takes) or prompts in memory."""
    if isinstance(prompts, str | Path):
        from winnow.prompts import load_prompts

        return load_prompts(prompts)
    return as_prompts(prompts)


def _section(cls, given: Any, name: str):
    if isinstance(given, cls):
        given.validate()
        return given
    return build(cls, dict(given or {}), source=f"winnow: {name}")


def _backend(config: GenerateConfig, model: str):
    from winnow.generate import make_backend

    return make_backend(
        config.backend,
        model,
        device=config.device,
        batch_size=config.batch_size,
        dtype=config.dtype,
        engine=config.engine() if config.backend == "vllm" else None,
        client=config.client_settings(),
        endpoint=config.endpoint,
    )


def _reward(reward: Reward | None, reward_model: str | None, options: dict) -> tuple[Callable, str]:
    """(the reward callable, a name for messages)."""
    if callable(reward) and reward_model is None:
        return reward, _name(reward)
    from winnow.stages.score import make_reward

    spec = reward if isinstance(reward, str) else None
    config = build(ScoreConfig, dict(reward_fn=spec, reward_model=reward_model, **options), source="winnow.score")
    return make_reward(config)


def _name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
