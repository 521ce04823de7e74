"""A loaded model kept across calls, as vLLM's ``LLM`` is: ``winnow.load_model`` loads the
weights once and ``winnow.sample`` / ``winnow.best_of_n`` take the handle wherever they take
a model name, so a second call samples at once instead of loading again.

The handle fixes what was decided at load (the backend and the fields that build it:
``device``, ``dtype``, ``batch_size``, ``base_url`` ...); sampling fields (``n``,
``temperature``, ``seed`` ...) stay per call. A call that gives a load-time field with
another value is refused, naming the field, rather than sampled on a model it did not ask for.
"""

from __future__ import annotations

from typing import Any

from winnow.config import GenerateConfig
from winnow.errors import WinnowError
from winnow.remote import generate_client
from winnow.settings import build


class Model:
    """A model loaded once (``winnow.load_model(name, **fields)``), for ``sample`` and ``best_of_n``.

    ``name``: a local Hugging Face folder, ``smollm2``, or (``backend="openai"``) the served
    model's name; ``fields``: the generate fields that build the backend, as keywords.
    """

    def __init__(self, name: str = "smollm2", **fields: Any) -> None:
        self.name = name
        self.fields = dict(fields)
        """The generate fields given at load; every call starts from them."""
        self.config = build(GenerateConfig, dict(fields, models=[name]), source="winnow.load_model")
        self.backend = make(self.config, name)
        """The built backend (``winnow.generate.contract.Backend``): weights in memory."""

    def __repr__(self) -> str:
        return f"winnow.Model({self.name!r}, backend={self.config.backend!r}, device={self.config.device!r})"

    def call_config(self, fields: dict[str, Any], source: str) -> GenerateConfig:
        """A call's generate config: the load-time fields, then the call's. A call's field
        that would build another backend is refused, naming it."""
        config = build(GenerateConfig, {**self.fields, **fields, "models": [self.name]}, source=source)
        loaded = backend_args(self.config)
        for name, value in fields.items():
            alone = build(GenerateConfig, {**self.fields, name: value, "models": [self.name]}, source=source)
            if backend_args(alone) != loaded:
                raise WinnowError(
                    f"{source}: field {name!r}: the model was loaded with {name}="
                    f"{getattr(self.config, name)!r}; load another (winnow.load_model(..., {name}=...)) to change it"
                )
        return config


def load_model(model: str = "smollm2", *, verbose: bool = False, **fields: Any) -> Model:
    """Load ``model`` once and keep it: ``llm = winnow.load_model("smollm2", device="cuda")``,
    then ``winnow.sample(prompts, model=llm)`` as often as wanted without loading again.

    ``fields``: generate fields that build the backend (``backend``, ``device``, ``dtype``,
    ``batch_size``, ``base_url`` ...); ``verbose``: let the libraries print their bars and warnings.
    """
    from winnow.quiet import quiet_libraries

    with quiet_libraries(verbose):
        return Model(model, **fields)


def backend_args(config: GenerateConfig) -> dict[str, Any]:
    """The arguments ``make_backend`` is built from: one source for building and for comparing."""
    return dict(
        backend=config.backend,
        device=config.device,
        batch_size=config.batch_size,
        dtype=config.dtype,
        engine=config.engine() if config.backend == "vllm" else None,
        client=generate_client(config),
        endpoint=config.endpoint,
    )


def make(config: GenerateConfig, model: str):
    """A backend for ``model`` built as ``config`` says (its weights loaded)."""
    from winnow.generate import make_backend

    args = backend_args(config)
    return make_backend(args.pop("backend"), model, **args)
