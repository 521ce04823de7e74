"""What SFT and DPO share: loading the starting model, TRL arguments, LoRA, a checkpoint
that appears only when whole, and training that fails loudly.

``winnow.sft`` and ``winnow.dpo`` are the two stages; each builds its TRL trainer from
these pieces, so a fix to CPU defaults, precision or divergence checks lands in both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from winnow.errors import WinnowError
from winnow.loader import did_you_mean
from winnow.models import (
    is_vision_language,
    load_tokenizer,
    load_vision_lm,
    pick_device,
    resolve_dtype,
    resolve_model,
)
from winnow.records import honour_umask
from winnow.rundir import TMP_DIR_PREFIX, Stage
from winnow.train_images import dataset, image_tokens_kept


def load_starting_model(path: Path, *, vision: bool, device: str, dtype: str):
    """(model, tokenizer or processor, device, torch dtype, fp16 AMP?) for the checkpoint
    folder to fine-tune; a vision-language model comes with its processor
    (``models.load_vision_lm``, as generate loads it).

    fp16 training on CUDA keeps float32 master weights (the grad scaler cannot unscale fp16
    gradients); bfloat16 needs no scaler, so its weights are bfloat16 themselves.
    """
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    fp16_amp = torch_dtype == torch.float16 and device != "cpu"
    weights = torch.float32 if fp16_amp else torch_dtype
    if vision:
        lm, processor = load_vision_lm(path, dtype=weights, device=device)
        return lm, processor, device, torch_dtype, fp16_amp
    tokenizer = load_tokenizer(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=weights)
    return lm, tokenizer, device, torch_dtype, fp16_amp


def starting_checkpoint(model: str | None, section: str) -> Path:
    """The folder of the checkpoint to fine-tune, refused unless it has an LM head."""
    if not model:
        raise WinnowError(f"{section}.model: no starting checkpoint given")
    path = resolve_model(model)
    refuse_non_causal(path, section)
    return path


def trainer_arguments(config: Any, output_dir: Path, *, device: str, dtype, fp16_amp: bool, evaluate: bool) -> dict:
    """Keyword arguments every TRL config gets from a winnow training section (``evaluate``:
    an eval split is held out), before the section's ``trl`` mapping."""
    import torch

    return {
        "output_dir": str(output_dir / "trainer"),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_length,
        "lr_scheduler_type": config.lr_scheduler_type,
        # transformers reads a warmup_steps below 1 as a share of the optimizer steps
        "warmup_steps": config.warmup_ratio or config.warmup_steps,
        "weight_decay": config.weight_decay,
        "seed": config.seed,
        # TRL turns both on by default; on CPU they make a step ~10x slower (no bf16 units).
        "bf16": dtype == torch.bfloat16 and device != "cpu",
        "fp16": fp16_amp,
        "gradient_checkpointing": False,
        "use_cpu": device == "cpu",
        "save_strategy": "no",
        "report_to": config.report_to,
        "logging_steps": config.logging_steps,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_steps": config.logging_steps if evaluate else None,
        "dataloader_num_workers": 0,
    }


SET_BY_WINNOW = {
    "learning_rate": "learning_rate",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "max_length": "max_length",
    "lr_scheduler_type": "lr_scheduler_type",
    "warmup_steps": "warmup_steps",
    "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay",
    "seed": "seed",
    "bf16": "dtype",
    "fp16": "dtype",
    "use_cpu": "device",
    "report_to": "report_to",
    "logging_steps": "logging_steps",
    "beta": "beta",
}
"""TRL fields a section's ``trl`` mapping may not set, and the option that sets each: a
fact given in two places would leave a reader guessing which wins."""
OWNED = ("output_dir", "save_strategy")
"""TRL fields winnow keeps to itself: the checkpoint is saved once, whole, in the stage folder."""

TRL_CONFIGS = {"sft": "SFTConfig", "dpo": "DPOConfig"}
"""The TRL dataclass each training section's arguments are."""


def check_trl_options(config: Any) -> None:
    """Refuse, in one line, a key of ``config.trl`` that is no field of the section's TRL
    config (naming the closest one) or that winnow sets itself (naming the option), and
    ``report_to: wandb`` without wandb: before any model loads."""
    section = config.section
    if config.report_to == "wandb" and importlib.util.find_spec("wandb") is None:
        raise WinnowError(f"{section}.report_to: wandb is not installed (pip install wandb)")
    if not config.trl:
        return
    import trl

    args_class = getattr(trl, TRL_CONFIGS[section])
    names = {f.name for f in dataclasses.fields(args_class)}
    for key in config.trl:
        if key in SET_BY_WINNOW and hasattr(config, SET_BY_WINNOW[key]):  # dpo's beta: not sft's
            raise WinnowError(f"{section}.trl.{key}: set by {section}.{SET_BY_WINNOW[key]}; give that instead")
        if key in OWNED:
            raise WinnowError(f"{section}.trl.{key}: winnow saves the checkpoint whole in RUN_DIR/{section}/checkpoint")
        if key not in names:
            raise WinnowError(
                f"{section}.trl.{key}: not a field of TRL's {args_class.__name__}{did_you_mean(key, names)}"
            )


def trl_trainer(
    trainer_class,
    args_class,
    columns: list[dict],
    config: Any,
    output_dir: Path,
    *,
    section: str,
    source: str,
    logs: Path | None = None,
    **options,
):
    """(trainer, tokenizer or processor): a TRL trainer of ``trainer_class`` (SFTTrainer,
    DPOTrainer) over the rows ``columns`` of ``source`` (TRL's columns, ``images`` where a
    row has any: ``train_images.dataset``), less an eval split when ``config.eval_split``,
    starting from ``config.model`` (``load_starting_model``; a vision-language model trains
    with its processor), its arguments an ``args_class`` (SFTConfig, DPOConfig) of
    ``trainer_arguments``, the trainer's own ``options`` and the section's ``trl`` mapping,
    with LoRA adapters when ``config.lora``. TensorBoard and W&B write under ``logs``
    (default: ``output_dir/logs``). The ``trl`` keys are checked first by the stage
    (``check_trl_options``); TRL checks their values here."""
    path = starting_checkpoint(config.model, section)
    vision = is_vision_language(path)
    data = dataset(columns, vision=vision, source=source, model=path)
    model, processing, device, dtype, fp16_amp = load_starting_model(
        path, vision=vision, device=config.device, dtype=config.dtype
    )
    train, held_out = split_eval(data, config.eval_split, seed=config.seed, section=section)
    base = trainer_arguments(
        config, output_dir, device=device, dtype=dtype, fp16_amp=fp16_amp, evaluate=held_out is not None
    )
    try:
        args = args_class(**{**base, **options, **config.trl})
    except (TypeError, ValueError) as e:  # TRL's and transformers' own checks of a value
        raise WinnowError(f"{section}.trl: TRL refused the arguments: {' '.join(str(e).split())}") from None
    with logging_to(logs or output_dir / "logs", config.report_to):
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=held_out,
            processing_class=processing,
            peft_config=lora_config(config),
        )
    return trainer, processing


def split_eval(data, share: float, *, seed: int, section: str):
    """(train, held out): ceil(share x rows) rows drawn with ``seed`` held out of ``data``
    (a ``datasets.Dataset``), or (data, None) when ``share`` is 0."""
    if not share:
        return data, None
    held = math.ceil(share * len(data))
    if held >= len(data):
        raise WinnowError(
            f"{section}.eval_split: {share:g} of {len(data)} rows holds out {held}, leaving none to train on"
        )
    parts = data.train_test_split(test_size=held, seed=seed)
    return parts["train"], parts["test"]


@contextlib.contextmanager
def logging_to(folder: Path, report_to: str):
    """While the trainer is built, TensorBoard's event files are sent to ``folder/tensorboard``
    (transformers reads TENSORBOARD_LOGGING_DIR as it makes its callback; the trainer's own
    output folder is deleted after training). W&B's run goes to ``folder/wandb``, offline
    when no WANDB_API_KEY is set so no network is needed: wandb reads these as training
    starts, so they stay set for the process (where not set already)."""
    name = "TENSORBOARD_LOGGING_DIR"
    before = os.environ.get(name)
    if report_to == "tensorboard":
        os.environ[name] = str(folder / "tensorboard")
    if report_to == "wandb":
        os.environ.setdefault("WANDB_DIR", str(folder))
        if not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def lora_config(config: Any):
    """peft's LoraConfig on ``config.lora_target_modules`` (default every linear layer) when
    ``config.lora``, else None."""
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=config.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def train_and_save(trainer, tokenizer, config: Any, output_dir: Path, *, section: str) -> dict:
    """Train, refuse a diverged run, merge LoRA, save a full checkpoint to ``output_dir``.

    Returns {"train_loss": float, "loss_curve": [[step, loss], ...]}. A non-finite loss stops
    training at that step, and non-finite weights are refused: either raises WinnowError and
    nothing is saved.
    """
    trainer.add_callback(_stop_on_non_finite_loss())
    bar = _labelled_bar(trainer, section)
    try:
        with image_tokens_kept(section, config.max_length):
            result = trainer.train()
    finally:  # a failed step leaves the bar open: its last line would hold the error's
        bar.close()
    curve = [[e["step"], e["loss"]] for e in trainer.state.log_history if "loss" in e]
    held_out = _evaluate(trainer)
    hint = f"lower {section}.learning_rate (now {config.learning_rate:g}); no checkpoint was written"
    for step, loss in curve:
        if not math.isfinite(loss):
            raise WinnowError(f"{section}: training diverged: loss is {loss} at step {step}; {hint}")
    trained = trainer.model
    if config.lora:
        trained = trained.merge_and_unload()
    bad = [name for name, p in trained.named_parameters() if not bool(p.detach().isfinite().all())]
    if bad:
        raise WinnowError(
            f"{section}: training diverged: {len(bad)} weight tensor(s) are not finite ({bad[0]}, ...); {hint}"
        )
    trained.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(output_dir / "trainer", ignore_errors=True)
    return {"train_loss": float(result.metrics["train_loss"]), "loss_curve": curve, **held_out}


EVAL_KEYS = ("eval_rows", "eval_loss", "eval_curve")
"""What a stage's manifest holds of its eval split, when it has one."""


def _evaluate(trainer) -> dict:
    """{"eval_rows": int, "eval_loss": float, "eval_curve": [[step, loss], ...]} of the
    trained model on the held-out rows (the curve: the losses logged during training and the
    final one); {} without an eval split."""
    if trainer.eval_dataset is None:
        return {}
    final = float(trainer.evaluate()["eval_loss"])
    by_step = {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    curve = [[step, loss] for step, loss in sorted(by_step.items())]
    return {"eval_rows": len(trainer.eval_dataset), "eval_loss": final, "eval_curve": curve}


def write_checkpoint(stage: Stage, train: Callable[[Path], dict]) -> tuple[list[str], dict]:
    """Run ``train(folder)`` into a temp folder and rename it to ``<stage>/checkpoint``.

    Training restarts from scratch after a crash: the checkpoint appears only when whole.
    Returns the checkpoint's files relative to the stage folder and ``train``'s metrics.
    """
    checkpoint = stage.dir / "checkpoint"
    tmp = Path(tempfile.mkdtemp(dir=stage.dir, prefix=f"{TMP_DIR_PREFIX}checkpoint-"))
    try:
        metrics = train(tmp)
        honour_umask(tmp)
        stage.claim()
        shutil.rmtree(checkpoint, ignore_errors=True)
        tmp.rename(checkpoint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(str(p.relative_to(stage.dir)) for p in checkpoint.rglob("*") if p.is_file())
    return files, metrics


def finished_training(stage: Stage) -> dict | None:
    """A training stage already complete with every file it recorded: its manifest (the
    checkpoint's full path, ``with_checkpoint_path``), which a rerun returns without
    training again; else None."""
    if stage.stored_manifest() and all(stage.matches(f) for f in stage.manifest()["files"]):
        return with_checkpoint_path(stage)
    return None


def train_into_stage(stage: Stage, train: Callable[[Path], dict], *, kept: tuple[str, ...], **summary) -> dict:
    """Train into ``<stage>/checkpoint`` (``write_checkpoint``), then finish the stage: its
    manifest names the checkpoint and holds ``summary`` and the numbers ``kept`` of those
    ``train`` returned (its loss and loss curve), and the eval split's (``EVAL_KEYS``). Returns the manifest with the checkpoint's
    full path (``with_checkpoint_path``)."""
    files, metrics = write_checkpoint(stage, train)
    kept += EVAL_KEYS
    stage.finish(outputs=files, checkpoint="checkpoint", **summary, **{k: metrics[k] for k in kept if k in metrics})
    return with_checkpoint_path(stage)


def with_checkpoint_path(stage: Stage) -> dict:
    """The manifest names the checkpoint relative to the stage, so identical runs in two
    folders write identical manifests; callers get the full path."""
    manifest = stage.manifest()
    return {**manifest, "checkpoint": str(stage.dir / manifest["checkpoint"])}


def _labelled_bar(trainer, label: str):
    """One progress bar named after the stage, counting optimizer steps with the last logged
    loss beside it, in place of the trainer's unlabelled bar and its per-step log dicts (the
    loss curve goes to the stage manifest). Returns the callback; its ``close()`` ends the bar."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class StageBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=label, unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if self.bar is not None and loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4g}")

        def on_train_end(self, args, state, control, **kwargs):
            self.close()

        def close(self):
            if self.bar is not None:
                self.bar.close()

    # With transformers' verbosity at "error" (the CLI sets it unless --verbose) the trainer
    # disables its tqdm and prints every log dict with PrinterCallback instead: both go.
    trainer.pop_callback(PrinterCallback)
    trainer.pop_callback(ProgressCallback)
    bar = StageBar()
    trainer.add_callback(bar)
    return bar


def _stop_on_non_finite_loss():
    """A callback that stops at the first logged non-finite loss: later steps only spread NaNs."""
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                control.should_training_stop = True

    return StopOnNonFiniteLoss()


CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
"""Architectures with a language-model head. AutoModelForCausalLM loads a sequence classifier
(a reward model) of the same base without complaint, with a freshly initialised LM head."""


def refuse_non_causal(path: Path, section: str) -> None:
    """Refuse a checkpoint whose config names only architectures without an LM head."""
    from winnow.records import read_json

    architectures = (read_json(path / "config.json") or {}).get("architectures") or []
    if architectures and not any(str(a).endswith(CAUSAL_SUFFIXES) for a in architectures):
        raise WinnowError(
            f"{section}.model: {path} is not a causal language model (architectures {', '.join(map(str, architectures))}); "
            "give the policy checkpoint to fine-tune"
        )
