"""Configuration of each stage: one dataclass per stage, every field documented under it.

Values come from the dataclass defaults, then a YAML file (``--config``), then CLI flags
(``winnow.settings`` reads and layers them). A stage's config, with the hash of what it
reads, is stored in its run folder; resuming under a different one is refused (see
``winnow.rundir``).

This package is the bottom layer: it imports nothing of winnow but ``winnow.errors``. A
field's choices are its ``Literal`` annotation and its range is in its metadata
(``winnow.config.fields``); one check validates them all, and each section's ``validate``
adds only the rules between its fields.
"""

from winnow.config.evaluate import EvalConfig
from winnow.config.executor import EXECUTORS, ExecutorConfig
from winnow.config.export import ExportConfig
from winnow.config.fields import DEVICES, MAX_SEED
from winnow.config.generate import MAX_N, MIN_TEMPERATURE, GenerateConfig, ImportConfig
from winnow.config.images import MAX_IMAGE_BYTES, ImagesConfig
from winnow.config.score import MAX_REWARD_WEIGHT, ScoreConfig
from winnow.config.select import (
    PAIRING_NEEDS,
    STRATEGY_NEEDS,
    AdaptiveConfig,
    PickConfig,
    RoundsConfig,
    SelectConfig,
)
from winnow.config.serve import ServeConfig
from winnow.config.train import MAX_BATCH_SIZE, DpoConfig, TrainConfig

SECTIONS: dict[str, type] = {
    cls.section: cls
    for cls in (
        GenerateConfig,
        ImagesConfig,
        ScoreConfig,
        SelectConfig,
        TrainConfig,
        RoundsConfig,
        AdaptiveConfig,
        PickConfig,
        ExecutorConfig,
        DpoConfig,
        ServeConfig,
        ImportConfig,
        ExportConfig,
        EvalConfig,
    )
}
"""YAML section (and CLI option group) -> its dataclass, in the order the docs list them."""

__all__ = [
    "DEVICES",
    "EXECUTORS",
    "MAX_BATCH_SIZE",
    "MAX_IMAGE_BYTES",
    "MAX_N",
    "MAX_REWARD_WEIGHT",
    "MAX_SEED",
    "MIN_TEMPERATURE",
    "PAIRING_NEEDS",
    "SECTIONS",
    "STRATEGY_NEEDS",
    "AdaptiveConfig",
    "DpoConfig",
    "EvalConfig",
    "ExecutorConfig",
    "ExportConfig",
    "GenerateConfig",
    "ImagesConfig",
    "ImportConfig",
    "PickConfig",
    "RoundsConfig",
    "ScoreConfig",
    "SelectConfig",
    "ServeConfig",
    "TrainConfig",
]
