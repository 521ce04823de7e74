"""The one reward applier: how the score stage, ``winnow.score`` and ``winnow serve`` turn a
batch of rows into rewards, so that the three cannot drift apart.

A batch is R rows: each a prompt (its text or messages), a completion text, its keys
(``prompt_ids``, ``sample_indices``) and its prompt's columns. ``RewardApplier.apply``:

1. **Reasoning tags** (``score.reasoning_tags``): every reward sees only the answer after
   the closing tag; a row whose reasoning never closed gets 0 from each reward without
   being shown to any (``Applied.unfinished``).
2. **Each reward** of ``score.rewards()`` in calls of ``Part.step`` rows, each call under
   ``score.reward_timeout`` (``call_reward``: contained, abandoned past the limit with
   ``RewardTimeout``, values checked: one per row, None -> NaN, finite, at most
   ``MAX_REWARD``); a CPU-bound built-in's calls in parallel processes. Under
   ``score.on_error: skip`` a call that fails is halved until the rows that fail alone
   are found; those are unscored (NaN) and reported (``Applied.failed``).
3. **The weighted sum** (``score.reward_weights``), NaN where any reward is NaN, refused
   past ``MAX_REWARD`` as a single reward is.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from winnow.errors import WinnowError
from winnow.rewards import BUILTINS, MAX_REWARD, RewardRaised, builtin_options, call_reward, load_reward_fn
from winnow.verifiers import Scores
from winnow.verifiers.reasoning import answer_after_reasoning, resolve_tags

if TYPE_CHECKING:  # the config's type only: nothing of winnow.config runs here
    from winnow.config import ScoreConfig


@dataclass
class Part:
    """One reward of the weighted sum, loaded once."""

    name: str
    reward: Any
    step: int
    """Rows per call: a reward model batches by tokens itself, a function gets fixed-size calls."""
    spec: str | None = None
    """A CPU-bound built-in's name: its calls may run in parallel processes."""
    options: dict = field(default_factory=dict)


@dataclass
class Applied:
    """What a batch of R rows scored (K rewards)."""

    total: np.ndarray
    """float (R,): the weighted sum; NaN = unscored."""
    values: np.ndarray
    """float (K, R): each reward apart (0 on unfinished reasoning)."""
    unfinished: list[bool]
    """(R,): the reasoning never closed, so no reward saw the row (each gave it 0)."""
    no_answer: list[bool]
    """(R,): a verifier flagged the row as having no answer to check."""
    in_call: list[int]
    """(R,): a verifier that gives only a count: that count on the row opening its call."""
    paths: list[dict]
    """(R,): a reward model's scoring path of each row (``scored_by``, ``prompt_tokens_saved``)."""
    failed: list[tuple[str, str] | None] = field(default_factory=list)
    """(R,): (reward, reason) where a reward failed on the row under ``on_error: skip`` (the
    row is then unscored, NaN); None elsewhere."""


@dataclass
class Piece:
    """What one call (or, under ``on_error: skip``, one part of a failed call) gave its rows."""

    scores: Scores
    extras: list[dict]
    """Per row: what the reward added (``row_extras``)."""
    error: str | None = None
    """Why the call failed on its one row (its value is then NaN)."""


class RewardApplier:
    """The rewards of a score config, loaded once (functions, reward model, judge), applied to batches.

    ``reward`` overrides the config's rewards with one callable (library use), named
    ``name`` in messages. ``columns``: the prompts columns each batch brings, refused where
    one shares its name with an option a reward gets (both would arrive as one keyword).
    """

    def __init__(self, config: ScoreConfig, reward=None, columns: tuple[str, ...] = (), name: str | None = None):
        self.tags = resolve_tags(config.reasoning_tags)
        self.processes = config.processes or usable_cpus()
        self.timeout = config.reward_timeout
        self.on_error = config.on_error
        if reward is not None:
            self.parts = [
                Part(name or str(config.reward_model or config.reward_fn or "reward"), reward, config.fn_batch_size)
            ]
            self.weights = [1.0]
        else:
            from winnow.rewards.fallback import check_fallback

            check_fallback(config)
            self.parts = [make_part(kind, spec, config) for kind, spec in config.rewards()]
            self.weights = config.weights()
        for part in self.parts:
            refuse_option_columns(part.name, part.options, tuple(columns))

    @property
    def name(self) -> str:
        """The rewards, for messages: ``a + b`` for a weighted sum."""
        return " + ".join(p.name for p in self.parts)

    def apply(self, prompts: list, completions: list[str], keywords: dict[str, list]) -> Applied:
        """Score R rows: ``prompts[i]`` (text or messages) and ``completions[i]``;
        ``keywords``: ``prompt_ids``, ``sample_indices`` and one list per prompts column,
        each of length R, passed to every reward call (sliced to the call's rows)."""
        answers = completions if self.tags is None else [answer_after_reasoning(t, self.tags) for t in completions]
        live = [i for i, a in enumerate(answers) if a is not None]
        r = len(completions)
        values = np.zeros((len(self.parts), r))  # unfinished reasoning: 0 from every reward, without calling any
        no_answer, in_call = [False] * r, [0] * r
        paths: list[dict] = [{} for _ in range(r)]
        batch = (
            [prompts[i] for i in live],
            [answers[i] for i in live],
            {key: [column[i] for i in live] for key, column in keywords.items()},
        )
        failed: list[tuple[str, str] | None] = [None] * r
        for k, part in enumerate(self.parts):
            got, flags, counts, part_paths, why = self._score(part, *batch)
            values[k, live] = got
            for i, flag, n, p, reason in zip(live, flags, counts, part_paths, why, strict=True):
                no_answer[i] |= flag
                in_call[i] += n
                paths[i].update(p)
                if reason is not None and failed[i] is None:  # the first reward that failed on the row
                    failed[i] = (part.name, reason)
        total = weighted_sum(values, self.weights)
        over = np.flatnonzero(np.abs(total) > MAX_REWARD)  # each is bounded; large weights can still overflow
        if over.size:
            i = int(over[0])
            key = f" (prompt_id {keywords['prompt_ids'][i]!r})" if "prompt_ids" in keywords else ""
            raise WinnowError(
                f"the weighted sum of {self.name} is {total[i]:g} at row {i}{key}: rewards must be finite and "
                f"at most {MAX_REWARD:g} in magnitude; lower score.reward_weights"
            )
        unfinished = [a is None for a in answers]
        return Applied(total, values, unfinished, no_answer, in_call, paths, failed)

    def _score(
        self, part: Part, prompts: list, answers: list, keywords: dict[str, list]
    ) -> tuple[list[float], list[bool], list[int], list[dict], list[str | None]]:
        """One reward over rows: (values, no-answer flags, for a verifier that gives only a
        count: that count on each call's first row, scoring paths, why each row failed
        (None: it did not; only under ``on_error: skip``))."""
        calls = [
            (
                prompts[start : start + part.step],
                answers[start : start + part.step],
                {key: column[start : start + part.step] for key, column in keywords.items()},
            )
            for start in range(0, len(answers), part.step)
        ]
        pieces: list[Piece] = []
        if part.spec is not None and self.processes > 1 and len(calls) > 1:
            pool = process_pool(self.processes)
            futures = [pool.submit(_call_builtin, part.spec, part.options, *c, self.timeout) for c in calls]
            for c, future in zip(calls, futures, strict=True):  # in call order, so rows keep their places
                try:
                    pieces.append(Piece(future.result(), [{}] * len(c[1])))
                except WinnowError as e:
                    if self.on_error == "fail" and not isinstance(e, RewardRaised):
                        raise
                    pieces += self._isolate(part, *c)  # the failing rows found here, by halves
        else:
            for c in calls:
                pieces += self._isolate(part, *c)
        values: list[float] = []
        flags: list[bool] = []
        counts: list[int] = []
        paths: list[dict] = []
        failed: list[str | None] = []
        for piece in pieces:
            scores, rows = piece.scores, len(piece.scores)
            values += scores
            at = set(scores.no_answer_at or ())
            flags += [j in at for j in range(rows)]
            count = scores.no_answer if scores.no_answer_at is None else 0
            counts += [count] + [0] * (rows - 1)
            paths += piece.extras
            failed += [piece.error] * rows
        return values, flags, counts, paths, failed

    def _isolate(self, part: Part, prompts: list, completions: list[str], kw: dict) -> list[Piece]:
        """One call of ``part``; a call that fails is split in halves and each called again,
        down to the single rows that fail alone (about 2 log2(R) calls for one bad row among
        R). Under ``on_error: skip`` those come back unscored with the reason. Under ``fail``
        only a reward that raised (``RewardRaised``) is searched, and the first row it raises
        on is named; a wrong return value already names its position, an exit or a timeout
        its batch (halving would wait out the limit again at every level)."""
        try:
            scores = _call(part.reward, part.name, prompts, completions, kw, self.timeout)
        except WinnowError as e:
            fail = self.on_error == "fail"
            if fail and not isinstance(e, RewardRaised):
                raise  # a wrong return value or an exit names its batch; a timeout would be waited out at every level
            if len(completions) == 1:
                if fail:  # the one line names the row, and the way to go on past it
                    raise WinnowError(f"{_row_of(kw)}{e}; --on-error skip records such rows and goes on") from None
                return [Piece(Scores([math.nan]), [{}], " ".join(str(e).split()))]
            half = len(completions) // 2
            pieces = [
                piece
                for cut in (slice(0, half), slice(half, None))
                for piece in self._isolate(
                    part, prompts[cut], completions[cut], {key: column[cut] for key, column in kw.items()}
                )
            ]
            if fail:
                raise  # the call failed, though each half alone did not: stop as it did
            return pieces
        # what the reward says of each row is read right after its call
        return [Piece(scores, row_extras(part.reward, len(completions)))]


def _row_of(kw: dict) -> str:
    """The keys of a one-row call, as a message's prefix.

    >>> _row_of({"prompt_ids": ["p4"], "sample_indices": [2]}), _row_of({})
    ("prompt_id 'p4' sample_index 2: ", '')
    """
    if not kw.get("prompt_ids"):
        return ""
    sample = f" sample_index {kw['sample_indices'][0]}" if kw.get("sample_indices") else ""
    return f"prompt_id {kw['prompt_ids'][0]!r}{sample}: "


def row_extras(reward, rows: int) -> list[dict]:
    """Fields a reward's last call adds to each score row: a reward model's scoring path,
    a process reward model's step scores, a judge's raw reply (to see why a row is
    unscored) and its request's usage; none for a function."""
    if hasattr(reward, "last_step_scores"):
        return [{"step_scores": s} for s in reward.last_step_scores]
    if hasattr(reward, "last_extras"):  # a rule backed by a judge: what decided each row
        return reward.last_extras
    if hasattr(reward, "last_paths"):
        return [
            {"scored_by": p, "prompt_tokens_saved": t}
            for p, t in zip(reward.last_paths, reward.last_tokens_saved, strict=True)
        ]
    if hasattr(reward, "last_replies"):
        return [
            {"judge_reply": reply, "judge_usage": usage}
            for reply, usage in zip(reward.last_replies, reward.last_usage, strict=True)
        ]
    return [{}] * rows


def make_part(kind: str, spec: str, config: ScoreConfig) -> Part:
    """Load one reward of ``config.rewards()``; a built-in gets its options from the config."""
    if kind == "model":
        return Part(spec, load_reward_model(config), config.shard_size)
    if kind == "prm":
        from winnow.rewards.prm import ProcessReward  # torch and transformers: only when asked for

        prm = ProcessReward(
            config.prm_model or "",
            shape=config.prm_shape,
            separator=config.prm_step_separator,
            step_tag=config.prm_step_tag,
            labels=config.prm_labels,
            aggregate=config.prm_aggregate,
            system=config.prm_system,
            device=config.device,
            dtype=config.dtype,
            batch_tokens=config.batch_tokens,
            max_batch_size=config.max_batch_size,
        )
        return Part(f"prm {spec}", prm, config.shard_size)
    if kind == "judge":
        from winnow.remote import judge_client
        from winnow.rewards.judge import JudgeReward  # the openai client: only when asked for

        judge = JudgeReward(
            judge_client(config),
            model=config.judge_model or "",
            rubric=config.judge_rubric,
        )
        return Part(f"judge {config.judge_model}", judge, config.fn_batch_size)
    options = builtin_options(spec, config)
    fn = partial(load_reward_fn(spec), **options) if options else load_reward_fn(spec)
    if config.fallback_judge:
        from winnow.rewards.fallback import RuleThenJudge, falls_back

        if falls_back(spec):  # in this process: the judge's client does not travel to a pool's
            from winnow.remote import judge_client

            backed = RuleThenJudge(
                fn,
                judge_client(config, config.fallback_judge),
                model=config.judge_model or "",
                on=config.fallback_on,
                prompt=config.fallback_prompt,
                reference_column=config.reference_column,
            )
            return Part(spec, backed, config.fn_batch_size, None, options)
    parallel = spec in BUILTINS and BUILTINS[spec].cpu_bound
    return Part(spec, fn, config.fn_batch_size, spec if parallel else None, options)


def load_reward_model(config: ScoreConfig):
    """``config.reward_model`` loaded: through its processor where its config has a vision
    tower (``winnow.rewards.vision``), else as a text reward model (``classifier``)."""
    from winnow.models import is_vision_language, resolve_model  # torch and transformers: only when asked for

    path = config.reward_model or ""
    options: dict[str, Any] = dict(
        device=config.device,
        dtype=config.dtype,
        batch_tokens=config.batch_tokens,
        max_batch_size=config.max_batch_size,
        prefix_sharing=config.reward_prefix_sharing,
    )
    folder = resolve_model(path)
    if is_vision_language(folder):
        from winnow.rewards.vision import VisionClassifierReward

        return VisionClassifierReward(folder, name=path, **options)
    from winnow.rewards.classifier import ClassifierReward

    return ClassifierReward(path, **options)


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


def _call(reward, name: str, prompts: list, completions: list[str], kw: dict, timeout: float | None = None) -> Scores:
    return call_reward(reward, name, prompts, completions, timeout=timeout, **kw)


def _call_builtin(
    spec: str, options: dict, prompts: list, completions: list[str], kw: dict, timeout: float | None = None
) -> Scores:
    """One call of a built-in in a pool process (it is loaded there by name: functions do not pickle)."""
    return _call(partial(load_reward_fn(spec), **options), spec, prompts, completions, kw, timeout)
