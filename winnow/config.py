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
from winnow.executors import EXECUTORS
from winnow.generate import BACKENDS, Sampling, check_sampling
from winnow.models import DTYPES
from winnow.records import config_hash, read_text  # noqa: F401  (config_hash: its old home)
from winnow.remote import ClientSettings
from winnow.select import PAIRING_NEEDS, PAIRINGS, STRATEGIES

REWARD_PREFIX_SHARING = ("auto", "on", "off")
LONG_PROMPT_POLICIES = ("error", "skip")
MIN_TEMPERATURE = 1e-5
"""Temperatures in (0, 1e-5) are refused: logits divided by them overflow (1e-300 sampled an
out-of-vocabulary token). 0 is greedy decoding, which is what such a temperature means."""
MAX_N = 10_000
"""Most completions per prompt and model, checked before anything is allocated."""
MAX_SEED = 2**63 - 1
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = ("auto", "cpu", "mps", "cuda", "cuda:N")
"""What ``DEVICE`` accepts, as help and error messages show it."""
POOLS = ("all", "latest")
SFT_FROM = ("start", "previous")


@dataclass
class GenerateConfig:
    models: list[str] = field(default_factory=lambda: ["smollm2"])
    """Policy models: local HF folders, or the built-in ``smollm2``. Each contributes ``n``
    completions per prompt (model k owns sample indices k*n .. k*n+n-1)."""
    backend: str = "hf"
    """Generation engine: ``hf`` (transformers, CPU or CUDA), ``openai`` (any
    OpenAI-compatible server at ``base_url``; ``models`` are its served model names) or
    ``vllm`` (vLLM offline engine; ``pip install winnow[vllm]``, or ``scripts/setup_vllm.sh`` on CPU)."""
    n: int = 8
    """Completions per prompt and model (N in the chapter)."""
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
        _check(
            self.repetition_penalty > 0, "generate.repetition_penalty", f"must be > 0, got {self.repetition_penalty}"
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


@dataclass
class ScoreConfig:
    reward_model: str | None = None
    """A sequence-classification reward model folder (one output label)."""
    reward_fn: str | None = "vader"
    """A reward function: a built-in name (``vader``, ``length``), ``module:function`` or
    ``path/to/file.py:function``. Ignored when reward_model or reward_judge is set."""
    reward_judge: str | None = None
    """A judge model behind an OpenAI-compatible server: its API root (``http://host/v1``).
    Each completion is scored by the number in the judge's answer; none = unscored."""
    judge_model: str | None = None
    """Judge: the served model name (required with reward_judge)."""
    judge_rubric: str | None = None
    """Judge: a rubric template file with {prompt} and {completion} (default: the shipped one)."""
    judge_api_key_env: str | None = None
    """Judge: name of the environment variable holding its API key (never stored)."""
    batch_tokens: int = 16384
    """Reward model: most tokens per batch, padding included (batches are length-sorted)."""
    max_batch_size: int = 64
    """Reward model: most rows per batch."""
    reward_prefix_sharing: str = "auto"
    """Reward model: read each prompt once and score its completions as continuations of
    that shared prefill (exact for causal decoders). ``auto``: where the model allows it,
    else every row in full with a note; ``on``: an architecture it does not know is an
    error; ``off``: every row in full."""
    fn_batch_size: int = 256
    """Reward function: rows per call."""
    shard_size: int = 1024
    """Completions per shard file: the unit of resume."""
    device: str = "auto"
    """Reward model device: ``auto``, ``cpu`` or ``cuda[:i]``."""
    dtype: str = "auto"
    """Reward model precision: float32, bfloat16, float16, or ``auto`` (bfloat16 on a CUDA
    device that supports it, else float32)."""

    def validate(self) -> None:
        _check(
            self.reward_model or self.reward_judge or self.reward_fn,
            "score.reward_fn",
            "set reward_fn, reward_model or reward_judge",
        )
        if self.reward_judge:
            _check(self.judge_model, "score.judge_model", "reward_judge needs the judge model name (--judge-model)")
        _check(self.dtype in DTYPES, "score.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in ("batch_tokens", "max_batch_size", "fn_batch_size", "shard_size"):
            value = getattr(self, name)
            _check(value >= 1, f"score.{name}", f"must be >= 1, got {value}")
        _check_device(self.device, "score.device")
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
    """Leave out completions cut by max_new_tokens (finish_reason 'length') before selecting."""
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
            _check(self.beta > 0, "select.beta", f"must be > 0, got {self.beta}")
        if self.pair_k is not None:
            _check(self.pair_k >= 2, "select.pair_k", f"must be >= 2, got {self.pair_k}")
        _check(
            math.isfinite(self.min_margin) and self.min_margin >= 0,
            "select.min_margin",
            f"must be >= 0, got {self.min_margin}",
        )
        _check_seed(self.seed, "select.seed")


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
        _check(self.batch_size >= 1, "sft.batch_size", f"must be >= 1, got {self.batch_size}")
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
    """Checkpoint each round fine-tunes: the ``start`` (the chapter's way) or the ``previous``
    round's."""

    def validate(self) -> None:
        _check(self.count is None or self.count >= 1, "rounds.count", f"must be >= 1, got {self.count}")
        _check(self.pool in POOLS, "rounds.pool", f"must be one of {POOLS}, got {self.pool!r}")
        _check(self.sft_from in SFT_FROM, "rounds.sft_from", f"must be one of {SFT_FROM}, got {self.sft_from!r}")


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
        _check(self.beta > 0, "dpo.beta", f"must be > 0, got {self.beta}")
        _check(self.dtype in DTYPES, "dpo.dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check(self.learning_rate > 0, "dpo.learning_rate", f"must be > 0, got {self.learning_rate}")
        _check(self.epochs > 0, "dpo.epochs", f"must be > 0, got {self.epochs}")
        _check(self.batch_size >= 1, "dpo.batch_size", f"must be >= 1, got {self.batch_size}")
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


SECTIONS = {
    "generate": GenerateConfig,
    "score": ScoreConfig,
    "select": SelectConfig,
    "sft": TrainConfig,
    "rounds": RoundsConfig,
    "executor": ExecutorConfig,
    "dpo": DpoConfig,
    "serve": ServeConfig,
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
    if "list[str]" in parts:
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
