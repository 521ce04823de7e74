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
A callable reward is named ``module:qualname`` in the stage config and identified by its
code for resume (``winnow.provenance.callable_identity``: the hash of its source file, else
of its own source, else of its compiled code), so a score stage refuses to resume after the
function changed.

A model is a name (a folder, ``smollm2``) or a handle that keeps it loaded across calls
(``winnow.load_model``, ``winnow.handle``). Library warnings and progress bars are kept quiet
during each call, as the CLI keeps them; ``verbose=True`` lets them through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from winnow.config import (
    AdaptiveConfig,
    DpoConfig,
    EvalConfig,
    ExecutorConfig,
    GenerateConfig,
    ImagesConfig,
    PickConfig,
    RoundsConfig,
    ScoreConfig,
    SelectConfig,
    TrainConfig,
)
from winnow.errors import WinnowError
from winnow.generate.contract import sampling_of
from winnow.handle import Model
from winnow.images import decoded
from winnow.quiet import quiet_unless_verbose
from winnow.records import Prompt
from winnow.settings import build

PromptLike = str | Sequence[dict] | dict | Prompt
"""A prompt: plain text, a chat conversation (a list of {"role", "content"} messages), a row
as a prompts file holds it (``{"id": "x1", "prompt": "...", "answer": "72"}``) or a Prompt."""
Reward = str | Callable[..., Sequence[float | None]]
"""A reward: a built-in name, a ``module:function`` / ``file.py:function`` spec, or a callable."""
Images = ImagesConfig | dict | None
"""How prompts' images are read (``images=`` of every function that takes prompts): the
``images`` section, as a config or a dict of its fields (``paths_outside``, ``max_bytes``);
None: its defaults, as the CLI's."""


@quiet_unless_verbose()
def sample(
    prompts: Sequence[PromptLike],
    *,
    model: str | Model = "smollm2",
    n: int = 8,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    images: Images = None,
    verbose: bool = False,
    **options: Any,
) -> list[list[str]]:
    """``n`` completions for each prompt: texts of shape (M, n), row i for ``prompts[i]``.

    ``model``: a local Hugging Face folder or ``smollm2`` (the model shipped with the
    package), loaded for this call, or a handle from ``winnow.load_model`` (loaded once);
    ``options``: any other generate field (``top_p``, ``stop``, ``backend``, ``device``,
    ``base_url`` ...). The same seed and ``shard_size`` sample exactly what ``winnow
    generate`` writes for these prompts. ``images``: how the prompts' images are read
    (``Images``). ``verbose``: let the libraries print their warnings and progress bars.
    """
    fields = dict(n=n, seed=seed, temperature=temperature, max_new_tokens=max_new_tokens, **options)
    return _sample(as_prompts(prompts, images=images), model, fields, source="winnow.sample")


def _sample(rows: list[Prompt], model: str | Model, fields: dict, *, source: str) -> list[list[str]]:
    """``sample``'s work on prompts already read; ``source`` names the public function in messages."""
    from winnow.handle import make
    from winnow.stages.generate import shard_seed

    if isinstance(model, Model):
        config = model.call_config(fields, source)
    else:
        config = build(GenerateConfig, dict(fields, models=[model]), source=source)
    backend = model.backend if isinstance(model, Model) else make(config, model)
    out: list[list[str]] = []
    for i, start in enumerate(range(0, len(rows), config.shard_size)):
        chunk = rows[start : start + config.shard_size]
        completions = backend.generate(chunk, sampling_of(config), seed=shard_seed(config.seed, 0, i))
        by_prompt: dict[str, list[str]] = {p.id: [""] * config.n for p in chunk}
        for c in completions:
            by_prompt[c.prompt_id][c.sample_index] = c.text
        out += [by_prompt[p.id] for p in chunk]
    return out


@quiet_unless_verbose()
def score(
    prompts: Sequence[PromptLike],
    completions: Sequence[Sequence[str]],
    *,
    reward: Reward | None = "vader",
    reward_model: str | None = None,
    images: Images = None,
    verbose: bool = False,
    **options: Any,
) -> np.ndarray:
    """The reward matrix: shape (M, N), entry [i, j] the reward of ``completions[i][j]``
    given ``prompts[i]``; NaN where the reward returned None (or a row has fewer than N).

    ``reward_model``: a sequence-classification model folder, used instead of ``reward``;
    ``images``: how the prompts' images are read (``Images``); ``options``: any other score
    field (``device``, ``batch_tokens`` ...).

    >>> score(["a", "b"], [["xy", "x"], ["xyz", "no"]], reward="length").tolist()
    [[2.0, 1.0], [3.0, 2.0]]
    """
    from winnow.stages.score import column_names

    rows = as_prompts(prompts, images=images)
    # a string is a sequence of characters: read as a row, "xy" would be two completions
    fix = "is a string; give a list of completions per prompt, e.g. [['xy']]"
    if isinstance(completions, str):
        raise WinnowError(f"score: completions {fix}")
    for i, row in enumerate(completions):
        if isinstance(row, str):
            raise WinnowError(f"score: completions[{i}] {fix}")
    if len(rows) != len(completions):
        raise WinnowError(f"score: {len(rows)} prompts but {len(completions)} rows of completions")
    columns = column_names(rows)
    applier = _reward(reward, reward_model, options, columns)
    width = max((len(c) for c in completions), default=0)
    matrix = np.full((len(rows), width), np.nan)
    flat = [
        (i, j, p, text) for i, (p, row) in enumerate(zip(rows, completions, strict=True)) for j, text in enumerate(row)
    ]
    if flat:
        keywords: dict[str, Any] = {
            "prompt_ids": [p.id for _, _, p, _ in flat],
            "sample_indices": [j for _, j, _, _ in flat],
        }
        for column in columns:  # a reference answer ...: one list per column, as the stage passes them
            keywords[column] = [p.columns.get(column) for _, _, p, _ in flat]
        if any(p.images for _, _, p, _ in flat):
            keywords["images"] = decoded([p.images for _, _, p, _ in flat])
        got = applier.apply([p.content for _, _, p, _ in flat], [text for _, _, _, text in flat], keywords)
        for (i, j, _, _), v in zip(flat, got.total.tolist(), strict=True):
            matrix[i, j] = v
    return matrix


@quiet_unless_verbose()
def best_of_n(
    prompts: Sequence[PromptLike],
    *,
    model: str | Model = "smollm2",
    reward: Reward | None = "vader",
    n: int = 8,
    seed: int = 0,
    reward_model: str | None = None,
    select_by: str | None = None,
    pick: PickConfig | dict | None = None,
    images: Images = None,
    verbose: bool = False,
    **options: Any,
) -> list[str | None]:
    """Best-of-N: for each prompt, the highest-reward of ``n`` samples (shape (M,); the
    earliest sample wins a tie; None where every sample was unscored).

    ``model`` as in ``sample`` (a name, or a handle from ``winnow.load_model``); ``images``:
    how the prompts' images are read (``Images``); ``options``: generate fields, as ``sample``
    takes them (``temperature``, ``max_new_tokens``, ``top_p`` ...).

    ``select_by="judge"`` lets a judge model pick each prompt's sample instead, as ``winnow bon
    --select-by judge`` does (``winnow.rewards.pick``: a tournament in windows, positions
    shuffled per prompt id; a reply naming no candidate leaves the window's highest reward):
    ``pick`` holds the judge's fields (``PickConfig``, or a dict of them: ``judge``, its API
    root, and ``judge_model`` are needed; ``window``, ``seed``, ``prompt`` ... are optional).
    The reward is still computed: it settles those fallbacks.
    """
    from winnow.select import top_per_prompt

    judge = _judge(select_by, pick)  # a bad judge fails before anything loads
    rows = as_prompts(prompts, images=images)  # read once: each image decoded and checked here
    _check_reward(rows, reward, reward_model)  # before the policy's weights load
    texts = _sample(rows, model, dict(n=n, seed=seed, **options), source="winnow.best_of_n")
    rewards = score(rows, texts, reward=reward, reward_model=reward_model)
    if judge is None:
        best = top_per_prompt(rewards).tolist()
    else:
        from winnow.rewards.pick import pick_best

        picks = pick_best(judge, [p.content for p in rows], texts, list(rewards), [p.id for p in rows])
        best = [p.index for p in picks]
    return [row[j] if j >= 0 else None for row, j in zip(texts, best, strict=True)]


def _judge(select_by: str | None, pick: PickConfig | dict | None):
    """The judge that picks (``winnow.rewards.pick.Judge``) that ``select_by`` and ``pick``
    describe, its prompt file read; None for ``select_by`` reward (the default). ``select_by``,
    when given, is ``pick``'s own ``select_by``."""
    fields = asdict(pick) if isinstance(pick, PickConfig) else dict(pick or {})
    if select_by is not None:
        fields["select_by"] = select_by
    config = build(PickConfig, fields, source="winnow.best_of_n: pick")
    if config.select_by != "judge":
        return None
    from winnow.rewards.pick import judge_of

    return judge_of(config)


@quiet_unless_verbose("datasets")  # TRL maps the data with datasets' bars
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
    eval_prompts: str | Path | None = None,
    images: Images = None,
    verbose: bool = False,
) -> dict:
    """generate -> score -> select -> sft in ``run_dir``, as ``winnow run`` does (rerunning
    resumes). Each section is a config or a dict of its fields (defaults for the rest);
    ``score.reward_fn`` may be a Python callable (``score={"reward_fn": polite}``);
    ``sft.model`` defaults to the first generate model. ``rounds``: that many rounds, each in
    ``run_dir/round-<r>`` (``winnow.rounds``). ``adaptive`` (``{"step": 2, "stop_when":
    "pass"}``): sample in steps up to ``generate.n`` (``winnow.adaptive``). ``eval_prompts``:
    a held-out prompts file; the starting model and each round's checkpoint are then
    evaluated on it in ``run_dir/eval`` (``winnow.evaluation``; its result in ``eval/eval.json``).
    ``images``: how the prompts' images are read (``Images``), ``--image-paths-outside`` and
    ``--max-image-bytes`` as fields. Returns each stage's manifest (by round).
    """
    from winnow.pipeline import run_stages

    score_config, reward = _score_section(score)
    configs: dict[str, Any] = {
        "generate": _section(GenerateConfig, generate, "generate"),
        "score": score_config,
        "select": _section(SelectConfig, select, "select"),
        "executor": _section(ExecutorConfig, executor, "executor"),
        "adaptive": _section(AdaptiveConfig, adaptive, "adaptive"),
    }
    train = _section(TrainConfig, sft, "sft")
    configs["sft"] = train if train.model else replace(train, model=configs["generate"].models[0])
    configs["rounds"] = build(RoundsConfig, {"count": rounds, "pool": pool, "sft_from": sft_from}, source="rounds")
    configs["eval"] = build(EvalConfig, {"prompts": None if eval_prompts is None else str(eval_prompts)}, source="eval")
    return run_stages(run_dir, _prompt_source(prompts, images), configs, reward=reward)


@quiet_unless_verbose()
def evaluate(
    run_dir: str | Path,
    prompts: str | Path | Sequence[PromptLike],
    *,
    model: str,
    baseline: str | None = None,
    generate: GenerateConfig | dict | None = None,
    score: ScoreConfig | dict | None = None,
    bootstrap_iters: int = 10_000,
    bootstrap_seed: int = 0,
    executor: ExecutorConfig | dict | None = None,
    images: Images = None,
    verbose: bool = False,
) -> dict:
    """``model`` (and ``baseline``, sampled with the same options and seed) on held-out
    ``prompts`` in ``run_dir``, as ``winnow eval`` does (rerunning resumes): each model's
    mean reward, pass@1 and pass@k with ``score.pass_threshold``, and the gain over the
    baseline with a paired bootstrap 95% interval (``winnow.evaluation``). ``generate``: the
    sampling options (its ``models`` are ``model`` and ``baseline``); ``score``: the reward, a
    callable too; ``images``: how the prompts' images are read (``Images``). Returns eval.json's dict (its ``models`` in order, then ``gains``)."""
    from winnow.evaluation import eval_models
    from winnow.evaluation import evaluate as run_eval

    sampling = _section(GenerateConfig, {**_as_dict(generate), "models": [model]}, "generate")
    config = build(
        EvalConfig,
        {"baseline": baseline, "bootstrap_iters": bootstrap_iters, "bootstrap_seed": bootstrap_seed},
        source="winnow: eval",
    )
    score_config, reward = _score_section(score)
    return run_eval(
        run_dir,
        _prompt_source(prompts, images),
        eval_models(sampling, config),
        sampling,
        score_config,
        config,
        reward=reward,
        executor=_section(ExecutorConfig, executor, "executor"),
    )


def _as_dict(given: Any) -> dict:
    """A section given as its config or as a dict, as a dict of its fields."""
    return asdict(given) if isinstance(given, GenerateConfig) else dict(given or {})


@quiet_unless_verbose()
def generate_stage(
    run_dir: str | Path,
    prompts: str | Path | Sequence[PromptLike],
    config: GenerateConfig | None = None,
    *,
    images: Images = None,
    verbose: bool = False,
    **fields,
) -> dict:
    """The generate stage into ``run_dir/generate`` (``winnow generate``); returns its manifest.
    ``fields``: GenerateConfig fields (``models=[...]``, ``n`` ...) when no ``config`` is given;
    ``images``: how the prompts' images are read (``Images``)."""
    from winnow import stages

    rows = _prompt_source(prompts, images)
    return stages.generate(run_dir, rows, config or _section(GenerateConfig, fields, "generate"))


@quiet_unless_verbose()
def score_stage(
    run_dir: str | Path,
    config: ScoreConfig | None = None,
    *,
    reward: Reward | None = None,
    verbose: bool = False,
    **fields,
) -> dict:
    """The score stage into ``run_dir/score`` (``winnow score``): the (M, N) matrix in
    ``score/rewards.npy``. ``reward`` (or ``reward_fn``) may be a callable (named
    ``module:qualname``, identified by its code for resume)."""
    from winnow.adaptive import score_or_assemble

    given: ScoreConfig | dict = config or fields
    if reward is not None:
        given = {**(asdict(given) if isinstance(given, ScoreConfig) else given), "reward_fn": reward}
    config, fn = _score_section(given)
    return score_or_assemble(run_dir, config, reward=fn)


@quiet_unless_verbose()
def select_stage(run_dir: str | Path, config: SelectConfig | None = None, *, verbose: bool = False, **fields) -> dict:
    """The select stage into ``run_dir/select`` (``winnow select``; ``pairs=`` for preference pairs)."""
    from winnow import stages

    return stages.select(run_dir, config or _section(SelectConfig, fields, "select"))


@quiet_unless_verbose("datasets")  # TRL maps the data with datasets' bars
def sft_stage(run_dir: str | Path, config: TrainConfig | None = None, *, verbose: bool = False, **fields) -> dict:
    """Fine-tune on ``run_dir/select/selected.jsonl`` into ``run_dir/sft/checkpoint`` (``winnow sft``).
    ``model`` (the starting checkpoint) defaults, as the CLI's does, to the model that
    generated ``run_dir`` (the first of ``generate.models`` in its manifest)."""
    from winnow.sft import sft

    return sft(run_dir, _with_start(run_dir, config or _section(TrainConfig, fields, "sft")))


@quiet_unless_verbose("datasets")  # TRL maps the data with datasets' bars
def dpo_stage(run_dir: str | Path, config: DpoConfig | None = None, *, verbose: bool = False, **fields) -> dict:
    """DPO on ``run_dir/select/pairs.jsonl`` into ``run_dir/dpo/checkpoint`` (``winnow dpo``);
    ``model`` (start and reference) defaults to the model that generated ``run_dir``."""
    from winnow.dpo import dpo

    return dpo(run_dir, _with_start(run_dir, config or _section(DpoConfig, fields, "dpo")))


def as_prompts(prompts: Sequence[PromptLike], *, images: Images = None) -> list[Prompt]:
    """Prompts with ids "0", "1", ... (a Prompt keeps its own): texts or chat conversations,
    or rows as a prompts file holds them (``winnow.prompts.prompt_from_row``: their ``id``,
    else ``row-<i>``, and every other column, which reward functions receive). Their images
    (``image_url`` parts, a row's ``images``) are read under ``images`` (``Images``).

    >>> as_prompts(["hi", [{"role": "user", "content": "yo"}]])[1].messages
    ({'role': 'user', 'content': 'yo'},)
    >>> as_prompts([{"id": "x1", "prompt": "2+2?", "answer": "4"}])[0].columns
    {'answer': '4'}
    """
    if isinstance(prompts, str):
        raise WinnowError("prompts: expected a list of prompts, got one string (wrap it in a list)")
    rules = _section(ImagesConfig, images, "images")
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, Prompt):
            out.append(p)
        elif isinstance(p, str):
            out.append(Prompt(id=str(i), text=p))
        elif isinstance(p, dict):
            from winnow.prompts import prompt_from_row

            out.append(prompt_from_row(p, i, image_paths_outside=rules.paths_outside, max_image_bytes=rules.max_bytes))
        elif isinstance(p, Sequence) and all(isinstance(m, dict) and "role" in m and "content" in m for m in p):
            messages = [dict(m) for m in p if isinstance(m, dict)]
            if any(isinstance(m["content"], list) for m in messages):  # content parts: images among them
                from winnow.prompts import chat_with_images

                out.append(chat_with_images(messages, id=str(i), name=f"prompts[{i}]", max_image_bytes=rules.max_bytes))
            else:
                out.append(Prompt(id=str(i), messages=tuple(messages)))
        else:
            raise WinnowError(
                f"prompts[{i}]: expected text, a list of {{role, content}} messages or a row "
                f'({{"id", "prompt" or "messages", other columns}}), got {p!r}'
            )
    if len({p.id for p in out}) != len(out):
        raise WinnowError("prompts: ids must be unique")
    return out


def _with_start(run_dir: str | Path, config):
    """A training config whose starting checkpoint defaults, as ``winnow sft`` / ``dpo`` do,
    to the model that generated the run (``pipeline.default_sft_model``)."""
    from winnow.pipeline import default_sft_model

    return config if config.model else replace(config, model=default_sft_model(run_dir, None, {}))


def _score_section(given: ScoreConfig | dict | None) -> tuple[ScoreConfig, Callable | None]:
    """The score config, and its reward when ``reward_fn`` is a Python callable: the config
    then names it ``module:qualname`` and the callable scores (``stages.score(reward=...)``)."""
    fn = given.get("reward_fn") if isinstance(given, dict) else getattr(given, "reward_fn", None)
    if isinstance(fn, list) and any(callable(f) for f in fn):
        raise WinnowError("winnow: score.reward_fn: a Python function must be the only reward (sum several inside it)")
    if not callable(fn):
        return _section(ScoreConfig, given, "score"), None
    if isinstance(given, ScoreConfig):
        named: ScoreConfig | dict = replace(given, reward_fn=_name(fn))
    else:
        named = {**(given or {}), "reward_fn": _name(fn)}
    config = _section(ScoreConfig, named, "score")
    if config.reward_model or config.prm_model or config.reward_judge:
        raise WinnowError(
            "winnow: score.reward_fn: a Python function must be the only reward, not with a reward model or judge"
        )
    return config, fn


def _prompt_source(prompts: str | Path | Sequence[PromptLike], images: Images) -> list[Prompt]:
    """A prompts file (as ``--prompts`` takes) or prompts in memory, their images read under
    ``images`` (``Images``), as the CLI's ``images`` section reads them."""
    if isinstance(prompts, str | Path):
        from winnow.prompts import load_prompts

        rules = _section(ImagesConfig, images, "images")
        return load_prompts(prompts, image_paths_outside=rules.paths_outside, max_image_bytes=rules.max_bytes)
    return as_prompts(prompts, images=images)


def _section(cls, given: Any, name: str):
    if isinstance(given, cls):
        given.validate()
        return given
    return build(cls, dict(given or {}), source=f"winnow: {name}")


def _reward(reward: Reward | None, reward_model: str | None, options: dict, columns: tuple[str, ...]):
    """The score stage's reward applier over these rewards and score options (a callable
    reward is the only one, under the options' reasoning tags and time limit)."""
    from winnow.rewards.apply import RewardApplier

    if callable(reward) and reward_model is None:
        config = build(ScoreConfig, dict(options), source="winnow.score")
        return RewardApplier(config, reward, columns, name=_name(reward))
    spec = reward if isinstance(reward, str) else None
    config = build(ScoreConfig, dict(reward_fn=spec, reward_model=reward_model, **options), source="winnow.score")
    return RewardApplier(config, columns=columns)


def _check_reward(prompts: Sequence[PromptLike], reward: Reward | None, reward_model: str | None) -> None:
    """Load the reward (a reward model's path only: no weights) and check it takes the call
    ``score`` makes (``winnow.plan``), so a bad one fails before anything is sampled."""
    from winnow.plan import check_rewards
    from winnow.stages.score import column_names

    columns = column_names(as_prompts(prompts))
    if callable(reward) and reward_model is None:
        check_rewards(None, columns, reward)
        return
    spec = reward if isinstance(reward, str) else None
    config = build(ScoreConfig, dict(reward_fn=spec, reward_model=reward_model), source="winnow.best_of_n")
    check_rewards(config, columns)


def _name(fn: Callable) -> str:
    """A callable reward's name in configs and messages: ``module:qualname``.

    >>> _name(as_prompts)
    'winnow.api:as_prompts'
    """
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"
