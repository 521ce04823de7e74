"""The score stage: every completion through the reward into an M x C matrix (``score/rewards.npy``)."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from winnow import select as sel
from winnow.config import ExecutorConfig, ScoreConfig
from winnow.errors import WinnowError
from winnow.executors import ShardTask, run_shards
from winnow.records import Prompt, atomic_write_npy, reward_to_json
from winnow.rundir import Stage, completed_manifest
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
from winnow.verifiers import Scores
from winnow.verifiers.reasoning import answer_after_reasoning, resolve_tags


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
    if reward is None and gen.get("adaptive"):
        from winnow.adaptive import score_adaptive, scored_under

        if scored_under(gen) == config.stage_config():
            # sampled adaptively under this very config: its steps scored every completion already
            return score_adaptive(run_dir, config, executor=executor)
    prompts = load_prompts(run_dir, gen)
    remember_prompts(str(run_dir), gen["config_hash"], prompts)  # a local worker need not read them again
    stage = Stage(run_dir, "score", folder_config(config, gen["config_hash"], reward))
    names_of_columns = column_names(prompts)
    with stage:
        slices = plan_slices(run_dir, gen, config.shard_size)
        names = [f"{i:05d}" for i in range(len(slices))]
        by_name = dict(zip(names, slices, strict=True))
        pending = stage.pending(names)
        tasks = [ShardTask(name, by_name[name]) for name in pending]
        keys = SliceKeys({name: by_name[name] for name in pending})
        report = run_shards(
            tasks,
            ScoreWorkerFactory(config, reward, names_of_columns),
            stage.dir,
            claim=stage.claim,
            executor=executor,
            desc="score",
            on_written=stage.recorder(keys, exact=True),  # type: ignore[arg-type]
            config_hash=stage.hash,
        )
        report.raise_failed("score", len(tasks))
        stage.check_made(tasks, report, keys, exact=True)  # type: ignore[arg-type]
        parts = [spec for _, spec in config.rewards()] if reward is None else [config.reward_fn or "reward"]
        files = ["rewards.npy"] + ([f"rewards-{k}.npy" for k in range(len(parts))] if len(parts) > 1 else [])
        if not tasks and stage.stored_manifest() and all(stage.matches(f) for f in files):
            return stage.manifest()
        # one pass over the score shards: the matrices and counts, never every row at once
        streamed = stream_matrices(
            stage.dir,
            names,
            stage.records(),
            prompts,
            gen["num_columns"],
            components=len(parts) if len(parts) > 1 else 0,
        )
        matrix = streamed.total
        num_completions = count_rows(gen, gen["shards"], Path(run_dir) / "generate")
        stage.claim()
        atomic_write_npy(stage.dir / "rewards.npy", matrix)
        extra: dict[str, Any] = {}
        if len(parts) > 1:  # each reward as its own matrix, beside their weighted sum
            extra["components"] = []
            for k, (spec, weight) in enumerate(zip(parts, config.weights(), strict=True)):
                part = streamed.components[k]
                atomic_write_npy(stage.dir / files[k + 1], part)
                brief = summarize(part, num_completions=num_completions)
                extra["components"].append(
                    {
                        "reward": spec,
                        "weight": weight,
                        "file": files[k + 1],
                        "scored": brief["scored"],
                        "mean_reward": brief["mean_reward"],
                    }
                )
        return stage.finish(
            shards=names,
            outputs=files,
            **summarize(matrix, num_completions=num_completions),
            **streamed.paths,
            **answer_counts(streamed.counts, config),
            **extra,
            executor=report.record(executor),
        )


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


@dataclass
class Part:
    """One reward of the weighted sum, loaded once per worker."""

    name: str
    reward: Any
    step: int
    """Rows per call: a reward model batches by tokens itself, a function gets fixed-size calls."""
    spec: str | None = None
    """A CPU-bound built-in's name: its calls may run in parallel processes."""
    options: dict = field(default_factory=dict)


class ScoreWorker:
    """Loads the rewards once (functions, reward model, judge); turns completion rows into reward rows.

    With reasoning tags, every reward sees only the answer after the closing tag, and a
    completion whose reasoning never closed gets 0 from each without being shown to any.
    """

    def __init__(self, config: ScoreConfig, reward=None, columns: tuple[str, ...] = ()):
        self.tags = resolve_tags(config.reasoning_tags)
        self.columns = tuple(columns)
        self.processes = config.processes or usable_cpus()
        self.weights = config.weights() if reward is None else [1.0]
        self.timeout = config.reward_timeout
        if reward is not None:
            name = config.reward_model or config.reward_fn or "reward"
            self.parts = [Part(str(name), reward, config.fn_batch_size)]
        else:
            self.parts = [make_part(kind, spec, config) for kind, spec in config.rewards()]
        for part in self.parts:
            refuse_option_columns(part.name, part.options, self.columns)

    def run(self, task: ShardTask) -> list[dict]:
        triples = task.payload
        if isinstance(triples, ScoreSlice):  # the stage's tasks name their rows; library callers may pass triples
            triples = triples.triples(prompt_records(triples.run_dir, triples.generate_hash))
        texts = [c["text"] for _, c, _ in triples]
        answers = texts if self.tags is None else [answer_after_reasoning(t, self.tags) for t in texts]
        live = [i for i, a in enumerate(answers) if a is not None]
        # unfinished reasoning: 0 from every reward, without calling any
        values = np.zeros((len(self.parts), len(triples)))
        no_answer = [False] * len(triples)
        in_call = [0] * len(triples)  # a verifier that gives only a count: on the row opening its call
        paths: list[dict] = [{} for _ in triples]
        batch = [triples[i] for i in live], [a for a in answers if a is not None]
        for k, part in enumerate(self.parts):
            got, flags, counts, part_paths = self._score(part, *batch)
            values[k, live] = got
            for i, flag, n, p in zip(live, flags, counts, part_paths, strict=True):
                no_answer[i] |= flag
                in_call[i] += n
                paths[i].update(p)
        total = weighted_sum(values, self.weights)
        rows = []
        for i, (_, c, _) in enumerate(triples):
            row = {
                "prompt_id": c["prompt_id"],
                "sample_index": c["sample_index"],
                "model": c["model"],
                "reward": reward_to_json(total[i]),
                **paths[i],
            }
            if len(self.parts) > 1:
                row["rewards"] = [reward_to_json(v) for v in values[:, i]]
            if answers[i] is None:
                row["unfinished_reasoning"] = True
            if no_answer[i]:
                row["no_answer"] = True
            if in_call[i]:
                row["no_answer_in_call"] = in_call[i]
            rows.append(row)
        return rows

    def _score(
        self, part: Part, triples: list, answers: list[str]
    ) -> tuple[list[float], list[bool], list[int], list[dict]]:
        """One reward over rows: (values, no-answer flags, for a verifier that gives only a
        count: that count on each call's first row, scoring paths)."""
        calls = [
            (
                [content for content, _, _ in triples[start : start + part.step]],
                answers[start : start + part.step],
                self._keywords(triples[start : start + part.step]),
            )
            for start in range(0, len(triples), part.step)
        ]
        results: list[Scores] = []
        extras: list[list[dict]] = []
        if part.spec is not None and self.processes > 1 and len(calls) > 1:
            pool = process_pool(self.processes)
            futures = [pool.submit(_call_builtin, part.spec, part.options, *c, self.timeout) for c in calls]
            results = [f.result() for f in futures]  # in call order, so rows keep their places
            extras = [[{}] * len(c[1]) for c in calls]
        else:
            for c in calls:  # what the reward says of each row is read right after its call
                results.append(_call(part.reward, part.name, *c, self.timeout))
                extras.append(row_extras(part.reward, len(c[1])))
        values: list[float] = []
        flags: list[bool] = []
        counts: list[int] = []
        paths: list[dict] = []
        for (_, completions, _), scores, extra in zip(calls, results, extras, strict=True):
            values += scores
            at = set(scores.no_answer_at or ())
            flags += [j in at for j in range(len(completions))]
            count = scores.no_answer if scores.no_answer_at is None else 0
            counts += [count] + [0] * (len(completions) - 1)
            paths += extra
        return values, flags, counts, paths

    def _keywords(self, triples: list) -> dict:
        """prompt_ids, sample_indices and one list per prompts column (None where a row lacks it)."""
        kw: dict[str, list] = {
            "prompt_ids": [c["prompt_id"] for _, c, _ in triples],
            "sample_indices": [c["sample_index"] for _, c, _ in triples],
        }
        for name in self.columns:
            kw[name] = [columns.get(name) for _, _, columns in triples]
        return kw


_POOLS: dict[int, ProcessPoolExecutor] = {}


def process_pool(processes: int) -> ProcessPoolExecutor:
    """One pool per size for the life of this process: its workers start once (about a
    second each, importing winnow and the verifier), not once per shard or stage."""
    if processes not in _POOLS:
        # spawn, not fork: a fork of a process holding torch's threads can deadlock
        _POOLS[processes] = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    return _POOLS[processes]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def row_extras(reward, rows: int) -> list[dict]:
    """Fields a reward's last call adds to each score row: a reward model's scoring path,
    a judge's raw reply (to see why a row is unscored); none for a function."""
    if hasattr(reward, "last_paths"):
        return [
            {"scored_by": p, "prompt_tokens_saved": t}
            for p, t in zip(reward.last_paths, reward.last_tokens_saved, strict=True)
        ]
    if hasattr(reward, "last_replies"):
        return [{"judge_reply": reply} for reply in reward.last_replies]
    return [{}] * rows


def _call(reward, name: str, prompts: list, completions: list[str], kw: dict, timeout: float | None = None) -> Scores:
    from winnow.rewards import call_reward

    return call_reward(reward, name, prompts, completions, timeout=timeout, **kw)


def _call_builtin(
    spec: str, options: dict, prompts: list, completions: list[str], kw: dict, timeout: float | None = None
) -> Scores:
    """One call of a built-in in a pool process (it is loaded there by name: functions do not pickle)."""
    from winnow.rewards import load_reward_fn

    return _call(partial(load_reward_fn(spec), **options), spec, prompts, completions, kw, timeout)


def make_part(kind: str, spec: str, config: ScoreConfig) -> Part:
    """Load one reward of ``config.rewards()``; a built-in gets its options from the config."""
    from winnow.rewards import BUILTINS, builtin_options, load_reward_fn

    if kind == "model":
        from winnow.rewards.classifier import ClassifierReward

        rm = ClassifierReward(
            config.reward_model or "",
            device=config.device,
            dtype=config.dtype,
            batch_tokens=config.batch_tokens,
            max_batch_size=config.max_batch_size,
            prefix_sharing=config.reward_prefix_sharing,
        )
        return Part(spec, rm, config.shard_size)
    if kind == "judge":
        from winnow.rewards.judge import JudgeReward

        judge = JudgeReward(
            config.judge_settings(),
            model=config.judge_model or "",
            rubric=config.judge_rubric,
        )
        return Part(f"judge {config.judge_model}", judge, config.fn_batch_size)
    options = builtin_options(spec, config)
    fn = partial(load_reward_fn(spec), **options) if options else load_reward_fn(spec)
    parallel = spec in BUILTINS and BUILTINS[spec].cpu_bound
    return Part(spec, fn, config.fn_batch_size, spec if parallel else None, options)


def refuse_option_columns(name: str, options: dict, columns: tuple[str, ...]) -> None:
    """A prompts column must not share a name with an option the reward gets (both would
    arrive as the same keyword)."""
    clash = sorted(set(options) & set(columns))
    if clash:
        raise WinnowError(
            f"prompts column {clash[0]!r} has the name of an option of reward {name!r}; rename the column"
        )


def weighted_sum(values: np.ndarray, weights: list[float]) -> np.ndarray:
    """sum_k weights[k] * values[k] per column; NaN where any reward is NaN (unscored).

    values: float (K, R), one row per reward. An unscored reward leaves the sum unscored:
    read as 0 it would rank the completion as if that reward had judged it, and selection
    skips NaN, so nothing is chosen on part of the evidence.

    >>> weighted_sum(np.array([[1.0, 0.0, np.nan], [0.5, 1.0, 1.0]]), [1.0, 0.2]).tolist()
    [1.1, 0.2, nan]
    """
    if len(weights) == 1 and weights[0] == 1.0:
        return values[0].astype(np.float64)  # one reward: its values exactly, as before weights existed
    return np.asarray(weights, dtype=np.float64) @ values


def _reward_identity(config: ScoreConfig, reward) -> str | list[str]:
    """The hash of each reward's code or model, so resuming after one changed is refused
    (one string for one reward, as before weights existed)."""
    from winnow.provenance import callable_identity, model_identity, reward_fn_identity

    if reward is not None:
        return callable_identity(reward)
    out = []
    for kind, spec in config.rewards():
        if kind == "model":
            out.append(model_identity(spec))
        elif kind == "judge":
            # the judge is a served model: its URL and name are in the config; the rubric is hashed
            from winnow.rewards.judge import rubric_identity

            out.append(rubric_identity(config.judge_rubric))
        else:
            out.append(reward_fn_identity(spec))
    return out[0] if len(out) == 1 else out


def make_reward(config: ScoreConfig):
    """The reward config names, and a name for messages: their weighted sum when there are several."""
    parts = [make_part(kind, spec, config) for kind, spec in config.rewards()]
    if len(parts) > 1:
        return WeightedReward(parts, config.weights()), " + ".join(p.name for p in parts)
    return parts[0].reward, parts[0].name


@dataclass
class WeightedReward:
    """Several rewards as one callable (``winnow serve``): their weighted sum, NaN if any is NaN."""

    parts: list[Part]
    weights: list[float]

    def __call__(self, prompts: list, completions: list[str], **kw) -> list[float]:
        from winnow.rewards import call_reward

        values = np.array([call_reward(p.reward, p.name, prompts, completions, **kw) for p in self.parts])
        return weighted_sum(values, self.weights).tolist()


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
    """Every prompts column besides id and prompt, in first-seen order."""
    seen: dict[str, None] = {}
    for p in prompts:
        seen.update(dict.fromkeys(p.columns))
    return tuple(seen)


def answer_counts(counts: Counter, config: ScoreConfig) -> dict:
    """``no_answer`` (completions a verifier found nothing to check in) when a reward reports
    it, and ``unfinished_reasoning`` with reasoning tags; empty otherwise, as before either existed.

    counts: over the score rows, ``no_answer`` (flagged rows plus counts given per call) and
    ``unfinished_reasoning`` (``score_input.stream_matrices`` adds them up)."""
    from winnow.rewards import BUILTINS

    out = {}
    verifies = any(spec in BUILTINS and BUILTINS[spec].verifier for _, spec in config.rewards())
    total = counts["no_answer"]
    if verifies or total:
        out["no_answer"] = total
    if config.reasoning_tags:
        out["unfinished_reasoning"] = counts["unfinished_reasoning"]
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
