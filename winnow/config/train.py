"""``sft`` and ``dpo``: training on what select kept."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from winnow.config.fields import Dtype, bounded, check_fields, device_field, seed_field

MAX_BATCH_SIZE = 1 << 20
"""A training batch size beyond this is a typo; a huge one overflows the data loader's ints."""


@dataclass
class TrainConfig:
    section: ClassVar[str] = "sft"

    model: str | None = None
    """Starting checkpoint; defaults to the first generate model."""
    lora: bool = False
    """Train LoRA adapters (merged into the saved checkpoint) instead of every weight."""
    lora_r: int = bounded(16, ge=1)
    """LoRA rank."""
    lora_alpha: int = bounded(32, ge=1)
    """LoRA scaling numerator."""
    learning_rate: float = bounded(2e-5, gt=0, finite=True)
    """Peak learning rate (linear decay, no warm-up)."""
    epochs: float = bounded(2.0, gt=0, finite=True)
    """Passes over the selected rows."""
    batch_size: int = bounded(8, ge=1, le=MAX_BATCH_SIZE)
    """Rows per optimizer step."""
    max_length: int = bounded(512, ge=8)
    """Prompt + completion tokens kept per row (longer rows are truncated)."""
    seed: int = seed_field()
    """Seed of data order and initialisation of LoRA weights."""
    device: str = device_field()
    """Where training runs (``auto``: CUDA if present, else CPU)."""
    dtype: Dtype = "auto"
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
        check_fields(self)


@dataclass
class DpoConfig:
    section: ClassVar[str] = "dpo"

    model: str | None = None
    """Starting checkpoint (also the frozen reference); defaults to the first generate model."""
    lora: bool = False
    """Train LoRA adapters (merged into the saved checkpoint) instead of every weight."""
    lora_r: int = bounded(16, ge=1)
    """LoRA rank."""
    lora_alpha: int = bounded(32, ge=1)
    """LoRA scaling numerator."""
    beta: float = bounded(0.1, gt=0, finite=True)
    """DPO's beta (> 0): how far the policy may move from the reference; larger stays closer."""
    learning_rate: float = bounded(1e-6, gt=0, finite=True)
    """Peak learning rate (linear decay, no warm-up); TRL's default. LoRA wants ~10-100x more."""
    epochs: float = bounded(1.0, gt=0, finite=True)
    """Passes over the pairs."""
    batch_size: int = bounded(8, ge=1, le=MAX_BATCH_SIZE)
    """Pairs per optimizer step."""
    max_length: int = bounded(512, ge=8)
    """Prompt + completion tokens kept per side of a pair (longer ones are truncated)."""
    seed: int = seed_field()
    """Seed of data order and initialisation of LoRA weights."""
    device: str = device_field()
    """Where training runs (``auto``: CUDA if present, else CPU)."""
    dtype: Dtype = "auto"
    """Precision of the weights trained, as for sft: float32, bfloat16, float16, or ``auto``."""

    def validate(self) -> None:
        check_fields(self)
