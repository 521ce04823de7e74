"""``generate`` and ``import``: what to sample and how, and how outside completions are read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from winnow.config.fields import (
    Backend,
    Dtype,
    Endpoint,
    LongPrompts,
    OnError,
    bounded,
    check_fields,
    check_price,
    device_field,
    seed_field,
)
from winnow.errors import WinnowError

MIN_TEMPERATURE = 1e-5
"""Temperatures in (0, 1e-5) are refused: logits divided by them overflow (1e-300 sampled an
out-of-vocabulary token). 0 is greedy decoding, which is what such a temperature means.
The hf decode loop divides float32 logits (cast first, whatever the model's dtype): at 1e-5,
as at 1e-3, logits of size ~100 still give finite probabilities and the greedy token, so the
one floor is 1e-5 for ``winnow generate`` and ``winnow serve`` alike (vLLM raises anything
below 1e-2 to 1e-2 itself)."""
MAX_TEMPERATURE = 100
"""Above this sampling is uniform in all but name; past float32's range (3e38) the divisor
itself overflows to inf."""
REPETITION_PENALTY_RANGE = (0.01, 100)
"""Logits are divided (or multiplied) by the penalty: outside this range they overflow to inf
(1e-300) or every repeated token is ruled out (inf); useful values lie near 1."""
MAX_N = 10_000
"""Most completions per prompt and model, checked before anything is allocated."""
MAX_TOP_K = 1 << 31
"""A larger top_k keeps every token anyway, and overflows the int32 vLLM keeps it in."""
MAX_TOP_LOGPROBS = 20
"""Most top log-probabilities per token: the OpenAI API's limit, and vLLM's server default."""
CONFIDENCE_WINDOW = 32
"""Tokens in a confidence group by default (DeepConf's 2048 is sized for reasoning traces of
tens of thousands of tokens; 32 fits completions of a few dozen to a few hundred)."""
CONFIDENCE_FIELDS = {"top_logprobs": 0, "confidence_window": CONFIDENCE_WINDOW, "keep_logprobs": False}
"""The confidence fields and their defaults: left out of the stage's config while confidence is
off, so a run dir made before they existed keeps its config hash."""


@dataclass
class GenerateConfig:
    section: ClassVar[str] = "generate"

    models: list[str] = field(default_factory=lambda: ["smollm2"])
    """Policy models: local HF folders, Hub ids (``org/name``) already in the Hugging Face
    cache (never downloaded by a run), or the built-in ``smollm2``. Each contributes ``n``
    completions per prompt (model k owns sample indices k*n .. k*n+n-1)."""
    backend: Backend = field(default="hf", metadata={"noun": "backend"})
    """Generation engine: ``hf`` (transformers, CPU or CUDA), ``openai`` (any
    OpenAI-compatible server at ``base_url``; ``models`` are its served model names) or
    ``vllm`` (vLLM offline engine; ``pip install -e '.[vllm]'``, or ``scripts/setup_vllm.sh`` on CPU)."""
    n: int = bounded(8, ge=1, le=MAX_N)
    """Completions per prompt and model: the N of the M x N reward matrix."""
    temperature: float = bounded(1.0, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, zero="greedy")
    """Sampling temperature; 0 means greedy decoding."""
    top_p: float = bounded(1.0, gt=0, le=1)
    """Nucleus sampling mass, in (0, 1]; 1 keeps every token."""
    top_k: int = bounded(0, ge=0, le=MAX_TOP_K)
    """Keep only the k most likely tokens; 0 turns it off."""
    min_p: float = bounded(0.0, ge=0, lt=1)
    """Drop tokens below min_p times the top token's probability, in [0, 1); 0 turns it off."""
    repetition_penalty: float = bounded(
        1.0, ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1], note="1 = off"
    )
    """Penalty (> 0) on tokens already present, as in transformers and vLLM; 1 turns it off."""
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion (left out of its text; finish_reason 'stop')."""
    max_new_tokens: int = bounded(64, ge=1)
    """Most tokens sampled per completion; a completion cut here has finish_reason 'length'."""
    seed: int = seed_field()
    """Seed of the sampler; each shard is seeded from it, so a resumed run samples the same."""
    batch_size: int = bounded(16, ge=1)
    """Prompts decoded together (batch_size * n sequences; 16 measured fastest on CPU)."""
    shard_size: int = bounded(32, ge=1)
    """Prompts per shard file: the unit of resume (batches never span two shards)."""
    long_prompts: LongPrompts = "error"
    """A prompt that leaves no room for max_new_tokens in the context: 'error' or 'skip' (counted,
    and recorded in ``generate/errors.jsonl``); ``on_error: skip`` skips them too."""
    on_error: OnError = "fail"
    """A prompt that fails (too long for the model's context; a request the server still refuses
    after ``max_retries``): 'fail' stops with one line naming it; 'skip' records it in
    ``generate/errors.jsonl`` (prompt_id, model, reason), leaves it without completions and goes
    on. Operational: a rerun may change it, and a stage holding errors finishes only under 'skip'."""
    device: str = device_field()
    """Where the policy runs (``auto``: CUDA if present, else CPU)."""
    base_url: str | None = None
    """openai backend: the server's API root, e.g. ``http://127.0.0.1:8000/v1``."""
    api_key_env: str | None = None
    """openai backend: name of the environment variable holding the API key (never stored)."""
    endpoint: Endpoint = "auto"
    """openai backend: ``auto`` (chat prompts to /chat/completions, text prompts to
    /completions), ``chat`` (text prompts as one user turn) or ``completions``."""
    concurrency: int = bounded(16, ge=1)
    """openai backend: requests in flight at once."""
    request_timeout: float = bounded(120.0, gt=0)
    """openai backend: seconds per request before it is retried."""
    max_retries: int = bounded(5, ge=0)
    """openai backend: retries on 429, 5xx, timeouts and dropped connections (exponential
    backoff with jitter), then an error naming the prompt."""
    retry_backoff: float = bounded(0.5, ge=0)
    """openai backend: first retry wait in seconds, doubled each retry (full jitter, at most 30 s)."""
    max_requests_per_minute: float | None = bounded(None, gt=0, finite=True)
    """openai backend: requests started per minute at most, spaced evenly (one every 60/R
    seconds, retries included) over all the requests in flight (under ``--executor ray``,
    over all workers: each holds its share); unset = no limit. It only delays requests:
    what is sampled is the same."""
    max_tokens_per_minute: float | None = bounded(None, gt=0, finite=True)
    """openai backend: prompt plus completion tokens per minute at most. A request is paid
    for by an estimate before it is sent (the prompt's characters / 4, plus max_new_tokens
    for each choice asked for), corrected by the reply's usage once it comes; unset = no
    limit. It only delays requests."""
    price_per_mtok: list[float] | None = None
    """openai backend: ``IN,OUT``, the price of a million prompt tokens and of a million
    completion tokens; the manifest and the report then show the cost of the requests'
    usage. Unset: token counts only."""

    top_logprobs: int = bounded(0, ge=2, le=MAX_TOP_LOGPROBS, zero="off")
    """Record each completion's confidence from the log-probabilities of the k most likely
    tokens at each position (DeepConf's token confidence: minus their mean; 20 in the paper):
    the row's ``mean_confidence`` and ``lowest_group_confidence``, which ``bon --aggregate
    confidence``, ``--keep-confident`` and ``--stop-when confident-consensus:F`` read. 0 = off;
    never changes what is sampled."""
    confidence_window: int = bounded(CONFIDENCE_WINDOW, ge=1)
    """Tokens in a group for the lowest group confidence (a sliding window, stride 1; a shorter
    completion is one group). DeepConf uses 2048 for long reasoning traces; the default 32 suits
    short completions. Needs top_logprobs."""
    keep_logprobs: bool = False
    """Also keep every token's log-probability and confidence in the rows (``token_logprobs``,
    ``token_confidence``); off: only the two summaries. Needs top_logprobs."""

    OPERATIONAL = (
        "concurrency",
        "request_timeout",
        "max_retries",
        "retry_backoff",
        "on_error",
        "max_requests_per_minute",
        "max_tokens_per_minute",
        "price_per_mtok",
    )
    """Fields that say how hard to try, not what to sample: a rerun may change them."""

    def stage_config(self) -> dict:
        """The fields that decide the rows, stored and compared on resume."""
        off = self.top_logprobs == 0  # then every confidence field is at its default (validate)
        return {
            k: v for k, v in asdict(self).items() if k not in self.OPERATIONAL and not (off and k in CONFIDENCE_FIELDS)
        }

    dtype: Dtype = "auto"
    """Precision of the policy: float32, bfloat16, float16, or ``auto`` (bfloat16 on a CUDA
    device that supports it, else float32)."""
    tensor_parallel_size: int = bounded(1, ge=1)
    """vLLM: GPUs each model is split across."""
    gpu_memory_utilization: float | None = bounded(None, gt=0, le=1)
    """vLLM: share of GPU memory (of system memory on CPU builds) the engine may take;
    unset = vLLM's default on a GPU, and on CPU builds 0.8 of the memory free at start-up
    (refused at once, exit 2, if that cannot hold the model)."""
    max_model_len: int | None = bounded(None, ge=1)
    """vLLM: context length to allocate for; unset = the model's own. Prompts longer than
    it minus max_new_tokens follow ``long_prompts``."""

    def validate(self) -> None:
        """Every field in its range (``check_fields``), then the rules between fields."""
        check_fields(self)
        if not self.models:
            raise WinnowError("generate.models: at least one model")
        if self.backend == "openai" and not self.base_url:
            raise WinnowError("generate.base_url: backend 'openai' needs the server's URL (--base-url)")
        if self.backend == "openai" and self.long_prompts != "error":
            raise WinnowError(
                "generate.long_prompts: backend 'openai' cannot skip long prompts: the server checks lengths and refuses them"
            )
        check_price("generate.price_per_mtok", self.price_per_mtok)
        if self.backend != "openai":  # refused by name, never accepted and ignored
            for name in ("max_requests_per_minute", "max_tokens_per_minute", "price_per_mtok"):
                if getattr(self, name) is not None:
                    raise WinnowError(f"generate.{name}: only the openai backend takes it (--backend openai)")
        if self.top_logprobs == 0:  # refused by name, never accepted and ignored
            for name, default in CONFIDENCE_FIELDS.items():
                if getattr(self, name) != default:
                    raise WinnowError(f"generate.{name}: needs top_logprobs (--top-logprobs K, e.g. 20)")
        if not all(self.stop):
            raise WinnowError("generate.stop: stop strings must not be empty")
        if self.backend != "vllm":  # refused by name, never accepted and ignored
            for name, value in self.engine().items():
                if value is not None and value != 1:
                    raise WinnowError(f"generate.{name}: only the vllm backend takes it (got {value})")

    def skips_long_prompts(self) -> bool:
        """Whether a prompt too long for the context is skipped (and recorded) rather than an error."""
        return self.long_prompts == "skip" or self.on_error == "skip"

    def engine(self) -> dict:
        """vLLM's engine options, passed through as given (None = vLLM's default)."""
        return {
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
        }


@dataclass(frozen=True)
class ImportConfig:
    """``winnow import``: how a completions file made elsewhere is read (recorded in the
    generate stage's config)."""

    section: ClassVar[str] = "import"

    id_column: str = "prompt_id"
    """Column holding the prompt id (matched against the prompts file's ids)."""
    text_column: str = "text"
    """Column holding the completion text."""
    model: str = "imported"
    """Model name for rows without a ``model`` column."""
    max_new_tokens: int | None = bounded(None, ge=1)
    """The token limit the completions were made under, when known (the report shows it)."""
    shard_rows: int = bounded(4096, ge=1)
    """Completions per generate shard."""

    def validate(self) -> None:
        check_fields(self)
        if not (self.id_column and self.text_column and self.model):
            raise WinnowError("import: column and model names must be non-empty")
