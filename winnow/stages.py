"""The pipeline stages over a run directory: generate -> score -> select.

Each stage reads the previous stage's files, writes its own shards atomically, skips the
shards that are already there, and writes its manifest last. Rows are keyed by
(prompt_id, sample_index) throughout; matrices are indexed by the prompt order of
``generate/prompts.jsonl`` (rows) and sample_index (columns).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from winnow import select as sel
from winnow.config import GenerateConfig, ScoreConfig, SelectConfig, config_hash
from winnow.errors import WinnowError
from winnow.generate import Sampling, make_backend
from winnow.records import Prompt, atomic_write_jsonl, read_jsonl, reward_to_json
from winnow.rundir import Stage, completed_manifest, read_shards


def shard_seed(seed: int, model_index: int, shard_index: int) -> int:
    """A per-shard seed, so a resumed run samples exactly what an uninterrupted one would."""
    return int(np.random.SeedSequence([seed, model_index, shard_index]).generate_state(1)[0])


def generate(run_dir: str | Path, prompts: list[Prompt], config: GenerateConfig) -> dict:
    """Sample ``config.n`` completions per prompt from each model; returns the manifest."""
    config.validate()
    rows = [p.to_row() for p in prompts]
    stage = Stage(run_dir, "generate", {"generate": asdict(config), "prompts_hash": config_hash(rows)})
    stage.begin()
    if stage.is_complete():
        return stage.manifest()
    sampling = Sampling(config.n, config.temperature, config.top_p, config.top_k, config.max_new_tokens)
    num_shards = math.ceil(len(prompts) / config.shard_size)
    shard_names = []
    for k, model in enumerate(config.models):
        names = [f"m{k}-{i:05d}" for i in range(num_shards)]
        shard_names += names
        todo = [i for i, name in enumerate(names) if not stage.has_shard(name)]
        if not todo:
            continue
        backend = make_backend(config.backend, model, device=config.device, batch_size=config.batch_size)
        keep = _fit_in_context(backend, prompts, config)
        for i in tqdm(todo, desc=f"generate {model}", unit="shard"):
            chunk = [p for p in prompts[i * config.shard_size : (i + 1) * config.shard_size] if p.id in keep]
            completions = backend.generate(chunk, sampling, seed=shard_seed(config.seed, k, i)) if chunk else []
            shard = []
            for c in completions:
                row = c.to_row()
                row["sample_index"] += k * config.n  # model k owns columns k*n .. k*n+n-1
                shard.append(row)
            stage.write_shard(names[i], shard)
    completions = stage.read_shards(shard_names)
    stage.claim()
    atomic_write_jsonl(stage.dir / "prompts.jsonl", rows)
    return stage.finish(
        shards=shard_names,
        num_prompts=len(prompts),
        num_columns=config.n * len(config.models),
        num_completions=len(completions),
        skipped_prompts=_count_skipped(prompts, completions, len(config.models)),
    )


def _fit_in_context(backend, prompts: list[Prompt], config: GenerateConfig) -> set[str]:
    """Ids of prompts that leave room for max_new_tokens; too-long ones error or are skipped."""
    room = backend.context_length() - config.max_new_tokens
    keep = set()
    for row, (prompt, length) in enumerate(zip(prompts, backend.prompt_lengths(prompts), strict=True), start=1):
        if length <= room:
            keep.add(prompt.id)
        elif config.long_prompts == "error":
            raise WinnowError(
                f"prompt {prompt.id!r} (row {row}) has {length} tokens, more than the {room} that model "
                f"{backend.model} leaves for the prompt (context {backend.context_length()} minus "
                f"max_new_tokens {config.max_new_tokens}); pass --long-prompts skip to skip such prompts"
            )
    return keep


def _count_skipped(prompts: list[Prompt], completions: list[dict], num_models: int) -> int:
    """Prompt-model pairs that got no completion (too long for that model's context)."""
    per_prompt: dict[str, set] = {}
    for c in completions:
        per_prompt.setdefault(c["prompt_id"], set()).add(c["model"])
    return sum(num_models - len(per_prompt.get(p.id, ())) for p in prompts)


def load_generations(run_dir: str | Path) -> tuple[list[Prompt], list[dict], dict]:
    """Prompts (row order), completion rows and the generate manifest of a finished stage."""
    manifest = completed_manifest(run_dir, "generate")
    folder = Path(run_dir) / "generate"
    prompts = [_prompt_from_row(row) for _, row in read_jsonl(folder / "prompts.jsonl")]
    completions = read_shards(folder, manifest["shards"])
    return prompts, completions, manifest


def load_scored(run_dir: str | Path) -> tuple[list[Prompt], dict, np.ndarray, dict]:
    """What selection reads: prompts (matrix rows), completions keyed by (prompt_id,
    sample_index), the reward matrix float (M, C) and the score manifest."""
    prompts, completions, _ = load_generations(run_dir)
    manifest = completed_manifest(run_dir, "score")
    rewards = np.load(Path(run_dir) / "score" / "rewards.npy")
    return prompts, {(c["prompt_id"], c["sample_index"]): c for c in completions}, rewards, manifest


def _prompt_from_row(row: dict) -> Prompt:
    if "messages" in row:
        return Prompt(id=row["id"], messages=tuple(row["messages"]))
    return Prompt(id=row["id"], text=row["prompt"])


def score(run_dir: str | Path, config: ScoreConfig, reward=None) -> dict:
    """Score every completion into an M x C reward matrix (``score/rewards.npy``, NaN = unscored).

    ``reward`` overrides the reward built from config (for library use); the stage config
    then records only its name.
    """
    from winnow.rewards import call_reward, load_reward_fn

    config.validate()
    prompts, completions, gen = load_generations(run_dir)
    stage = Stage(run_dir, "score", {"score": asdict(config), "generate_hash": gen["config_hash"]})
    stage.begin()
    if stage.is_complete():
        return stage.manifest()
    by_id = {p.id: p for p in prompts}
    num_shards = math.ceil(len(completions) / config.shard_size)
    names = [f"{i:05d}" for i in range(num_shards)]
    todo = [i for i, name in enumerate(names) if not stage.has_shard(name)]
    if todo and reward is None:
        reward, reward_name = _make_reward(config, load_reward_fn)
    else:
        reward_name = config.reward_model or config.reward_fn
    step = config.fn_batch_size if not config.reward_model else config.shard_size
    for i in tqdm(todo, desc="score", unit="shard"):
        rows = completions[i * config.shard_size : (i + 1) * config.shard_size]
        values = []
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            values += call_reward(
                reward,
                reward_name,
                [by_id[c["prompt_id"]].content for c in part],
                [c["text"] for c in part],
                prompt_ids=[c["prompt_id"] for c in part],
                sample_indices=[c["sample_index"] for c in part],
            )
        stage.write_shard(
            names[i],
            [
                {
                    "prompt_id": c["prompt_id"],
                    "sample_index": c["sample_index"],
                    "model": c["model"],
                    "reward": reward_to_json(v),
                }
                for c, v in zip(rows, values, strict=True)
            ],
        )
    matrix = reward_matrix(prompts, stage.read_shards(names), gen["num_columns"])
    _save_npy(stage.dir / "rewards.npy", matrix)
    return stage.finish(shards=names, **summarize(matrix, num_completions=len(completions)))


def _make_reward(config: ScoreConfig, load_reward_fn):
    if config.reward_model:
        from winnow.rewards.classifier import ClassifierReward

        rm = ClassifierReward(
            config.reward_model,
            device=config.device,
            batch_tokens=config.batch_tokens,
            max_batch_size=config.max_batch_size,
        )
        return rm, config.reward_model
    return load_reward_fn(config.reward_fn), config.reward_fn


def reward_matrix(prompts: list[Prompt], rows: list[dict], num_columns: int) -> np.ndarray:
    """Place keyed reward rows into a float64 (M, C) matrix; cells with no row stay NaN."""
    index = {p.id: i for i, p in enumerate(prompts)}
    matrix = np.full((len(prompts), num_columns), np.nan, dtype=np.float64)
    for row in rows:
        if row["reward"] is not None:
            matrix[index[row["prompt_id"]], row["sample_index"]] = row["reward"]
    return matrix


def summarize(matrix: np.ndarray, *, num_completions: int) -> dict:
    scored = int((~np.isnan(matrix)).sum())
    best = sel.top_per_prompt(matrix)
    has = best >= 0
    best_values = matrix[np.flatnonzero(has), best[has]]
    return {
        "num_completions": num_completions,
        "scored": scored,
        "unscored": num_completions - scored,
        "mean_reward": float(np.nanmean(matrix)) if scored else None,
        "mean_best_reward": float(best_values.mean()) if has.any() else None,
    }


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(path)


def select(run_dir: str | Path, config: SelectConfig) -> dict:
    """Pick rows with a strategy and write ``select/selected.jsonl`` in TRL's
    conversational prompt-completion format, each row keyed and carrying its reward."""
    config.validate()
    prompts, by_key, rewards, scored = load_scored(run_dir)
    stage = Stage(run_dir, "select", {"select": asdict(config), "score_hash": scored["config_hash"]})
    stage.begin()
    if stage.is_complete():
        return stage.manifest()
    if config.dedup:
        texts = [[by_key.get((p.id, j), {}).get("text") for j in range(rewards.shape[1])] for p in prompts]
        rewards = sel.dedup(rewards, texts)
    pairs = sel.apply(config.strategy, rewards, k=config.k, t=config.threshold, seed=config.seed)
    rows = []
    for i, j in pairs.tolist():
        prompt, completion = prompts[i], by_key[(prompts[i].id, j)]
        rows.append(
            {
                "prompt": prompt.as_messages(),
                "completion": [{"role": "assistant", "content": completion["text"]}],
                "prompt_id": prompt.id,
                "sample_index": j,
                "model": completion["model"],
                "reward": float(rewards[i, j]),
            }
        )
    stage.claim()
    atomic_write_jsonl(stage.dir / "selected.jsonl", rows)
    mean = float(np.mean([r["reward"] for r in rows])) if rows else None
    return stage.finish(num_selected=len(rows), mean_selected_reward=mean)


def load_selected(run_dir: str | Path) -> list[dict]:
    completed_manifest(run_dir, "select")
    return [row for _, row in read_jsonl(Path(run_dir) / "select" / "selected.jsonl")]
