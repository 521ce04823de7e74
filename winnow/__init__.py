"""winnow: rejection sampling and Best-of-N for language models.

The public surface (``winnow.api``; everything else is internal and may change)::

    import winnow
    best = winnow.best_of_n(["Describe a rainy Monday."], model="smollm2", reward="vader", n=8)

In memory: ``sample`` (M x N texts), ``score`` (the M x N reward matrix), ``best_of_n``;
``load_model`` keeps a model loaded across calls (a ``Model`` handle).
In a run directory (resumable): ``run`` and the stages ``generate_stage``, ``score_stage``,
``select_stage``, ``sft_stage``, ``dpo_stage``; ``evaluate``: a checkpoint on held-out
prompts. Names are loaded on first use, so
``import winnow`` stays fast (no torch, no transformers until a model is needed).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "sample": "winnow.api",
    "score": "winnow.api",
    "best_of_n": "winnow.api",
    "run": "winnow.api",
    "evaluate": "winnow.api",
    "generate_stage": "winnow.api",
    "score_stage": "winnow.api",
    "select_stage": "winnow.api",
    "sft_stage": "winnow.api",
    "dpo_stage": "winnow.api",
    "load_model": "winnow.handle",
    "Model": "winnow.handle",
    "load_prompts": "winnow.prompts",
    "Prompt": "winnow.records",
    "WinnowError": "winnow.errors",
    "GenerateConfig": "winnow.config",
    "ScoreConfig": "winnow.config",
    "SelectConfig": "winnow.config",
    "TrainConfig": "winnow.config",
    "DpoConfig": "winnow.config",
    "ExecutorConfig": "winnow.config",
    "AdaptiveConfig": "winnow.config",
    "ImagesConfig": "winnow.config",
}
__all__ = [
    "AdaptiveConfig",
    "DpoConfig",
    "ExecutorConfig",
    "GenerateConfig",
    "ImagesConfig",
    "Model",
    "Prompt",
    "ScoreConfig",
    "SelectConfig",
    "TrainConfig",
    "WinnowError",
    "__version__",
    "best_of_n",
    "dpo_stage",
    "evaluate",
    "generate_stage",
    "load_model",
    "load_prompts",
    "run",
    "sample",
    "score",
    "score_stage",
    "select_stage",
    "sft_stage",
]

if TYPE_CHECKING:
    from winnow.api import (
        best_of_n,
        dpo_stage,
        evaluate,
        generate_stage,
        run,
        sample,
        score,
        score_stage,
        select_stage,
        sft_stage,
    )
    from winnow.config import (
        AdaptiveConfig,
        DpoConfig,
        ExecutorConfig,
        GenerateConfig,
        ImagesConfig,
        ScoreConfig,
        SelectConfig,
        TrainConfig,
    )
    from winnow.errors import WinnowError
    from winnow.handle import Model, load_model
    from winnow.prompts import load_prompts
    from winnow.records import Prompt


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'winnow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
