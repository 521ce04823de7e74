"""Configuration of each stage: one dataclass per stage, every field documented under it.

Values come from the dataclass defaults, then a YAML file (``--config``), then CLI flags.
A stage's config, with the hash of what it reads, is stored in its run folder; resuming
under a different one is refused (see ``winnow.rundir``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from winnow.errors import WinnowError
from winnow.generate import BACKENDS, Sampling, check_sampling
from winnow.remote import ClientSettings

LONG_PROMPT_POLICIES = ("error", "skip")
STRATEGIES = (
    "top_per_prompt",
    "top_k_overall",
    "top_k_per_prompt",
    "threshold",
    "random_per_prompt",
    "random_k_overall",
)


@dataclass
class GenerateConfig:
    models: list[str] = field(default_factory=lambda: ["smollm2"])
    """Policy models: local HF folders, or the built-in ``smollm2``. Each contributes ``n``
    completions per prompt (model k owns sample indices k*n .. k*n+n-1)."""
    backend: str = "hf"
    """Generation engine: ``hf`` (transformers, CPU or CUDA) or ``openai`` (any
    OpenAI-compatible server at ``base_url``; ``models`` are its served model names)."""
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
        _check(self.n >= 1, "generate.n", f"must be >= 1, got {self.n}")
        _check(self.temperature >= 0, "generate.temperature", f"must be >= 0, got {self.temperature}")
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
        check_sampling(self.backend, self.sampling())
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
    fn_batch_size: int = 256
    """Reward function: rows per call."""
    shard_size: int = 1024
    """Completions per shard file: the unit of resume."""
    device: str = "auto"
    """Reward model device: ``auto``, ``cpu`` or ``cuda[:i]``."""

    def validate(self) -> None:
        _check(
            self.reward_model or self.reward_judge or self.reward_fn,
            "score.reward_fn",
            "set reward_fn, reward_model or reward_judge",
        )
        if self.reward_judge:
            _check(self.judge_model, "score.judge_model", "reward_judge needs the judge's model name (--judge-model)")
        for name in ("batch_tokens", "max_batch_size", "fn_batch_size", "shard_size"):
            value = getattr(self, name)
            _check(value >= 1, f"score.{name}", f"must be >= 1, got {value}")


@dataclass
class SelectConfig:
    strategy: str = "top_per_prompt"
    """One of top_per_prompt, top_k_overall, top_k_per_prompt, threshold, random_per_prompt,
    random_k_overall (the random ones are matched controls)."""
    k: int | None = None
    """Pairs to keep (top_k_overall, random_k_overall) or per prompt (top_k_per_prompt)."""
    threshold: float | None = None
    """Keep every pair with reward >= threshold (strategy 'threshold')."""
    dedup: bool = False
    """Treat repeated completion texts within a prompt as one (the earliest sample is kept)."""
    seed: int = 0
    """Seed of the random controls."""

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise WinnowError(
                f"select.strategy: unknown strategy {self.strategy!r} (choose from {', '.join(STRATEGIES)})"
            )
        if self.strategy in ("top_k_overall", "top_k_per_prompt", "random_k_overall"):
            _check(self.k is not None, "select.k", f"strategy {self.strategy} needs k")
            _check(self.k >= 1, "select.k", f"must be >= 1, got {self.k}")
        if self.strategy == "threshold":
            _check(
                self.threshold is not None and math.isfinite(self.threshold),
                "select.threshold",
                "strategy threshold needs a finite threshold",
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

    def validate(self) -> None:
        _check(self.learning_rate > 0, "sft.learning_rate", f"must be > 0, got {self.learning_rate}")
        _check(self.epochs > 0, "sft.epochs", f"must be > 0, got {self.epochs}")
        _check(self.batch_size >= 1, "sft.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.max_length >= 8, "sft.max_length", f"must be >= 8, got {self.max_length}")


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
    "serve": ServeConfig,
}


def _check(ok: Any, name: str, message: str) -> None:
    if not ok:
        raise WinnowError(f"{name}: {message}")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config: top-level keys ``prompts``, ``run_dir`` and one section per stage."""
    path = Path(path)
    if not path.is_file():
        raise WinnowError(f"config file does not exist: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise WinnowError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise WinnowError(f"{path}: expected a mapping at the top level")
    known = set(SECTIONS) | {"prompts", "run_dir", "prompt_column", "id_column"}
    for key in data:
        if key not in known:
            raise WinnowError(f"{path}: field '{key}': unknown key (known: {', '.join(sorted(known))})")
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
        values[key] = _typed(value, types[key], f"{source}: field '{key}'")
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
            return float(value) if part == "float" else value
    raise WinnowError(f"{name}: expected {annotation}, got {value!r} ({type(value).__name__})")


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses included)."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
