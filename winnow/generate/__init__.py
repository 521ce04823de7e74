"""Generation backends behind one small Protocol (``winnow.generate.contract``), chosen by name.

A backend turns prompts into completions; the stage (``winnow.stages.generate``) owns
sharding, seeding, the run folder and provenance. A new engine (vLLM, an OpenAI-compatible
server) is one more module satisfying ``Backend``, one more entry in ``BACKENDS`` and one
more case in ``make_backend``: this package only dispatches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from winnow.errors import WinnowError
from winnow.generate.contract import BACKENDS, OPTIONAL_SAMPLING, Backend, Sampling, Watch, check_sampling

if TYPE_CHECKING:
    from winnow.remote import ClientSettings

__all__ = [  # the contract, handed on for callers of the package
    "BACKENDS",
    "OPTIONAL_SAMPLING",
    "Backend",
    "Sampling",
    "Watch",
    "check_sampling",
    "is_kept",
    "kept_backends",
    "make_backend",
]


def make_backend(
    name: str,
    model: str,
    *,
    device: str = "auto",
    batch_size: int = 8,
    dtype: str = "auto",
    engine: dict | None = None,
    client: ClientSettings | None = None,
    endpoint: str = "auto",
) -> Backend:
    """The backend ``name`` for ``model``. ``engine`` holds vLLM engine options
    (tensor_parallel_size, gpu_memory_utilization, max_model_len), passed through as given;
    ``client`` (server address, key variable, retries) and ``endpoint`` are for ``openai``.
    Inside ``kept_backends`` the same arguments give back the backend already made."""

    key = repr((name, model, device, batch_size, dtype, sorted((engine or {}).items()), client, endpoint))
    if _KEPT is not None and key in _KEPT:
        return _KEPT[key]
    backend: Backend
    match name:
        case "hf":
            from winnow.generate.hf import HFBackend

            backend = HFBackend(model, device=device, batch_size=batch_size, dtype=dtype)
        case "openai":
            from winnow.generate.openai_api import OpenAIBackend

            if client is None:
                raise WinnowError("backend openai needs a server: set generate.base_url (--base-url)")
            backend = OpenAIBackend(model, client=client, endpoint=endpoint)
        case "vllm":
            from winnow.generate.vllm import VLLMBackend

            backend = VLLMBackend(model, dtype=dtype, **(engine or {}))
        case _:
            raise WinnowError(f"unknown backend {name!r} (choose from: {', '.join(BACKENDS)})")
    if _KEPT is not None:
        _KEPT[key] = backend
    return backend


_KEPT: dict[str, Backend] | None = None
"""Backends held loaded while ``kept_backends`` is active; None: every call loads anew."""


@contextlib.contextmanager
def kept_backends() -> Iterator[None]:
    """Within: ``make_backend`` loads a model once for the same arguments, however many stages
    ask for it (an adaptive run's steps are a generate stage each: without this each step
    would load the policy again). The backends are closed when the outermost one ends."""
    global _KEPT
    if _KEPT is not None:
        yield
        return
    _KEPT = {}
    try:
        yield
    finally:
        kept, _KEPT = _KEPT, None
        for backend in kept.values():
            if hasattr(backend, "close"):
                backend.close()


def is_kept(backend: Backend) -> bool:
    """Whether ``kept_backends`` holds ``backend`` (its closing then waits for the context's end)."""
    return _KEPT is not None and any(b is backend for b in _KEPT.values())
