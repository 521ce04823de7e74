"""Instruction fine-tuning on the selected completions with TRL's SFTTrainer.

The chapter's step 3: the *starting* checkpoint is fine-tuned on the selected rows, with
the same loss as instruction tuning, here computed on completion tokens only (TRL's
``completion_only_loss`` for prompt-completion data). LoRA adapters, when asked for, are
merged before saving, so ``generate`` loads the result like any other checkpoint.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from winnow.config import TrainConfig
from winnow.errors import WinnowError
from winnow.models import load_tokenizer, pick_device, resolve_dtype, resolve_model
from winnow.provenance import model_identity
from winnow.records import honour_umask
from winnow.rundir import TMP_DIR_PREFIX, Stage, completed_manifest, load_selected


def sft(run_dir: str | Path, config: TrainConfig) -> dict:
    """Fine-tune ``config.model`` on ``select/selected.jsonl``; saves ``sft/checkpoint``."""
    config.validate()
    if not config.model:
        raise WinnowError("sft.model: no starting checkpoint given")
    selected = completed_manifest(run_dir, "select")
    provenance = {"model": model_identity(config.model)}
    stage = Stage(
        run_dir, "sft", {"sft": asdict(config), "select_hash": selected["config_hash"], "provenance": provenance}
    )
    with stage:
        if stage.stored_manifest() and all(stage.matches(f) for f in stage.manifest()["files"]):
            return _with_path(stage)
        rows = load_selected(run_dir)
        if not rows:
            raise WinnowError(f"{run_dir}/select/selected.jsonl has no rows to train on")
        checkpoint = stage.dir / "checkpoint"
        # Training restarts from scratch after a crash: the checkpoint appears only when whole.
        tmp = Path(tempfile.mkdtemp(dir=stage.dir, prefix=f"{TMP_DIR_PREFIX}checkpoint-"))
        try:
            metrics = train(rows, config, tmp)
            honour_umask(tmp)
            stage.claim()
            shutil.rmtree(checkpoint, ignore_errors=True)
            tmp.rename(checkpoint)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        files = sorted(str(p.relative_to(stage.dir)) for p in checkpoint.rglob("*") if p.is_file())
        # The manifest names the checkpoint relative to the stage, so identical runs in two
        # folders write identical manifests; callers get the full path.
        stage.finish(
            outputs=files,
            checkpoint="checkpoint",
            num_rows=len(rows),
            rows_trained=metrics["rows_trained"],
            train_loss=metrics["train_loss"],
            loss_curve=metrics["loss_curve"],
        )
        return _with_path(stage)


def _with_path(stage: Stage) -> dict:
    manifest = stage.manifest()
    return {**manifest, "checkpoint": str(stage.dir / manifest["checkpoint"])}


def train(rows: list[dict], config: TrainConfig, output_dir: Path) -> dict:
    """Run SFTTrainer on prompt-completion rows and save a full checkpoint to output_dir.

    Returns {"train_loss": float, "loss_curve": [[step, loss], ...], "rows_trained": int}
    (rows whose completion max_length cut off entirely are not trained on). A non-finite loss stops
    training at that step, and non-finite weights are refused: either raises WinnowError and
    nothing is saved.
    """
    trainer, tokenizer = make_trainer(rows, config, output_dir)
    kept = len(trainer.train_dataset)  # TRL drops rows whose completion max_length cut off entirely
    if kept == 0:
        raise WinnowError(
            f"sft.max_length: {config.max_length} tokens leave no completion token in any of the {len(rows)} "
            "selected rows (the prompts alone are that long); raise --max-length"
        )
    trainer.add_callback(_stop_on_non_finite_loss())
    result = trainer.train()
    curve = [[e["step"], e["loss"]] for e in trainer.state.log_history if "loss" in e]
    hint = f"lower sft.learning_rate (now {config.learning_rate:g}); no checkpoint was written"
    for step, loss in curve:
        if not math.isfinite(loss):
            raise WinnowError(f"sft: training diverged: loss is {loss} at step {step}; {hint}")
    trained = trainer.model
    if config.lora:
        trained = trained.merge_and_unload()
    bad = [name for name, p in trained.named_parameters() if not bool(p.detach().isfinite().all())]
    if bad:
        raise WinnowError(f"sft: training diverged: {len(bad)} weight tensor(s) are not finite ({bad[0]}, ...); {hint}")
    trained.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(output_dir / "trainer", ignore_errors=True)
    return {"train_loss": float(result.metrics["train_loss"]), "loss_curve": curve, "rows_trained": kept}


def _stop_on_non_finite_loss():
    """A callback that stops at the first logged non-finite loss: later steps only spread NaNs."""
    from transformers import TrainerCallback

    class StopOnNonFiniteLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                control.should_training_stop = True

    return StopOnNonFiniteLoss()


def make_trainer(rows: list[dict], config: TrainConfig, output_dir: Path):
    """An SFTTrainer over rows {"prompt": [messages], "completion": [messages]}; loss on completions."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    if not config.model:
        raise WinnowError("sft.model: no starting checkpoint given")
    path = resolve_model(config.model)
    device = pick_device(config.device)
    tokenizer = load_tokenizer(path)
    dtype = resolve_dtype(config.dtype, device)
    fp16_amp = dtype == torch.float16 and device != "cpu"
    # fp16 training on CUDA keeps float32 master weights (the grad scaler cannot unscale fp16
    # gradients); bfloat16 needs no scaler, so its weights are bfloat16 themselves.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if fp16_amp else dtype)
    data = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = SFTConfig(
        output_dir=str(output_dir / "trainer"),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        completion_only_loss=True,
        lr_scheduler_type="linear",
        warmup_steps=0,
        seed=config.seed,
        # On CPU bf16 and gradient checkpointing make a step ~10x slower (no bf16 units).
        bf16=dtype == torch.bfloat16 and device != "cpu",
        fp16=fp16_amp,
        gradient_checkpointing=False,
        use_cpu=device == "cpu",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config
    )
    return trainer, tokenizer
