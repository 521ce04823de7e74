"""The score stage: every completion through the reward into an M x C matrix (``score/rewards.npy``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from winnow import select as sel
from winnow.config import ExecutorConfig, ScoreConfig
from winnow.executors import ShardTask, run_shards
from winnow.records import Prompt, atomic_write_npy, reward_to_json
from winnow.rundir import Stage, completed_manifest
from winnow.stages.score_input import ScoreSlice, SliceKeys, count_rows, plan_slices, prompt_contents, stream_matrix
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
    provenance = {"reward": _reward_identity(config, reward)}
    stage = Stage(
        run_dir, "score", {"score": asdict(config), "generate_hash": gen["config_hash"], "provenance": provenance}
    )
    with stage:
        slices = plan_slices(run_dir, gen, config.shard_size)
        names = [f"{i:05d}" for i in range(len(slices))]
        by_name = dict(zip(names, slices, strict=True))
        pending = stage.pending(names)
        tasks = [ShardTask(name, by_name[name]) for name in pending]
        keys = SliceKeys({name: by_name[name] for name in pending})
        report = run_shards(
            tasks,
            ScoreWorkerFactory(config, reward),
            stage.dir,
            claim=stage.claim,
            executor=executor,
            desc="score",
            on_written=stage.recorder(keys, exact=True),  # type: ignore[arg-type]
            config_hash=stage.hash,
        )
        report.raise_failed("score", len(tasks))
        stage.check_made(tasks, report, keys, exact=True)  # type: ignore[arg-type]
        if not tasks and stage.stored_manifest() and stage.matches("rewards.npy"):
            return stage.manifest()
        matrix, paths = stream_matrix(stage.dir, names, stage.records(), prompts, gen["num_columns"])
        stage.claim()
        atomic_write_npy(stage.dir / "rewards.npy", matrix)
        return stage.finish(
            shards=names,
            outputs=["rewards.npy"],
            **summarize(matrix, num_completions=count_rows(gen, gen["shards"], Path(run_dir) / "generate")),
            **paths,
            executor=report.record(executor),
        )


@dataclass(frozen=True)
class ScoreWorkerFactory:
    """Builds the score worker (picklable unless ``reward`` is a local function)."""

    config: ScoreConfig
    reward: Any = None

    def __call__(self) -> ScoreWorker:
        return ScoreWorker(self.config, self.reward)


class ScoreWorker:
    """Loads the reward once (function or reward model); turns completion rows into reward rows."""

    def __init__(self, config: ScoreConfig, reward=None):
        if reward is not None:
            self.reward, self.name = reward, config.reward_model or config.reward_fn or "reward"
        else:
            self.reward, self.name = make_reward(config)
        # A reward model batches by tokens itself; a function gets rows in fixed-size calls.
        self.step = config.fn_batch_size if not config.reward_model else config.shard_size

    def run(self, task: ShardTask) -> list[dict]:
        from winnow.rewards import call_reward

        pairs = task.payload
        if isinstance(pairs, ScoreSlice):  # the stage's tasks name their rows; library callers may pass pairs
            pairs = pairs.pairs(prompt_contents(pairs.run_dir))
        values: list[float] = []
        paths: list[dict] = []  # a reward model's per-row scoring path, for the manifest
        for start in range(0, len(pairs), self.step):
            part = pairs[start : start + self.step]
            values += call_reward(
                self.reward,
                self.name,
                [content for content, _ in part],
                [c["text"] for _, c in part],
                prompt_ids=[c["prompt_id"] for _, c in part],
                sample_indices=[c["sample_index"] for _, c in part],
            )
            if hasattr(self.reward, "last_paths"):
                paths += [
                    {"scored_by": p, "prompt_tokens_saved": t}
                    for p, t in zip(self.reward.last_paths, self.reward.last_tokens_saved, strict=True)
                ]
        return [
            {
                "prompt_id": c["prompt_id"],
                "sample_index": c["sample_index"],
                "model": c["model"],
                "reward": reward_to_json(v),
                **path,
            }
            for (_, c), v, path in zip(pairs, values, paths or [{}] * len(pairs), strict=True)
        ]


def _reward_identity(config: ScoreConfig, reward) -> str:
    """The hash of the reward's code or model, so resuming after it changed is refused."""
    from winnow.provenance import callable_identity, model_identity, reward_fn_identity

    if reward is not None:
        return callable_identity(reward)
    if config.reward_model:
        return model_identity(config.reward_model)
    if config.reward_judge:
        # the judge is a served model: its URL and name are in the config; the rubric is hashed
        from winnow.rewards.judge import rubric_identity

        return rubric_identity(config.judge_rubric)
    return reward_fn_identity(config.reward_fn or "")


def make_reward(config: ScoreConfig):
    """The reward config names, and a name for messages: reward model, else judge, else function."""
    if config.reward_model:
        from winnow.rewards.classifier import ClassifierReward

        rm = ClassifierReward(
            config.reward_model,
            device=config.device,
            dtype=config.dtype,
            batch_tokens=config.batch_tokens,
            max_batch_size=config.max_batch_size,
            prefix_sharing=config.reward_prefix_sharing,
        )
        return rm, config.reward_model
    if config.reward_judge:
        from winnow.remote import ClientSettings
        from winnow.rewards.judge import JudgeReward

        judge = JudgeReward(
            ClientSettings(base_url=config.reward_judge, api_key_env=config.judge_api_key_env),
            model=config.judge_model or "",
            rubric=config.judge_rubric,
        )
        return judge, f"judge {config.judge_model}"
    from winnow.rewards import load_reward_fn

    spec = config.reward_fn or ""  # validate() makes sure one of the two is set
    return load_reward_fn(spec), spec


def reward_matrix(prompts: list[Prompt], rows: list[dict], num_columns: int) -> np.ndarray:
    """Place keyed reward rows into a float64 (M, C) matrix; cells with no row stay NaN."""
    index = {p.id: i for i, p in enumerate(prompts)}
    matrix = np.full((len(prompts), num_columns), np.nan, dtype=np.float64)
    for row in rows:
        if row["reward"] is not None:
            matrix[index[row["prompt_id"]], row["sample_index"]] = row["reward"]
    return matrix


def scoring_paths(rows: list[dict]) -> dict:
    """A reward model's rows per scoring path (shared prefix, full and why, too long) and the
    prompt tokens the shared prefix saved; empty for reward functions."""
    if not rows or "scored_by" not in rows[0]:
        return {}
    return {
        "rows_by_scoring_path": dict(sorted(Counter(r["scored_by"] for r in rows).items())),
        "prompt_tokens_saved": sum(r["prompt_tokens_saved"] for r in rows),
    }


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
