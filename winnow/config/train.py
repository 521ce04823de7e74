"""``sft`` and ``dpo``: training on what select kept."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from winnow.config.fields import Dtype, ReportTo, Scheduler, bounded, check_fields, device_field, seed_field
from winnow.errors import WinnowError

MAX_BATCH_SIZE = 1 << 20
"""A training batch size beyond this is a typo; a huge one overflows the data loader's ints."""


@dataclass
class Training:
    """What ``sft`` and ``dpo`` share: LoRA, the optimizer's schedule, logging, seed, device.
    Each section's own fields (what it trains on, its defaults) follow these."""

    lora: bool = False
    """Train LoRA adapters (merged into the saved checkpoint) instead of every weight."""
    lora_r: int = bounded(16, ge=1)
    """LoRA rank."""
    lora_alpha: int = bounded(32, ge=1)
    """LoRA scaling numerator."""
    lora_target_modules: list[str] | None = None
    """LoRA: the modules given adapters, by name (``q_proj``, ``v_proj``, ...); default
    every linear layer (peft's ``all-linear``)."""
    gradient_accumulation_steps: int = bounded(1, ge=1, le=MAX_BATCH_SIZE)
    """Batches whose gradients are summed into one optimizer step."""
    lr_scheduler_type: Scheduler = "linear"
    """How the learning rate moves after warm-up (transformers' schedules; the arguments of
    ``cosine_with_min_lr`` and the like go in ``trl: {lr_scheduler_kwargs: ...}``)."""
    warmup_ratio: float = bounded(0.0, ge=0, lt=1)
    """Share of the optimizer steps that warm the learning rate up linearly from 0 (give
    this or warmup_steps)."""
    warmup_steps: int = bounded(0, ge=0)
    """Optimizer steps that warm the learning rate up linearly from 0 (give this or warmup_ratio)."""
    weight_decay: float = bounded(0.0, ge=0, finite=True)
    """AdamW's decoupled weight decay."""
    logging_steps: int = bounded(1, ge=1)
    """Optimizer steps between logged losses (the manifest's loss curve, TensorBoard, W&B)."""
    report_to: ReportTo = "none"
    """Where the losses also go: ``tensorboard`` (event files in the stage's ``tensorboard/``
    folder), ``wandb`` (offline, in the stage's ``wandb/`` folder, when WANDB_API_KEY is
    unset), or ``none``."""
    eval_split: float = bounded(0.0, ge=0, lt=1)
    """Share of the rows trained on (sft: the selected rows; dpo: the pairs) held out,
    ceil(share x rows) of them drawn with the seed; their loss is logged every logging_steps
    and at the end (``eval_loss`` in the manifest). 0: none held out."""
    trl: dict[str, Any] = field(default_factory=dict)
    """Any other field of TRL's config (SFTConfig for sft, DPOConfig for dpo) by name, as a
    mapping (``{max_grad_norm: 0.5}``); checked against TRL's dataclass before training. A
    field winnow sets has its own option."""
    dtype: Dtype = "auto"
    """Precision of the weights trained: float32, bfloat16, float16, or ``auto`` (bfloat16
    on a CUDA device that supports it, with bf16 mixed precision; else float32)."""
    seed: int = seed_field()
    """Seed of data order and initialisation of LoRA weights."""
    device: str = device_field()
    """Where training runs (``auto``: CUDA if present, else CPU)."""

    OPERATIONAL = ("logging_steps", "report_to")
    """Fields that say where and how often losses are logged, not what is trained: a rerun
    may change them."""

    def stage_config(self) -> dict:
        """The fields that decide the checkpoint, stored and compared on resume."""
        return {k: v for k, v in asdict(self).items() if k not in self.OPERATIONAL}

    def validate(self) -> None:
        check_fields(self)
        check_training(self)


@dataclass
class TrainConfig(Training):
    section: ClassVar[str] = "sft"

    model: str | None = None
    """Starting checkpoint; defaults to the first generate model."""
    learning_rate: float = bounded(2e-5, gt=0, finite=True)
    """Peak learning rate (reached after the warm-up; lr_scheduler_type says how it moves)."""
    epochs: float = bounded(2.0, gt=0, finite=True)
    """Passes over the selected rows."""
    batch_size: int = bounded(8, ge=1, le=MAX_BATCH_SIZE)
    """Rows per batch; an optimizer step takes batch_size x gradient_accumulation_steps rows."""
    max_length: int = bounded(512, ge=8)
    """Prompt + completion tokens kept per row (longer rows are truncated)."""
    strip_reasoning: bool = False
    """Train on the answer alone: the text after the score stage's reasoning closing tag
    (``score.reasoning_tags``); rows whose reasoning never closed are left out. Off: the
    whole completion, reasoning included."""


@dataclass
class DpoConfig(Training):
    section: ClassVar[str] = "dpo"

    model: str | None = None
    """Starting checkpoint (also the frozen reference); defaults to the first generate model."""
    beta: float = bounded(0.1, gt=0, finite=True)
    """DPO's beta (> 0): how far the policy may move from the reference; larger stays closer."""
    learning_rate: float = bounded(1e-6, gt=0, finite=True)
    """Peak learning rate (after the warm-up, then lr_scheduler_type); TRL's default. LoRA wants ~10-100x more."""
    epochs: float = bounded(1.0, gt=0, finite=True)
    """Passes over the pairs."""
    batch_size: int = bounded(8, ge=1, le=MAX_BATCH_SIZE)
    """Pairs per batch; an optimizer step takes batch_size x gradient_accumulation_steps pairs."""
    max_length: int = bounded(512, ge=8)
    """Prompt + completion tokens kept per side of a pair (longer ones are truncated)."""


def check_training(config: Any) -> None:
    """The rules between a training section's fields: one warm-up, LoRA options with LoRA,
    TRL options a mapping by name (their names are checked against TRL by
    ``winnow.training.check_trl_options``, which imports TRL)."""
    section = config.section
    if config.warmup_ratio and config.warmup_steps:
        raise WinnowError(f"{section}.warmup_ratio: give warmup_ratio or warmup_steps, not both")
    if not config.lora:
        lora_options = [f for f in fields(config) if f.name.startswith("lora_")]  # ignored without LoRA
        given = [f.name for f in lora_options if getattr(config, f.name) != f.default]
        if given:
            raise WinnowError(f"{section}.{given[0]}: applies to LoRA training only; add lora (--lora)")
    if config.lora_target_modules == []:
        raise WinnowError(f"{section}.lora_target_modules: name at least one module (default: every linear layer)")
    bad = [key for key in config.trl if not isinstance(key, str)]
    if bad:
        raise WinnowError(f"{section}.trl: keys are TRL field names, got {bad[0]!r}")
