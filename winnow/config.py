"""Configuration of each stage: one dataclass per stage, every field documented under it.

Values come from the dataclass defaults, then a YAML file (``--config``), then CLI flags.
A stage's config, with the hash of what it reads, is stored in its run folder; resuming
under a different one is refused (see ``winnow.rundir``).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from winnow.errors import WinnowError
from winnow.generate.contract import BACKENDS, Sampling, check_sampling
from winnow.models import DTYPES
from winnow.records import config_hash, read_text  # noqa: F401  (config_hash: its old home)
from winnow.remote import ClientSettings
from winnow.select import PAIRING_NEEDS, PAIRINGS, STRATEGIES

REWARD_PREFIX_SHARING = ("auto", "on", "off", "packed")
LONG_PROMPT_POLICIES = ("error", "skip")
MIN_TEMPERATURE = 1e-5
REPETITION_PENALTY_RANGE = (1e-2, 1e2)
"""Logits are divided (or multiplied) by the penalty: outside this range they overflow to inf
(1e-300) or every repeated token is ruled out (inf); useful values lie near 1."""
MAX_BATCH_SIZE = 1 << 20
"""A training batch size beyond this is a typo; a huge one overflows the data loader's ints."""
"""Temperatures in (0, 1e-5) are refused: logits divided by them overflow (1e-300 sampled an
out-of-vocabulary token). 0 is greedy decoding, which is what such a temperature means."""
MAX_N = 10_000
"""Most completions per prompt and model, checked before anything is allocated."""
MAX_SEED = 2**63 - 1
MAX_REWARD_WEIGHT = 1e6
"""Largest |weight| of a reward in a weighted sum: a larger one is a typo, and near 1e308
the sum overflows to infinity (which is not a reward). Each reward is at most
``rewards.MAX_REWARD`` (1e100) in magnitude, so a sum of K stays within K * 1e106."""
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = ("auto", "cpu", "mps", "cuda", "cuda:N")
"""What ``DEVICE`` accepts, as help and error messages show it."""
POOLS = ("all", "latest")
SFT_FROM = ("start", "previous")


@dataclass
class GenerateConfig:
    models: list[str] = field(default_factory=lambda: ["smollm2"])
    """Policy models: local HF folders, Hub ids (``org/name``) already in the Hugging Face
    cache (never downloaded by a run), or the built-in ``smollm2``. Each contributes ``n``
    completions per prompt (model k owns sample indices k*n .. k*n+n-1)."""
    backend: str = "hf"
    """Generation engine: ``hf`` (transformers, CPU or CUDA), ``openai`` (any
    OpenAI-compatible server at ``base_url``; ``models`` are its served model names) or
    ``vllm`` (vLLM offline engine; ``pip install -e '.[vllm]'``, or ``scripts/setup_vllm.sh`` on CPU)."""
    n: int = 8
    """Completions per prompt and model: the N of the M x N reward matrix."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass, in (0, 1]; 1 keeps every token."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 turns it off."""
    min_p: float = 0.0
    """Drop tokens below min_p times the top token's probability, in [0, 1); 0 turns it off."""
    repetition_penalty: float = 1.0
    """Penalty (> 0) on tokens already present, as in transformers and vLLM; 1 turns it off."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion (left out of its text; finish_reason 'stop')."""
    max_new_tokens: int = 64
    """Most tokens sampled per completion; a completion cut here has finish_reason 'length'."""
    seed: int = 0
    """Seed of the sampler; each shard is seeded from it, so a resumed run samples the same."""
    batch_size: int = 16
    """Prompts decoded together (batch_size * n sequences; 16 measured fastest on CPU)."""
    shard_size: int = 32
    """Prompts per shard file: the unit of resume (batches never span two shards)."""
    long_prompts: str = "error"
    """A prompt that leaves no room for max_new_tokens in the context: 'error' or 'skip' (counted)."""
    device: str = "auto"
    """``auto`` (CUDA if present), ``cpu`` or ``cuda[:i]``."""
    base_url: str | None = None
    """openai backend: the server's API root, e.g. ``http://127.0.0.1:8000/v1``."""
    api_key_env: str | None = None
    """openai backend: name of the environment variable holding the API key (never stored)."""
    endpoint: str = "auto"
    """openai backend: ``auto`` (chat prompts to /chat/completions, text prompts to
    /completions), ``chat`` (text prompts as one user turn) or ``completions``."""
    concurrency: int = 16
    """openai backend: requests in flight at once."""
    request_timeout: float = 120.0
    """openai backend: seconds per request before it is retried."""
    max_retries: int = 5
    """openai backend: retries on 429, 5xx, timeouts and dropped connections (exponential
    backoff with jitter), then an error naming the prompt."""
    retry_backoff: float = 0.5
    """openai backend: first retry wait in seconds, doubled each retry (full jitter, at most 30 s)."""

    OPERATIONAL = ("concurrency", "request_timeout", "max_retries", "retry_backoff")
    """Fields that say how hard to try, not what to sample: a rerun may change them."""

    def stage_config(self) -> dict:
        """The fields that decide the rows, stored and compared on resume."""
        return {k: v for k, v in asdict(self).items() if k not in self.OPERATIONAL}

    dtype: str = "auto"
    """Precision of the policy: float32, bfloat16, float16, or ``auto`` (bfloat16 on a CUDA
    device that supports it, else float32)."""
    tensor_parallel_size: int = 1
    """vLLM: GPUs each model is split across."""
    gpu_memory_utilization: float | None = None
    """vLLM: share of GPU memory (of system memory on CPU builds) the engine may take;
    unset = vLLM's default on a GPU, and on CPU builds 0.8 of the memory free at start-up
    (refused at once, exit 2, if that cannot hold the model)."""
    max_model_len: int | None = None
    """vLLM: context length to allocate for; unset = the model's own. Prompts longer than
    it minus max_new_tokens follow ``long_prompts``."""

    def validate(self) -> None:
        _check(self.models, "generate.models", "at least one model")
        if self.backend == "openai":
            _check(self.base_url, "generate.base_url", "backend 'openai' needs the server's URL (--base-url)")
            _check(self.concurrency >= 1, "generate.concurrency", f"must be >= 1, got {self.concurrency}")
            _check(self.request_timeout > 0, "generate.request_timeout", f"must be > 0, got {self.request_timeout}")
            _check(self.max_retries >= 0, "generate.max_retries", f"must be >= 0, got {self.max_retries}")
            _check(self.retry_backoff >= 0, "generate.retry_backoff", f"must be >= 0, got {self.retry_backoff}")
            _check(
                self.long_prompts == "error",
                "generate.long_prompts",
                "backend 'openai' cannot skip long prompts: the server checks lengths and refuses them",
            )
        if self.backend not in BACKENDS:
            raise WinnowError(f"generate.backend: unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        _check(1 <= self.n <= MAX_N, "generate.n", f"must be between 1 and {MAX_N}, got {self.n}")
        _check(
            self.temperature == 0 or MIN_TEMPERATURE <= self.temperature < math.inf,
            "generate.temperature",
            f"must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}, got {self.temperature}",
        )
        _check(0 < self.top_p <= 1, "generate.top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.top_k >= 0, "generate.top_k", f"must be >= 0, got {self.top_k}")
        _check(0 <= self.min_p < 1, "generate.min_p", f"must be in [0, 1), got {self.min_p}")
        low, high = REPETITION_PENALTY_RANGE
        _check(
            low <= self.repetition_penalty <= high,
            "generate.repetition_penalty",
            f"must be between {low:g} and {high:g} (1 = off), got {self.repetition_penalty}",
        )
        _check(all(self.stop), "generate.stop", "stop strings must not be empty")
        _check(self.max_new_tokens >= 1, "generate.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.batch_size >= 1, "generate.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.shard_size >= 1, "generate.shard_size", f"must be >= 1, got {self.shard_size}")
        _check_seed(self.seed, "generate.seed")
        _check_device(self.device, "generate.device")
        check_sampling(self.backend, self.sampling())
        _check(self.dtype in DTYPES, "generate.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check(self.tensor_parallel_size >= 1, "generate.tensor_parallel_size", "must be >= 1")
        _check(
            self.gpu_memory_utilization is None or 0 < self.gpu_memory_utilization <= 1,
            "generate.gpu_memory_utilization",
            f"must be in (0, 1], got {self.gpu_memory_utilization}",
        )
        _check(self.max_model_len is None or self.max_model_len >= 1, "generate.max_model_len", "must be >= 1")
        if self.backend != "vllm":  # refused by name, never accepted and ignored
            for name, value in self.engine().items():
                _check(value is None or value == 1, f"generate.{name}", f"only the vllm backend takes it (got {value})")
        if self.long_prompts not in LONG_PROMPT_POLICIES:
            raise WinnowError(
                f"generate.long_prompts: must be one of {LONG_PROMPT_POLICIES}, got {self.long_prompts!r}"
            )

    def client_settings(self) -> ClientSettings | None:
        """How the openai backend reaches its server (None for local backends)."""
        if self.backend != "openai" or not self.base_url:
            return None
        return ClientSettings(
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            concurrency=self.concurrency,
            timeout=self.request_timeout,
            max_retries=self.max_retries,
            backoff=self.retry_backoff,
        )

    def sampling(self) -> Sampling:
        """The sampling contract these settings ask every backend to honour."""
        return Sampling(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            stop=tuple(self.stop),
        )

    def engine(self) -> dict:
        """vLLM's engine options, passed through as given (None = vLLM's default)."""
        return {
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
        }


IFEVAL_MODES = ("strict", "loose")


@dataclass
class ScoreConfig:
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
    judge_concurrency: int = 16
    """Judge: requests in flight at once."""
    judge_request_timeout: float = 120.0
    """Judge: seconds per request before it is retried (the whole answer, not each read)."""
    judge_max_retries: int = 5
    """Judge: retries on 429, 5xx, timeouts, dropped connections and invalid replies
    (exponential backoff with jitter), then an error naming the prompt."""
    judge_retry_backoff: float = 0.5
    """Judge: first retry wait in seconds, doubled each retry (full jitter, at most 30 s)."""
    batch_tokens: int = 16384
    """Reward model: most tokens per batch, padding included (batches are length-sorted)."""
    max_batch_size: int = 64
    """Reward model: most rows per batch."""
    reward_prefix_sharing: str = "auto"
    """Reward model: read each prompt once and score its completions as continuations of
    that shared prefill (exact for causal decoders). ``auto``: the fastest exact path the
    model allows: packed (a prompt whose completions overflow a packed row shares its
    prefill), else the shared prefix, else every row in full with a note; ``on``: the
    shared prefix, an architecture it does not know is an error; ``off``: every row in
    full; ``packed``: whole prompts and their completions end to end in rows of their own
    length, attention per prompt and completion, no padding (``winnow.rewards.packed``; an
    error where the model does not allow it)."""
    fn_batch_size: int = 256
    """Reward function: rows per call."""
    reward_timeout: float | None = None
    """Seconds one reward call (a batch of ``fn_batch_size`` rows, or a reward model's or
    judge's shard) may take before score stops with an error naming the batch; None: no
    limit (``winnow serve``: 60 s, then the batch's requests get 504). Operational: not part
    of the stage config, so it may change on resume."""
    shard_size: int = 1024
    """Completions per shard file: the unit of resume."""
    device: str = "auto"
    """Reward model device: ``auto``, ``cpu`` or ``cuda[:i]``."""
    dtype: str = "auto"
    """Reward model precision: float32, bfloat16, float16, or ``auto`` (bfloat16 on a CUDA
    device that supports it, else float32)."""
    reward_weights: list[float] | None = None
    """Weights of several rewards, in this order: the reward functions as listed, then the
    reward model, then the judge, each between -1e6 and 1e6. ``rewards.npy`` is their
    weighted sum, unscored (NaN) where any of them is unscored; each is kept apart too.
    Unset: 1.0 each."""
    reference_column: str = "answer"
    """Verifiers (math, choice, exact): the prompts column holding the reference answer.
    (ifeval reads the columns ``instruction_id_list`` and ``kwargs``; code reads ``test`` and
    ``entry_point``, HumanEval's schema.)"""
    reasoning_tags: list[str] | None = None
    """``[OPEN, CLOSE]`` or a named format (``[think]``): every reward sees only the text
    after the closing tag; a completion without one scores 0 (counted as unfinished_reasoning)."""
    ifeval_mode: str = "strict"
    """Verifier ifeval: ``strict`` (the response as it is) or ``loose`` (IFEval's variants:
    first and last lines dropped, asterisks removed; an instruction followed by any counts)."""
    code_timeout_s: float = 10.0
    """Verifier code: wall-time limit of one program in the sandbox, in seconds."""
    code_memory_mb: int = 1024
    """Verifier code: memory limit of one program in the sandbox, in MB."""
    code_strict_results: bool = False
    """Verifier code: the tests see only results of exact builtin types (None, bool, int,
    float, complex, str, bytes, and containers of those), so that a result whose ``__eq__``
    always answers True fails (docs/howto/sandbox.md)."""
    pass_threshold: float | None = None
    """A completion passes when its reward is >= this: pass statistics in the report, the
    ``passing`` strategy, ``pass-fail`` pairs and adaptive sampling's rules read it. None:
    no pass statistics (select and report may still be given one)."""
    processes: int | None = None
    """CPU-bound verifiers: processes scoring batches in parallel (unset: one per CPU this
    process may use). It changes how fast, never what: it is not part of the stage config."""

    OPERATIONAL = (
        "processes",
        "reward_timeout",
        "judge_concurrency",
        "judge_request_timeout",
        "judge_max_retries",
        "judge_retry_backoff",
    )
    """Fields that say how fast and how hard to try, not what to score: a rerun may change them."""

    def stage_config(self) -> dict:
        """The fields that decide the rewards, stored and compared on resume."""
        # how fast and how long, never what: processes, time limits and retries may change on resume
        out = {k: v for k, v in asdict(self).items() if k not in self.OPERATIONAL}
        if isinstance(self.reward_fn, list) and len(self.reward_fn) == 1:
            out["reward_fn"] = self.reward_fn[0]  # --reward-fn X and reward_fn: X are one config
        return out

    def judge_settings(self) -> ClientSettings:
        """How the judge reaches its server: the ``openai`` backend's client, the judge's settings."""
        return ClientSettings(
            base_url=self.reward_judge or "",
            api_key_env=self.judge_api_key_env,
            concurrency=self.judge_concurrency,
            timeout=self.judge_request_timeout,
            max_retries=self.judge_max_retries,
            backoff=self.judge_retry_backoff,
        )

    def rewards(self) -> list[tuple[str, str]]:
        """The rewards summed, in weight order: ("fn", spec) ..., ("model", folder), ("judge", URL).

        A reward function given as a string keeps its old meaning: the default that a reward
        model or judge replaces. Given as a list (the repeatable flag), it joins them.
        """
        fns = [self.reward_fn] if isinstance(self.reward_fn, str) else list(self.reward_fn or [])
        if isinstance(self.reward_fn, str) and (self.reward_model or self.reward_judge):
            fns = []
        out = [("fn", spec) for spec in fns]
        if self.reward_model:
            out.append(("model", self.reward_model))
        if self.reward_judge:
            out.append(("judge", self.reward_judge))
        return out

    def weights(self) -> list[float]:
        """One weight per reward of ``rewards()``."""
        return list(self.reward_weights) if self.reward_weights is not None else [1.0] * len(self.rewards())

    def validate(self) -> None:
        if self.pass_threshold is not None:
            _check(
                math.isfinite(self.pass_threshold), "score.pass_threshold", f"must be finite, got {self.pass_threshold}"
            )
        _check(
            self.reward_model or self.reward_judge or self.reward_fn,
            "score.reward_fn",
            "set reward_fn, reward_model or reward_judge",
        )
        if isinstance(self.reward_fn, list):
            _check(all(self.reward_fn), "score.reward_fn", "reward function names must not be empty")
        if self.reward_weights is not None:
            names = ", ".join(spec for _, spec in self.rewards())
            _check(
                len(self.reward_weights) == len(self.rewards()),
                "score.reward_weights",
                f"{len(self.reward_weights)} weights for {len(self.rewards())} rewards ({names})",
            )
            _check(
                all(math.isfinite(w) and abs(w) <= MAX_REWARD_WEIGHT for w in self.reward_weights),
                "score.reward_weights",
                f"weights must be finite numbers between -{MAX_REWARD_WEIGHT:g} and {MAX_REWARD_WEIGHT:g}, "
                f"got {self.reward_weights}",
            )
        elif isinstance(self.reward_fn, list) and (self.reward_model or self.reward_judge):
            _check(False, "score.reward_weights", "reward functions with a reward model or judge need weights")
        if self.reasoning_tags is not None:
            from winnow.verifiers.reasoning import FORMATS

            tags = self.reasoning_tags
            named = len(tags) == 1 and tags[0] in FORMATS
            _check(
                named or (len(tags) == 2 and all(tags) and tags[0] != tags[1]),
                "score.reasoning_tags",
                f"give OPEN CLOSE (two different tags) or a named format ({', '.join(FORMATS)}), got {tags}",
            )
        _check(self.reference_column != "", "score.reference_column", "must not be empty")
        _check(
            self.ifeval_mode in IFEVAL_MODES, "score.ifeval_mode", f"must be strict or loose, got {self.ifeval_mode!r}"
        )
        _check(
            math.isfinite(self.code_timeout_s) and 0 < self.code_timeout_s <= 3600,
            "score.code_timeout_s",
            f"must be in (0, 3600], got {self.code_timeout_s}",
        )
        _check(
            16 <= self.code_memory_mb <= 1_048_576,
            "score.code_memory_mb",
            f"must be in [16, 1048576], got {self.code_memory_mb}",
        )
        _check(self.processes is None or self.processes >= 1, "score.processes", f"must be >= 1, got {self.processes}")
        if self.reward_judge:
            _check(self.judge_model, "score.judge_model", "reward_judge needs the judge model name (--judge-model)")
            _check(
                self.judge_concurrency >= 1, "score.judge_concurrency", f"must be >= 1, got {self.judge_concurrency}"
            )
            _check(
                0 < self.judge_request_timeout < math.inf,
                "score.judge_request_timeout",
                f"must be a finite number of seconds > 0, got {self.judge_request_timeout}",
            )
            _check(
                self.judge_max_retries >= 0, "score.judge_max_retries", f"must be >= 0, got {self.judge_max_retries}"
            )
            _check(
                self.judge_retry_backoff >= 0,
                "score.judge_retry_backoff",
                f"must be >= 0, got {self.judge_retry_backoff}",
            )
        _check(self.dtype in DTYPES, "score.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("batch_tokens", "max_batch_size", "fn_batch_size", "shard_size"):
            value = getattr(self, name)
            _check(value >= 1, f"score.{name}", f"must be >= 1, got {value}")
        _check_device(self.device, "score.device")
        _check(
            self.reward_timeout is None or 0 < self.reward_timeout < math.inf,
            "score.reward_timeout",
            f"must be a finite number of seconds > 0, got {self.reward_timeout}",
        )
        _check(
            self.reward_prefix_sharing in REWARD_PREFIX_SHARING,
            "score.reward_prefix_sharing",
            f"must be one of {', '.join(REWARD_PREFIX_SHARING)}, got {self.reward_prefix_sharing!r}",
        )


@dataclass
class SelectConfig:
    strategy: str = "top_per_prompt"
    """One of ``winnow.select.STRATEGIES``: top_per_prompt, top_k_overall, top_k_per_prompt,
    threshold, random_per_prompt, random_k_overall (the random ones are matched controls), rso."""
    k: int | None = None
    """Pairs to keep (top_k_overall, random_k_overall) or per prompt (top_k_per_prompt;
    rso, default 1)."""
    threshold: float | None = None
    """Keep every pair with reward >= threshold (strategy 'threshold')."""
    beta: float | None = None
    """RSO's temperature (> 0), in reward units: accept with probability exp((r - r_max) / beta).
    Small beta approaches the best sample, large beta a uniform one. Strategy and pairs 'rso'."""
    dedup: bool = False
    """Treat repeated completion texts within a prompt as one (the earliest sample is kept)."""
    drop_truncated: bool = False
    """Leave out completions that did not end on their own before selecting: cut by
    max_new_tokens (finish_reason 'length'), or ended by an openai backend's server
    ('content_filter', 'abort', 'other': any reason but 'stop')."""
    pairs: str | None = None
    """Also write preference pairs to select/pairs.jsonl: 'best-worst' (best and worst sample
    per prompt), 'all' (every pair with different rewards) or 'rso' (RSO's accepted samples,
    paired in acceptance order)."""
    pair_k: int | None = None
    """Pairs 'rso': candidates accepted per prompt (two per pair); default: every scored one."""
    min_margin: float = 0.0
    """Keep a pair only if chosen reward - rejected reward >= min_margin; ties never make a pair."""
    seed: int = 0
    """Seed of the random controls and of RSO."""
    pass_threshold: float | None = None
    """Reward at or above which a completion passes (strategy ``passing``, pairs
    ``pass-fail``, the pass-rate filter); default: the score stage's ``pass_threshold``."""
    min_pass_rate: float | None = None
    """Keep only prompts whose share of passing samples is >= this (DPO wants prompts that
    are not always solved nor never); needs a pass threshold."""
    max_pass_rate: float | None = None
    """Keep only prompts whose share of passing samples is <= this."""

    def stage_config(self) -> dict:
        """The config a select stage is stored under: every field."""
        return asdict(self)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise WinnowError(
                f"select.strategy: unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})"
            )
        needs = STRATEGIES[self.strategy].needs
        if "k" in needs:
            _check(self.k is not None, "select.k", f"strategy {self.strategy} needs k")
        if self.k is not None:
            _check(self.k >= 1, "select.k", f"must be >= 1, got {self.k}")
        if "threshold" in needs:
            _check(
                self.threshold is not None and math.isfinite(self.threshold),
                "select.threshold",
                f"strategy threshold needs a finite threshold, got {self.threshold}",
            )
        if self.pairs is not None and self.pairs not in PAIRINGS:
            raise WinnowError(f"select.pairs: unknown pairing {self.pairs!r} (choose from {', '.join(PAIRINGS)})")
        if "beta" in needs or (self.pairs and "beta" in PAIRING_NEEDS[self.pairs]):
            user = f"strategy {self.strategy}" if "beta" in needs else f"pairs {self.pairs}"
            _check(self.beta is not None, "select.beta", f"{user} needs beta")
        if self.beta is not None:
            _check(0 < self.beta < math.inf, "select.beta", f"must be finite and > 0, got {self.beta}")
        if self.pair_k is not None:
            _check(self.pair_k >= 2, "select.pair_k", f"must be >= 2, got {self.pair_k}")
        _check(
            math.isfinite(self.min_margin) and self.min_margin >= 0,
            "select.min_margin",
            f"must be >= 0, got {self.min_margin}",
        )
        _check_seed(self.seed, "select.seed")
        if self.pass_threshold is not None:
            _check(
                math.isfinite(self.pass_threshold),
                "select.pass_threshold",
                f"must be finite, got {self.pass_threshold}",
            )
        for name in ("min_pass_rate", "max_pass_rate"):
            value = getattr(self, name)
            _check(value is None or 0 <= value <= 1, f"select.{name}", f"must be in [0, 1], got {value}")
        if self.min_pass_rate is not None and self.max_pass_rate is not None:
            _check(
                self.min_pass_rate <= self.max_pass_rate,
                "select.min_pass_rate",
                f"must be <= max_pass_rate ({self.max_pass_rate}), got {self.min_pass_rate}",
            )


@dataclass
class TrainConfig:
    model: str | None = None
    """Starting checkpoint; defaults to the first generate model."""
    lora: bool = False
    """Train LoRA adapters (merged into the saved checkpoint) instead of every weight."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    learning_rate: float = 2e-5
    """Peak learning rate (linear decay, no warm-up)."""
    epochs: float = 2.0
    """Passes over the selected rows."""
    batch_size: int = 8
    """Rows per optimizer step."""
    max_length: int = 512
    """Prompt + completion tokens kept per row (longer rows are truncated)."""
    seed: int = 0
    """Seed of data order and initialisation of LoRA weights."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    dtype: str = "auto"
    """Precision of the weights trained: float32, bfloat16, float16, or ``auto`` (bfloat16
    on a CUDA device that supports it, with bf16 mixed precision; else float32)."""
    strip_reasoning: bool = False
    """Train on the answer alone: the text after the score stage's reasoning closing tag
    (``score.reasoning_tags``); rows whose reasoning never closed are left out. Off: the
    whole completion, reasoning included."""

    def stage_config(self) -> dict:
        """The stored config: every field."""
        return asdict(self)

    def validate(self) -> None:
        _check(
            0 < self.learning_rate < math.inf, "sft.learning_rate", f"must be finite and > 0, got {self.learning_rate}"
        )
        _check(self.dtype in DTYPES, "sft.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check(0 < self.epochs < math.inf, "sft.epochs", f"must be finite and > 0, got {self.epochs}")
        _check(self.lora_r >= 1, "sft.lora_r", f"must be >= 1, got {self.lora_r}")
        _check(self.lora_alpha >= 1, "sft.lora_alpha", f"must be >= 1, got {self.lora_alpha}")
        _check_seed(self.seed, "sft.seed")
        _check_device(self.device, "sft.device")
        _check(
            1 <= self.batch_size <= MAX_BATCH_SIZE,
            "sft.batch_size",
            f"must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}",
        )
        _check(self.max_length >= 8, "sft.max_length", f"must be >= 8, got {self.max_length}")


@dataclass
class RoundsConfig:
    count: int | None = None
    """Rounds of generate -> score -> select -> sft, each in ``RUN_DIR/round-<r>/``; round r
    samples from round r-1's checkpoint. None: a single round in RUN_DIR itself."""
    pool: str = "all"
    """Candidates each round selects among: ``all`` rounds so far (Llama 2's way) or the
    ``latest`` round's only."""
    sft_from: str = "start"
    """Checkpoint each round fine-tunes: the ``start`` (the default: the recipe stays,
    only the selected data improve) or the ``previous`` round's."""

    def validate(self) -> None:
        _check(self.count is None or self.count >= 1, "rounds.count", f"must be >= 1, got {self.count}")
        _check(self.pool in POOLS, "rounds.pool", f"must be one of {POOLS}, got {self.pool!r}")
        _check(self.sft_from in SFT_FROM, "rounds.sft_from", f"must be one of {SFT_FROM}, got {self.sft_from!r}")


STOP_RULES = ("pass", "pass-and-fail", "passing", "consensus")


@dataclass
class AdaptiveConfig:
    """Adaptive sampling (``winnow.adaptive``): generate.n is then the most samples per prompt."""

    step: int | None = None
    """Samples per open prompt and step; None: no adaptive sampling (all n at once)."""
    stop_when: str = "pass"
    """When a prompt closes: ``pass`` (one completion with reward >= score.pass_threshold),
    ``pass-and-fail`` (one of each: a DPO pair), ``passing:K`` (K distinct passing texts) or
    ``consensus:F`` (the most common extracted answer holds a share >= F of the samples)."""
    answer: str = "auto"
    """How consensus (and ``bon --aggregate``) reads a completion's answer: ``auto`` (the
    last \\boxed{...}, else 'answer is/:' X, else the last number), ``math`` (math-verify's
    reading and equality, the math verifier's own), or ``module:function`` /
    ``file.py:function`` mapping a text to a str or None."""

    def rule(self) -> tuple[str, float]:
        """The stop rule's name and parameter (K or F; 0 for the plain rules)."""
        name, _, value = self.stop_when.partition(":")
        return name, float(value) if value else 0.0

    def validate(self) -> None:
        if self.step is None:
            return
        _check(self.step >= 1, "adaptive.step", f"must be >= 1, got {self.step}")
        name, _, value = self.stop_when.partition(":")
        _check(
            name in STOP_RULES,
            "adaptive.stop_when",
            f"must be one of pass, pass-and-fail, passing:K, consensus:F, got {self.stop_when!r}",
        )
        if name == "passing":
            _check(
                value.isdigit() and int(value) >= 1,
                "adaptive.stop_when",
                f"passing needs an integer K >= 1 (passing:2), got {self.stop_when!r}",
            )
        elif name == "consensus":
            try:
                share = float(value)
            except ValueError:
                share = math.nan
            _check(
                0 < share <= 1,
                "adaptive.stop_when",
                f"consensus needs a share F in (0, 1] (consensus:0.6), got {self.stop_when!r}",
            )
        else:
            _check(not value, "adaptive.stop_when", f"{name} takes no parameter, got {self.stop_when!r}")


EXECUTORS = ("local", "ray")
"""Every executor name: the one list (``winnow.executors.run_shards`` dispatches on it)."""


@dataclass
class ExecutorConfig:
    """Where generate and score make their shards. It changes how fast, never what: it is
    not part of any stage's config (a stage may be resumed under another executor), and
    the manifest records it apart (``executor``: name, workers, retries)."""

    name: str = "local"
    """``local`` (this process, shards in order, the first error stops the stage) or
    ``ray`` (a pool of Ray actors; a shard that fails is retried on another actor)."""
    ray_address: str | None = None
    """Ray: unset starts a local Ray instance; ``auto`` joins the cluster this machine
    belongs to (``ray start``); or the head's ``host:port``."""
    workers: int = 2
    """Ray: actors in the pool; each loads its model (or reward) once."""
    cpus_per_worker: float = 1.0
    """Ray: CPUs reserved per actor (fractions allowed)."""
    gpus_per_worker: float = 0.0
    """Ray: GPUs reserved per actor (fractions share a GPU; several give one vLLM engine
    with tensor parallelism the GPUs of a node)."""
    retries: int = 2
    """Ray: further tries of a shard after a failure (a lost worker or an error), each on
    another actor where there is one; a shard failing them all is reported by name."""

    def validate(self) -> None:
        if self.name not in EXECUTORS:
            raise WinnowError(f"executor.name: unknown executor {self.name!r} (choose from {', '.join(EXECUTORS)})")
        _check(self.workers >= 1, "executor.workers", f"must be >= 1, got {self.workers}")
        _check(self.cpus_per_worker >= 0, "executor.cpus_per_worker", f"must be >= 0, got {self.cpus_per_worker}")
        _check(self.gpus_per_worker >= 0, "executor.gpus_per_worker", f"must be >= 0, got {self.gpus_per_worker}")
        _check(self.retries >= 0, "executor.retries", f"must be >= 0, got {self.retries}")


@dataclass
class DpoConfig:
    model: str | None = None
    """Starting checkpoint (also the frozen reference); defaults to the first generate model."""
    lora: bool = False
    """Train LoRA adapters (merged into the saved checkpoint) instead of every weight."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    beta: float = 0.1
    """DPO's beta (> 0): how far the policy may move from the reference; larger stays closer."""
    learning_rate: float = 1e-6
    """Peak learning rate (linear decay, no warm-up); TRL's default. LoRA wants ~10-100x more."""
    epochs: float = 1.0
    """Passes over the pairs."""
    batch_size: int = 8
    """Pairs per optimizer step."""
    max_length: int = 512
    """Prompt + completion tokens kept per side of a pair (longer ones are truncated)."""
    seed: int = 0
    """Seed of data order and initialisation of LoRA weights."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    dtype: str = "auto"
    """Precision of the weights trained, as for sft: float32, bfloat16, float16, or ``auto``."""

    def validate(self) -> None:
        _check(0 < self.beta < math.inf, "dpo.beta", f"must be finite and > 0, got {self.beta}")
        _check(self.dtype in DTYPES, "dpo.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check(
            0 < self.learning_rate < math.inf, "dpo.learning_rate", f"must be finite and > 0, got {self.learning_rate}"
        )
        _check(0 < self.epochs < math.inf, "dpo.epochs", f"must be finite and > 0, got {self.epochs}")
        _check(
            1 <= self.batch_size <= MAX_BATCH_SIZE,
            "dpo.batch_size",
            f"must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}",
        )
        _check(self.max_length >= 8, "dpo.max_length", f"must be >= 8, got {self.max_length}")
        _check_device(self.device, "dpo.device")


@dataclass
class ServeConfig:
    """``winnow serve``: the model, the HTTP side, and every limit (defaults in this one place)."""

    model: str = "smollm2"
    """The model to serve: a local HF folder or ``smollm2`` (hf), or the upstream's served name (openai)."""
    backend: str = "hf"
    """Generation engine behind the server (any of generate's backends)."""
    served_model_name: str | None = None
    """The name clients ask for in ``model`` and /v1/models lists (default: ``model``)."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 to accept other machines)."""
    port: int = 8000
    """Port to listen on."""
    api_key_env: str | None = None
    """Name of the environment variable holding the bearer key clients must send; unset = open."""
    device: str = "auto"
    """hf backend: ``auto``, ``cpu`` or ``cuda[:i]``."""
    batch_size: int = 16
    """hf backend: prompts decoded together inside one backend call."""
    base_url: str | None = None
    """openai backend: the upstream server's API root."""
    upstream_api_key_env: str | None = None
    """openai backend: environment variable holding the upstream's key."""
    best_of: int = 4
    """Best-of-N mode (a reward is set): candidates sampled per answer when a request gives no best_of."""
    max_best_of: int = 16
    """Most candidates a request may ask for (best_of)."""
    max_n: int = 8
    """Most answers a request may ask for (n)."""
    default_max_tokens: int = 64
    """max_tokens of a request that gives none."""
    max_tokens: int = 512
    """Most tokens a request may ask for per answer (max_tokens)."""
    max_prompt_tokens: int = 2048
    """Most prompt tokens (after the chat template) a request may send."""
    max_body_bytes: int = 1_000_000
    """Largest request body accepted."""
    batch_window_ms: float = 10.0
    """How long the first request of a batch waits for others to join it."""
    max_batch_prompts: int = 32
    """Most requests served by one backend call (1 = one request at a time)."""
    max_queue: int = 256
    """Requests waiting for the backend; beyond this a request gets 429 with Retry-After."""
    retry_after_s: int = 1
    """Seconds a 429 asks the client to wait (the Retry-After header)."""
    log_prompts: bool = False
    """Log each request's prompt (off: prompts and completions are never logged)."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM/SIGINT: seconds requests in flight get to finish before the server exits regardless."""
    keepalive_s: float = 5.0
    """Streaming: seconds between SSE comment keep-alives while an answer is not ready to stream."""
    metrics_public: bool = False
    """Serve /metrics without the API key (default: /metrics asks for the key like the API)."""

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise WinnowError(f"serve.backend: unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.backend == "openai":
            _check(self.base_url, "serve.base_url", "backend 'openai' needs the upstream server's URL (--base-url)")
        _check(1 <= self.port <= 65535 or self.port == 0, "serve.port", f"must be a port number, got {self.port}")
        _check_device(self.device, "serve.device")
        for name in (
            "batch_size",
            "best_of",
            "max_best_of",
            "max_n",
            "default_max_tokens",
            "max_tokens",
            "max_prompt_tokens",
            "max_body_bytes",
            "max_batch_prompts",
            "max_queue",
            "retry_after_s",
        ):
            value = getattr(self, name)
            _check(value >= 1, f"serve.{name}", f"must be >= 1, got {value}")
        _check(self.batch_window_ms >= 0, "serve.batch_window_ms", f"must be >= 0, got {self.batch_window_ms}")
        for name, (low, high) in SERVE_BOUNDS.items():
            value = getattr(self, name)
            _check(
                isinstance(value, int | float) and math.isfinite(value) and low <= value <= high,
                f"serve.{name}",
                f"must be a number between {low:g} and {high:g}, got {value}",
            )
        _check(self.best_of <= self.max_best_of, "serve.best_of", f"must be <= max_best_of ({self.max_best_of})")
        _check(
            self.default_max_tokens <= self.max_tokens,
            "serve.default_max_tokens",
            f"must be <= max_tokens ({self.max_tokens})",
        )

    def client_settings(self) -> ClientSettings | None:
        """How an openai backend reaches the upstream server (None for local backends)."""
        if self.backend != "openai" or not self.base_url:
            return None
        return ClientSettings(base_url=self.base_url, api_key_env=self.upstream_api_key_env)


SERVE_BOUNDS: dict[str, tuple[float, float]] = {
    "batch_size": (1, 4096),
    "best_of": (1, 1024),
    "max_best_of": (1, 1024),
    "max_n": (1, 1024),
    "default_max_tokens": (1, 1 << 20),
    "max_tokens": (1, 1 << 20),
    "max_prompt_tokens": (1, 1 << 22),
    "max_body_bytes": (1, 1 << 30),
    "batch_window_ms": (0, 10_000),
    "max_batch_prompts": (1, 4096),
    "max_queue": (1, 1 << 20),
    "retry_after_s": (1, 3600),
    "shutdown_grace_s": (0, 3600),
    "keepalive_s": (0.01, 300),
}
"""Every numeric ``serve`` setting's accepted range (inclusive): a value outside it (or not
finite, like ``--batch-window-ms inf``, which would hold a lone request for ever) is refused."""


@dataclass(frozen=True)
class ImportConfig:
    """``winnow import``: how a completions file made elsewhere is read (recorded in the
    generate stage's config)."""

    id_column: str = "prompt_id"
    """Column holding the prompt id (matched against the prompts file's ids)."""
    text_column: str = "text"
    """Column holding the completion text."""
    model: str = "imported"
    """Model name for rows without a ``model`` column."""
    max_new_tokens: int | None = None
    """The token limit the completions were made under, when known (the report shows it)."""
    shard_rows: int = 4096
    """Completions per generate shard."""

    def validate(self) -> None:
        _check(self.shard_rows >= 1, "import.shard_rows", f"must be >= 1, got {self.shard_rows}")
        ok = self.max_new_tokens is None or self.max_new_tokens >= 1
        _check(ok, "import.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(
            bool(self.id_column and self.text_column and self.model),
            "import",
            "column and model names must be non-empty",
        )


SECTIONS = {
    "generate": GenerateConfig,
    "score": ScoreConfig,
    "select": SelectConfig,
    "sft": TrainConfig,
    "rounds": RoundsConfig,
    "adaptive": AdaptiveConfig,
    "executor": ExecutorConfig,
    "dpo": DpoConfig,
    "serve": ServeConfig,
    "import": ImportConfig,
}


def _check(ok: Any, name: str, message: str) -> None:
    if not ok:
        raise WinnowError(f"{name}: {message}")


def _check_seed(seed: int, name: str) -> None:
    _check(0 <= seed <= MAX_SEED, name, f"must be between 0 and 2**63 - 1, got {seed}")


def _check_device(device: str, name: str) -> None:
    _check(DEVICE.fullmatch(device), name, f"must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {device!r}")


TOP_LEVEL = ("prompts", "run_dir", "prompt_column", "id_column")
"""Top-level YAML keys besides the stage sections (all strings)."""


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config: top-level keys ``prompts``, ``run_dir`` and one section per stage."""
    path = Path(path)
    if not path.is_file():
        raise WinnowError(f"config file does not exist: {path}")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise WinnowError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise WinnowError(f"{path}: expected a mapping at the top level")
    known = set(SECTIONS) | set(TOP_LEVEL)
    for key, value in data.items():
        if key not in known:
            raise WinnowError(f"{path}: field '{key}': unknown key (known: {', '.join(sorted(map(str, known)))})")
        if key in SECTIONS and not isinstance(value, dict | None):
            raise WinnowError(f"{path}: field '{key}': expected a mapping of options, got {type(value).__name__}")
        if key in TOP_LEVEL and not isinstance(value, str):
            raise WinnowError(f"{path}: field '{key}': expected a string, got {value!r} ({type(value).__name__})")
    if "prompts" in data and not Path(data["prompts"]).is_absolute():
        data["prompts"] = str(path.parent / data["prompts"])  # relative to the file, not the shell
    return data


def build(cls, *layers: dict, source: str = "config"):
    """Instantiate ``cls`` from layered dicts; later layers win and None means 'not given'."""
    names = {f.name for f in fields(cls)}
    values: dict = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key not in names:
                raise WinnowError(f"{source}: field '{key}': unknown option for {cls.__name__}")
            if value is not None:
                values[key] = value
    types = {f.name: f.type for f in fields(cls)}
    for key, value in values.items():
        values[key] = _typed(value, str(types[key]), f"{source}: field '{key}'")
    config = cls(**values)
    config.validate()
    return config


def _typed(value: Any, annotation: str, name: str) -> Any:
    """Check a config value against its field's annotation (ints are accepted for floats)."""
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    parts = [p.strip() for p in str(annotation).split("|")]
    if "list[float]" in parts:
        ok = isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if not ok:
            raise WinnowError(f"{name}: expected a list of numbers, got {value!r}")
        return [float(v) for v in value]
    if "list[str]" in parts and (isinstance(value, list) or "str" not in parts):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if not ok:
            raise WinnowError(f"{name}: expected a list of strings, got {value!r}")
        return value
    for part in parts:
        allowed = kinds.get(part, ())
        if isinstance(value, allowed) and not (isinstance(value, bool) and part != "bool"):
            if part != "float":
                return value
            try:
                return float(value)
            except OverflowError:
                raise WinnowError(f"{name}: {value} is too large for a float") from None
    raise WinnowError(f"{name}: expected {annotation}, got {value!r} ({type(value).__name__})")


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("generate", "backend"): tuple(BACKENDS),
    ("serve", "backend"): tuple(BACKENDS),
    ("generate", "long_prompts"): LONG_PROMPT_POLICIES,
    ("score", "reward_prefix_sharing"): REWARD_PREFIX_SHARING,
    ("score", "ifeval_mode"): IFEVAL_MODES,
    ("select", "strategy"): tuple(STRATEGIES),
    ("select", "pairs"): tuple(PAIRINGS),
    ("rounds", "pool"): POOLS,
    ("rounds", "sft_from"): SFT_FROM,
    ("executor", "name"): EXECUTORS,
    **{(section, "device"): DEVICES for section in ("generate", "score", "sft", "dpo", "serve")},
    **{(section, "dtype"): DTYPES for section in ("generate", "score", "sft", "dpo")},
}
"""(section, field) -> the values it accepts, taken from the tables ``validate`` checks
against: help text and docs list these, so they cannot drift from what is accepted."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a config dataclass, as one line
    (reStructuredText quotes removed): the help of its CLI flag and its docs entry."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.replace("``", "").split())
    return docs
