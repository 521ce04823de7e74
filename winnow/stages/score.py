"""The score stage: every completion through the reward into an M x C matrix (``score/rewards.npy``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from winnow import images
from winnow import select as sel
from winnow.budget import LIMITS, per_worker
from winnow.config import ExecutorConfig, ScoreConfig
from winnow.executors import ERROR, ShardTask, run_shards
from winnow.records import Prompt, atomic_write_npy, reward_to_json
from winnow.rewards.apply import RewardApplier
from winnow.rundir import Stage, completed_manifest, refuse_errors
from winnow.stages.score_input import (
    ScoreSlice,
    SliceKeys,
    count_rows,
    plan_slices,
    prompt_records,
    remember_prompts,
    stream_matrices,
)
from winnow.stream import load_prompts


def score(run_dir: str | Path, config: ScoreConfig, reward=None, executor: ExecutorConfig | None = None) -> dict:
    """Score every completion into an M x C reward matrix (``score/rewards.npy``, NaN = unscored).

    ``reward`` overrides the reward built from config (for library use); the stage config
    then records only its name. ``executor`` says where the shards are made (default: this
    process); it never changes them.
    """
    config.validate()
    executor = executor or ExecutorConfig()
    # Streamed: the driver holds the prompts and the reward matrix, never every completion;
    # each task names the generate rows its worker reads (``score_input``).
    gen = completed_manifest(run_dir, "generate")
    prompts = load_prompts(run_dir, gen)
    remember_prompts(str(run_dir), gen["config_hash"], prompts)  # a local worker need not read them again
    stage = Stage(run_dir, "score", folder_config(config, gen["config_hash"], reward))
    names_of_columns = column_names(prompts)
    with stage:
        plan = plan_tasks(run_dir, gen, stage, config.shard_size)
        report = run_shards(
            plan.tasks,
            # each worker paces its judge's requests: a share of the limits each
            ScoreWorkerFactory(per_worker(config, LIMITS["score"], executor.share()), reward, names_of_columns),
            stage.dir,
            claim=stage.claim,
            executor=executor,
            desc="score",
            on_written=stage.recorder(plan.keys, exact=True),  # type: ignore[arg-type]
            config_hash=stage.hash,
        )
        report.raise_failed("score", len(plan.tasks))
        stage.check_made(plan.tasks, report, plan.keys, exact=True)  # type: ignore[arg-type]
        errors = stage.errors(plan.names)
        refuse_errors(stage, errors, accepted=("reward",) if config.on_error == "skip" else ())
        parts = [spec for _, spec in config.rewards()] if reward is None else [config.reward_fn or "reward"]
        files = ["rewards.npy"] + ([f"rewards-{k}.npy" for k in range(len(parts))] if len(parts) > 1 else [])
        if not plan.tasks and stage.stored_manifest() and all(stage.matches(f) for f in files):
            return stage.manifest()
        return _finish(
            stage,
            run_dir,
            gen,
            prompts,
            plan,
            config,
            parts=parts,
            files=files,
            errors=errors,
            executor=report.record(executor),
        )


def _finish(
    stage: Stage,
    run_dir: str | Path,
    gen: dict,
    prompts: list[Prompt],
    plan: ScorePlan,
    config: ScoreConfig,
    *,
    parts: Sequence,
    files: list[str],
    errors: list[dict],
    executor: dict,
) -> dict:
    """Put the stage's shards together: ``rewards.npy`` (M x C), each reward's own matrix
    where there are several, ``errors.jsonl`` where rows failed; then the manifest."""
    # one pass over the score shards: the matrices and counts, never every row at once
    streamed = stream_matrices(
        stage.dir,
        plan.names,
        stage.records(),
        prompts,
        gen["num_columns"],
        components=len(parts) if len(parts) > 1 else 0,
    )
    num_completions = count_rows(gen, gen["shards"], Path(run_dir) / "generate")
    stage.claim()
    atomic_write_npy(stage.dir / "rewards.npy", streamed.total)
    extra: dict[str, Any] = {}
    if len(parts) > 1:  # each reward as its own matrix, beside their weighted sum
        extra["components"] = write_components(
            stage.dir, streamed.components, parts, config.weights(), num_completions=num_completions
        )
    return stage.finish(
        shards=plan.names,
        outputs=files + stage.write_errors(errors),
        **summarize(streamed.total, num_completions=num_completions),
        errors=len(errors),
        **streamed.paths,
        **answer_counts(streamed.counts, config),
        **extra,
        **({"judge_usage": streamed.judge_usage.record(config.judge_price_per_mtok)} if streamed.judge_usage else {}),
        executor=executor,
    )


@dataclass
class ScorePlan:
    """The stage's shards: every shard's name in order (``00000``, ``00001``, ...), the tasks
    of those not made yet, and the generate rows each of those tasks names."""

    names: list[str]
    tasks: list[ShardTask]
    keys: SliceKeys


def plan_tasks(run_dir: str | Path, gen: dict, stage: Stage, shard_size: int) -> ScorePlan:
    """Cut the generate rows into slices of ``shard_size`` rows, a score shard each, and make
    a task of every shard the stage has not finished (all of them on a first run)."""
    slices = plan_slices(run_dir, gen, shard_size)
    names = [f"{i:05d}" for i in range(len(slices))]
    by_name = dict(zip(names, slices, strict=True))
    pending = stage.pending(names)
    tasks = [ShardTask(name, by_name[name]) for name in pending]
    return ScorePlan(names, tasks, SliceKeys({name: by_name[name] for name in pending}))


def write_components(
    folder: Path, matrices: list[np.ndarray], specs: Sequence[object], weights: list[float], *, num_completions: int
) -> list[dict]:
    """Write each reward's own (M, C) matrix as ``rewards-<k>.npy``; return the manifest's
    ``components``: per reward its spec, weight, file, scored count and mean reward."""
    out = []
    for k, (spec, weight) in enumerate(zip(specs, weights, strict=True)):
        name = f"rewards-{k}.npy"
        atomic_write_npy(folder / name, matrices[k])
        brief = summarize(matrices[k], num_completions=num_completions)
        out.append(
            {
                "reward": spec,
                "weight": weight,
                "file": name,
                "scored": brief["scored"],
                "mean_reward": brief["mean_reward"],
            }
        )
    return out


def folder_config(config: ScoreConfig, generate_hash: str, reward=None) -> dict:
    """What the stage's rewards are made under (its ``config.json``): the options, the
    generate stage scored and each reward's identity. ``winnow.plan`` compares it first."""
    provenance = {"reward": _reward_identity(config, reward)}
    return {"score": config.stage_config(), "generate_hash": generate_hash, "provenance": provenance}


@dataclass(frozen=True)
class ScoreWorkerFactory:
    """Builds the score worker (picklable unless ``reward`` is a local function)."""

    config: ScoreConfig
    reward: Any = None
    columns: tuple[str, ...] = ()
    """Every prompts column besides id and prompt: each reaches the rewards as a keyword."""

    def __call__(self) -> ScoreWorker:
        return ScoreWorker(self.config, self.reward, self.columns)


class ScoreWorker:
    """Loads the rewards once (``RewardApplier``); turns completion rows into reward rows.

    With reasoning tags, every reward sees only the answer after the closing tag, and a
    completion whose reasoning never closed gets 0 from each without being shown to any.
    """

    def __init__(self, config: ScoreConfig, reward=None, columns: tuple[str, ...] = ()):
        self.columns = tuple(columns)
        self.applier = RewardApplier(config, reward, self.columns)

    def run(self, task: ShardTask) -> list[dict]:
        triples = task.payload
        if isinstance(triples, ScoreSlice):  # the stage's tasks name their rows; library callers may pass triples
            triples = triples.triples(prompt_records(triples.run_dir, triples.generate_hash))
        keywords: dict[str, list] = {
            "prompt_ids": [c["prompt_id"] for _, c, _ in triples],
            "sample_indices": [c["sample_index"] for _, c, _ in triples],
        }
        for name in self.columns:  # one list per prompts column (None where a row lacks it)
            keywords[name] = [columns.get(name) for _, _, columns in triples]
        if "images" in keywords:  # a vision-language run's: decoded here, for this call's rows only
            keywords["images"] = images.decoded([found or () for found in keywords["images"]])
        got = self.applier.apply([content for content, _, _ in triples], [c["text"] for _, c, _ in triples], keywords)
        several = len(self.applier.parts) > 1
        rows = []
        for i, (_, c, _) in enumerate(triples):
            row = {
                "prompt_id": c["prompt_id"],
                "sample_index": c["sample_index"],
                "model": c["model"],
                "reward": reward_to_json(got.total[i]),
                **got.paths[i],
            }
            if several:
                row["rewards"] = [reward_to_json(v) for v in got.values[:, i]]
            if got.unfinished[i]:
                row["unfinished_reasoning"] = True
            if got.no_answer[i]:
                row["no_answer"] = True
            if got.in_call[i]:
                row["no_answer_in_call"] = got.in_call[i]
            rows.append(row)
            if got.failed[i] is not None:  # its errors-<shard>.jsonl row (``on_error: skip``)
                name, reason = got.failed[i]  # type: ignore[misc]
                keys = {k: c[k] for k in ("prompt_id", "sample_index", "model")}
                rows.append({**keys, "kind": "reward", "reward_fn": name, ERROR: reason})
        return rows


def _reward_identity(config: ScoreConfig, reward) -> list[str]:
    """The hash of each reward's code or model, one per reward, so resuming after one
    changed is refused."""
    from winnow.provenance import callable_identity, model_identity, reward_fn_identity
    from winnow.rewards.fallback import TEMPLATE, falls_back

    if reward is not None:
        return [callable_identity(reward)]
    out = []
    for kind, spec in config.rewards():
        if kind in ("model", "prm"):
            out.append(model_identity(spec))
        elif kind == "judge":
            # the judge is a served model: its URL and name are in the config; the rubric is hashed
            from winnow.rewards.judge import rubric_identity

            out.append(rubric_identity(config.judge_rubric))
        elif config.fallback_judge and falls_back(spec):  # the rule's code and the judge's prompt
            from winnow.rewards.judge import template_identity

            out.append(f"{reward_fn_identity(spec)}+{template_identity(config.fallback_prompt, TEMPLATE)}")
        else:
            out.append(reward_fn_identity(spec))
    return out


def reward_matrix(
    prompts: list[Prompt], rows: list[dict], num_columns: int, component: int | None = None
) -> np.ndarray:
    """Place keyed reward rows into a float64 (M, C) matrix; cells with no row stay NaN.

    component: k to take each row's k-th reward (``rows[i]["rewards"][k]``) instead of their sum."""
    index = {p.id: i for i, p in enumerate(prompts)}
    matrix = np.full((len(prompts), num_columns), np.nan, dtype=np.float64)
    for row in rows:
        value = row["reward"] if component is None else row["rewards"][component]
        if value is not None:
            matrix[index[row["prompt_id"]], row["sample_index"]] = value
    return matrix


def column_names(prompts: list[Prompt]) -> tuple[str, ...]:
    """Every prompts column besides id and prompt, in first-seen order, then ``images`` when
    a prompt has any (rewards get them as a keyword, as they get a column)."""
    seen: dict[str, None] = {}
    for p in prompts:
        seen.update(dict.fromkeys(p.columns))
    return tuple(seen) + (("images",) if any(p.images for p in prompts) else ())


def answer_counts(counts: Counter, config: ScoreConfig) -> dict:
    """``no_answer`` (completions a verifier found nothing to check in) when a reward reports
    it, and ``unfinished_reasoning`` with reasoning tags; empty otherwise, as before either existed.

    counts: over the score rows, ``no_answer`` (flagged rows plus counts given per call) and
    ``unfinished_reasoning`` (``score_input.stream_matrices`` adds them up)."""
    from winnow.rewards import BUILTINS
    from winnow.rewards.fallback import TALLY

    out: dict[str, Any] = {}
    verifies = any(spec in BUILTINS and BUILTINS[spec].verifier for _, spec in config.rewards())
    total = counts["no_answer"]
    if verifies or total:
        out["no_answer"] = total
    if config.reasoning_tags:
        out["unfinished_reasoning"] = counts["unfinished_reasoning"]
    if config.fallback_judge:
        out["rule_then_judge"] = {name: counts[name] for name in TALLY}
    return out


def summarize(matrix: np.ndarray, *, num_completions: int) -> dict:
    scored = int((~np.isnan(matrix)).sum())
    best = sel.top_per_prompt(matrix)
    has = best >= 0
    best_values = matrix[np.flatnonzero(has), best[has]]
    return {
        "num_completions": num_completions,
        "scored": scored,
        "unscored": num_completions - scored,
        "mean_reward": _mean(matrix[~np.isnan(matrix)]) if scored else None,
        "mean_best_reward": _mean(best_values) if has.any() else None,
    }


def _mean(values: np.ndarray) -> float:
    """The mean of finite values without overflow: rewards near 1e308 would sum to inf."""
    scale = float(np.abs(values).max())
    return float(np.mean(values / scale) * scale) if scale > 0 else 0.0
