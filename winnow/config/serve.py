"""``serve``: the model behind ``winnow serve``, the HTTP side, and every limit (each field's
range in its metadata, so a setting outside it is refused like any other config value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from winnow.config.fields import Backend, bounded, check_fields, device_field
from winnow.errors import WinnowError


@dataclass
class ServeConfig:
    """``winnow serve``: the model, the HTTP side, and every limit (defaults in this one place)."""

    section: ClassVar[str] = "serve"

    model: str = "smollm2"
    """The model to serve: a local HF folder or ``smollm2`` (hf), or the upstream's served name (openai)."""
    backend: Backend = field(default="hf", metadata={"noun": "backend"})
    """Generation engine behind the server (any of generate's backends)."""
    served_model_name: str | None = None
    """The name clients ask for in ``model`` and /v1/models lists (default: ``model``)."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 to accept other machines)."""
    port: int = bounded(8000, ge=0, le=65535)
    """Port to listen on."""
    api_key_env: str | None = None
    """Name of the environment variable holding the bearer key clients must send; unset = open."""
    device: str = device_field()
    """hf backend: where the model runs (``auto``: CUDA if present, else CPU)."""
    batch_size: int = bounded(16, ge=1, le=4096)
    """hf backend: prompts decoded together inside one backend call."""
    base_url: str | None = None
    """openai backend: the upstream server's API root."""
    upstream_api_key_env: str | None = None
    """openai backend: environment variable holding the upstream's key."""
    best_of: int = bounded(4, ge=1, le=1024)
    """Best-of-N mode (a reward is set): candidates sampled per answer when a request gives no best_of."""
    max_best_of: int = bounded(16, ge=1, le=1024)
    """Most candidates a request may ask for (best_of)."""
    max_n: int = bounded(8, ge=1, le=1024)
    """Most answers a request may ask for (n)."""
    default_max_tokens: int = bounded(64, ge=1, le=1 << 20)
    """max_tokens of a request that gives none."""
    max_tokens: int = bounded(512, ge=1, le=1 << 20)
    """Most tokens a request may ask for per answer (max_tokens)."""
    max_prompt_tokens: int = bounded(2048, ge=1, le=1 << 22)
    """Most prompt tokens (after the chat template) a request may send."""
    max_body_bytes: int = bounded(1_000_000, ge=1, le=1 << 30)
    """Largest request body accepted."""
    batch_window_ms: float = bounded(10.0, ge=0, le=10_000)
    """How long the first request of a batch waits for others to join it."""
    max_batch_prompts: int = bounded(32, ge=1, le=4096)
    """Most requests served by one backend call (1 = one request at a time)."""
    max_queue: int = bounded(256, ge=1, le=1 << 20)
    """Requests waiting for the backend; beyond this a request gets 429 with Retry-After."""
    retry_after_s: int = bounded(1, ge=1, le=3600)
    """Seconds a 429 asks the client to wait (the Retry-After header)."""
    log_prompts: bool = False
    """Log each request's prompt (off: prompts and completions are never logged)."""
    shutdown_grace_s: float = bounded(30.0, ge=0, le=3600)
    """On SIGTERM/SIGINT: seconds requests in flight get to finish before the server exits regardless."""
    keepalive_s: float = bounded(5.0, ge=0.01, le=300)
    """Streaming: seconds between SSE comment keep-alives while an answer is not ready to stream."""
    metrics_public: bool = False
    """Serve /metrics without the API key (default: /metrics asks for the key like the API)."""

    def validate(self) -> None:
        """Every setting in its range (finite: ``--batch-window-ms inf`` would hold a lone
        request for ever), then the rules between settings."""
        check_fields(self)
        if self.backend == "openai" and not self.base_url:
            raise WinnowError("serve.base_url: backend 'openai' needs the upstream server's URL (--base-url)")
        if self.best_of > self.max_best_of:
            raise WinnowError(f"serve.best_of: must be <= max_best_of ({self.max_best_of})")
        if self.default_max_tokens > self.max_tokens:
            raise WinnowError(f"serve.default_max_tokens: must be <= max_tokens ({self.max_tokens})")
