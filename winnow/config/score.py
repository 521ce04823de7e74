"""``score``: which rewards, how they are combined, and how fast they run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar, get_args

from winnow.config.fields import (
    Dtype,
    FallbackOn,
    IfevalMode,
    OnError,
    PrefixSharing,
    PrmAggregate,
    PrmShape,
    ReasoningFormat,
    bounded,
    check_fields,
    check_price,
    device_field,
)
from winnow.errors import WinnowError

MAX_REWARD_WEIGHT = 1e6
"""Largest |weight| of a reward in a weighted sum: a larger one is a typo, and near 1e308
the sum overflows to infinity (which is not a reward). Each reward is at most
``rewards.MAX_REWARD`` (1e100) in magnitude, so a sum of K stays within K * 1e106."""


@dataclass
class ScoreConfig:
    section: ClassVar[str] = "score"

    reward_model: str | None = None
    """A sequence-classification reward model folder (one output label)."""
    reward_fn: str | list[str] | None = "vader"
    """A reward function: a built-in name (``winnow.rewards.BUILTINS``: rewards and the
    verifiers), ``module:function`` or ``path/to/file.py:function``; a list for
    several. A single one given as a string is replaced by reward_model or reward_judge when
    either is set; a list joins them, with reward_weights."""
    reward_judge: str | None = None
    """A judge model behind an OpenAI-compatible server: its API root (``http://host/v1``).
    Each completion is scored by the number in the judge's answer; none = unscored."""
    judge_model: str | None = None
    """Judge: the served model name (required with reward_judge)."""
    judge_rubric: str | None = None
    """Judge: a rubric template file with {prompt} and {completion} (default: the shipped one)."""
    judge_api_key_env: str | None = None
    """Judge: name of the environment variable holding its API key (never stored)."""
    judge_concurrency: int = bounded(16, ge=1)
    """Judge: requests in flight at once."""
    judge_request_timeout: float = bounded(120.0, gt=0, finite=True, unit="seconds")
    """Judge: seconds per request before it is retried (the whole answer, not each read)."""
    judge_max_retries: int = bounded(5, ge=0)
    """Judge: retries on 429, 5xx, timeouts, dropped connections and invalid replies
    (exponential backoff with jitter), then an error naming the prompt."""
    judge_retry_backoff: float = bounded(0.5, ge=0)
    """Judge: first retry wait in seconds, doubled each retry (full jitter, at most 30 s)."""
    judge_max_requests_per_minute: float | None = bounded(None, gt=0, finite=True)
    """Judge: requests started per minute at most, spaced evenly (one every 60/R seconds,
    retries included); unset = no limit. It only delays requests: the scores are the same."""
    judge_max_tokens_per_minute: float | None = bounded(None, gt=0, finite=True)
    """Judge: prompt plus completion tokens per minute at most (an estimate before each
    request, the rubric's characters / 4 plus its 16 answer tokens, corrected by the reply's
    usage); unset = no limit."""
    judge_price_per_mtok: list[float] | None = None
    """Judge: ``IN,OUT``, the price of a million prompt tokens and of a million completion
    tokens; the manifest and the report then show the judge's cost. Unset: token counts only."""
    fallback_judge: str | None = None
    """Rule verifiers (math, choice, exact): a judge model behind an OpenAI-compatible server
    (its API root, ``http://host/v1``) that decides the rows the rule cannot: those it reads
    no answer in and, with ``fallback_on: fail``, those it fails. The judge sees the
    question, the reference and the answer and says whether they are equivalent (1.0) or
    not (0.0); each score row records ``decided_by`` (rule or judge). Its model is
    judge_model; it is reached with the judge_* settings."""
    fallback_on: FallbackOn = "no-answer"
    """Fallback judge: the rows it decides: ``no-answer`` (the rule read no answer) or
    ``fail`` (those, and the rows the rule fails)."""
    fallback_prompt: str | None = None
    """Fallback judge: a prompt template file with {question}, {reference} and {answer}
    (default: the shipped ``winnow/data/judge_equivalence.txt``)."""
    batch_tokens: int = bounded(16384, ge=1)
    """Reward model: most tokens per batch, padding included (batches are length-sorted)."""
    max_batch_size: int = bounded(64, ge=1)
    """Reward model: most rows per batch."""
    reward_prefix_sharing: PrefixSharing = "auto"
    """Reward model: read each prompt once and score its completions as continuations of
    that shared prefill (exact for causal decoders). ``auto``: the fastest exact path the
    model allows: packed (a prompt whose completions overflow a packed row shares its
    prefill), else the shared prefix, else every row in full with a note; ``on``: the
    shared prefix, an architecture it does not know is an error; ``off``: every row in
    full; ``packed``: whole prompts and their completions end to end in rows of their own
    length, attention per prompt and completion, no padding (``winnow.rewards.packed``; an
    error where the model does not allow it)."""
    prm_model: str | None = None
    """A process reward model folder: one score per step of each completion, in one forward
    pass per completion (``winnow.rewards.prm``); the completion's reward is ``prm_aggregate``
    of its step scores, and the step scores are kept in the score rows (``step_scores``)."""
    prm_shape: PrmShape = "auto"
    """Process reward model: how it reads a step. ``math-shepherd``: a causal LM, a tag token
    after each step, P(good) from the logits of the two label tokens at the tag;
    ``token-class``: a two-class head on every token (Qwen2.5-Math-PRM), P(class 1) at the
    tag; ``auto``: from the model's architecture (``*ForCausalLM`` or
    ``*ForTokenClassification`` / ``*ForProcessRewardModel``)."""
    prm_step_separator: str = "\n\n"
    """Process reward model: the text that ends a step (default a blank line; ``\\n`` and
    ``\\t`` are read as a newline and a tab). Blank steps are dropped."""
    prm_step_tag: str | None = None
    """Process reward model: the token placed after each step and read there (default:
    ``ки`` for math-shepherd, ``<extra_0>`` for token-class); one token of its vocabulary."""
    prm_labels: list[str] | None = None
    """Process reward model, math-shepherd: the good and bad label tokens (default ``+ -``),
    one token each."""
    prm_aggregate: PrmAggregate = "min"
    """Process reward model: a completion's reward from its step scores (each in [0, 1]):
    ``min`` (its weakest step), ``last``, ``prod`` or ``mean``."""
    prm_system: str | None = None
    """Process reward model: a system message put first in its chat template, in place of
    any the prompt has (the policy's instructions are not the PRM's): the one the model was
    trained with, e.g. Qwen2.5-Math-PRM's model card's "Please reason step by step, and put
    your final answer within \\boxed{}.". Needs a model with a chat template. Unset: the
    prompt's messages as they are."""
    fn_batch_size: int = bounded(256, ge=1)
    """Reward function: rows per call."""
    reward_timeout: float | None = bounded(None, gt=0, finite=True, unit="seconds")
    """Seconds one reward call (a batch of ``fn_batch_size`` rows, or a reward model's or
    judge's shard) may take before score stops with an error naming the batch; None: no
    limit (``winnow serve``: 60 s, then the batch's requests get 504). Operational: not part
    of the stage config, so it may change on resume."""
    shard_size: int = bounded(1024, ge=1)
    """Completions per shard file: the unit of resume."""
    device: str = device_field()
    """Where the reward model runs (``auto``: CUDA if present, else CPU)."""
    dtype: Dtype = "auto"
    """Reward model precision: float32, bfloat16, float16, or ``auto`` (bfloat16 on a CUDA
    device that supports it, else float32)."""
    reward_weights: list[float] | None = None
    """Weights of several rewards, in this order: the reward functions as listed, then the
    reward model, the process reward model, then the judge, each between -1e6 and 1e6.
    ``rewards.npy`` is their weighted sum, unscored (NaN) where any of them is unscored;
    each is kept apart too. Unset: 1.0 each."""
    reference_column: str = "answer"
    """Verifiers (math, choice, exact): the prompts column holding the reference answer.
    (ifeval reads the columns ``instruction_id_list`` and ``kwargs``; code reads ``test`` and
    ``entry_point``, HumanEval's schema.)"""
    reasoning_tags: list[str] | None = None
    """``[OPEN, CLOSE]`` or a named format (``[think]``): every reward sees only the text
    after the closing tag; a completion without one scores 0 (counted as unfinished_reasoning)."""
    ifeval_mode: IfevalMode = "strict"
    """Verifier ifeval: ``strict`` (the response as it is) or ``loose`` (IFEval's variants:
    first and last lines dropped, asterisks removed; an instruction followed by any counts)."""
    code_timeout_s: float = bounded(10.0, gt=0, le=3600)
    """Verifier code: wall-time limit of one program in the sandbox, in seconds."""
    code_memory_mb: int = bounded(1024, ge=16, le=1_048_576, interval=True)
    """Verifier code: memory limit of one program in the sandbox, in MB."""
    code_strict_results: bool = False
    """Verifier code: the tests see only results of exact builtin types (None, bool, int,
    float, complex, str, bytes, and containers of those), so that a result whose ``__eq__``
    always answers True fails (docs/howto/sandbox.md)."""
    pass_threshold: float | None = bounded(None, finite=True)
    """A completion passes when its reward is >= this: pass statistics in the report, the
    ``passing`` strategy, ``pass-fail`` pairs and adaptive sampling's rules read it. None:
    no pass statistics (select and report may still be given one)."""
    processes: int | None = bounded(None, ge=1)
    """CPU-bound verifiers: processes scoring batches in parallel (unset: one per CPU this
    process may use). It changes how fast, never what: it is not part of the stage config."""

    on_error: OnError = "fail"
    """A completion a reward fails on (raises, outlasts ``reward_timeout``, returns no number):
    'fail' stops with one line naming it; 'skip' finds the failing rows of the call (halving
    it), records each in ``score/errors.jsonl`` (prompt_id, sample_index, model, reward, reason),
    leaves it unscored (NaN) and goes on. Operational: a rerun may change it, and a stage
    holding errors finishes only under 'skip'."""

    OPERATIONAL = (
        "processes",
        "on_error",
        "reward_timeout",
        "judge_concurrency",
        "judge_request_timeout",
        "judge_max_retries",
        "judge_retry_backoff",
        "judge_max_requests_per_minute",
        "judge_max_tokens_per_minute",
        "judge_price_per_mtok",
    )
    """Fields that say how fast and how hard to try, not what to score: a rerun may change them."""

    def stage_config(self) -> dict:
        """The fields that decide the rewards, stored and compared on resume."""
        # how fast and how long, never what: processes, time limits and retries may change on resume
        out = {k: v for k, v in asdict(self).items() if k not in self.OPERATIONAL}
        if isinstance(self.reward_fn, list) and len(self.reward_fn) == 1:
            out["reward_fn"] = self.reward_fn[0]  # --reward-fn X and reward_fn: X are one config
        if self.prm_system is None:  # unset, a run scored before the field existed resumes
            del out["prm_system"]
        return out

    def rewards(self) -> list[tuple[str, str]]:
        """The rewards summed, in weight order: ("fn", spec) ..., ("model", folder), ("prm",
        folder), ("judge", URL).

        A reward function given as a string keeps its old meaning: the default that a reward
        model, process reward model or judge replaces. Given as a list (the repeatable flag),
        it joins them.
        """
        fns = [self.reward_fn] if isinstance(self.reward_fn, str) else list(self.reward_fn or [])
        if isinstance(self.reward_fn, str) and (self.reward_model or self.prm_model or self.reward_judge):
            fns = []
        out = [("fn", spec) for spec in fns]
        if self.reward_model:
            out.append(("model", self.reward_model))
        if self.prm_model:
            out.append(("prm", self.prm_model))
        if self.reward_judge:
            out.append(("judge", self.reward_judge))
        return out

    def weights(self) -> list[float]:
        """One weight per reward of ``rewards()``."""
        return list(self.reward_weights) if self.reward_weights is not None else [1.0] * len(self.rewards())

    def validate(self) -> None:
        """Every field in its range (``check_fields``), then the rules between fields."""
        check_fields(self)
        check_price("score.judge_price_per_mtok", self.judge_price_per_mtok)
        if not self.reward_judge:  # refused by name, never accepted and ignored
            for name in ("judge_max_requests_per_minute", "judge_max_tokens_per_minute", "judge_price_per_mtok"):
                if getattr(self, name) is not None:
                    raise WinnowError(f"score.{name}: only the judge takes it (reward_judge, --reward-judge)")
        if not (self.reward_model or self.prm_model or self.reward_judge or self.reward_fn):
            raise WinnowError("score.reward_fn: set reward_fn, reward_model, prm_model or reward_judge")
        if isinstance(self.reward_fn, list) and not all(self.reward_fn):
            raise WinnowError("score.reward_fn: reward function names must not be empty")
        self._check_weights()
        if self.reasoning_tags is not None:
            tags, formats = self.reasoning_tags, get_args(ReasoningFormat)
            named = len(tags) == 1 and tags[0] in formats
            if not (named or (len(tags) == 2 and all(tags) and tags[0] != tags[1])):
                raise WinnowError(
                    "score.reasoning_tags: give OPEN CLOSE (two different tags) or a named format "
                    f"({', '.join(formats)}), got {tags}"
                )
        if self.reference_column == "":
            raise WinnowError("score.reference_column: must not be empty")
        if self.reward_judge and not self.judge_model:
            raise WinnowError("score.judge_model: reward_judge needs the judge model name (--judge-model)")
        if self.fallback_judge and not self.judge_model:
            raise WinnowError("score.judge_model: fallback_judge needs the judge model name (--judge-model)")
        if not self.fallback_judge and (self.fallback_on != "no-answer" or self.fallback_prompt is not None):
            name = "fallback_on" if self.fallback_on != "no-answer" else "fallback_prompt"
            raise WinnowError(f"score.{name}: applies to a fallback judge only; set fallback_judge (--fallback-judge)")
        self._check_prm()

    def _check_prm(self) -> None:
        """The process reward model's texts: a separator and a tag that are not empty, two
        labels, a system message only for a process reward model."""
        if self.prm_step_separator == "":
            raise WinnowError("score.prm_step_separator: must not be empty")
        if self.prm_step_tag == "":
            raise WinnowError("score.prm_step_tag: must not be empty")
        if self.prm_system is not None and not self.prm_model:
            raise WinnowError("score.prm_system: only a process reward model takes it (prm_model, --prm-model)")
        if self.prm_system == "":
            raise WinnowError("score.prm_system: must not be empty (leave it unset for none)")
        labels = self.prm_labels
        if labels is not None and (len(labels) != 2 or not all(labels) or labels[0] == labels[1]):
            raise WinnowError(f"score.prm_labels: give two different labels, GOOD BAD, got {labels}")

    def _check_weights(self) -> None:
        """One finite weight within +-MAX_REWARD_WEIGHT per reward; several kinds need them."""
        if self.reward_weights is None:
            if isinstance(self.reward_fn, list) and (self.reward_model or self.prm_model or self.reward_judge):
                raise WinnowError("score.reward_weights: reward functions with a reward model or judge need weights")
            return
        rewards = self.rewards()
        if len(self.reward_weights) != len(rewards):
            names = ", ".join(spec for _, spec in rewards)
            raise WinnowError(
                f"score.reward_weights: {len(self.reward_weights)} weights for {len(rewards)} rewards ({names})"
            )
        if not all(math.isfinite(w) and abs(w) <= MAX_REWARD_WEIGHT for w in self.reward_weights):
            raise WinnowError(
                f"score.reward_weights: weights must be finite numbers between -{MAX_REWARD_WEIGHT:g} and "
                f"{MAX_REWARD_WEIGHT:g}, got {self.reward_weights}"
            )
