"""Instruction fine-tuning on the selected completions with TRL's SFTTrainer.

The chapter's step 3: the *starting* checkpoint is fine-tuned on the selected rows, with
the same loss as instruction tuning, here computed on completion tokens only (TRL's
``completion_only_loss`` for prompt-completion data). LoRA adapters, when asked for, are
merged before saving, so ``generate`` loads the result like any other checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from winnow.config import TrainConfig
from winnow.errors import WinnowError
from winnow.models import load_tokenizer, pick_device, resolve_model
from winnow.rundir import Stage, completed_manifest, load_selected


def sft(run_dir: str | Path, config: TrainConfig) -> dict:
    """Fine-tune ``config.model`` on ``select/selected.jsonl``; saves ``sft/checkpoint``."""
    config.validate()
    if not config.model:
        raise WinnowError("sft.model: no starting checkpoint given")
    selected = completed_manifest(run_dir, "select")
    stage = Stage(run_dir, "sft", {"sft": asdict(config), "select_hash": selected["config_hash"]})
    stage.begin()
    if stage.is_complete():
        return _with_path(stage)
    rows = load_selected(run_dir)
    if not rows:
        raise WinnowError(f"{run_dir}/select/selected.jsonl has no rows to train on")
    checkpoint = stage.dir / "checkpoint"
    # Training restarts from scratch after a crash: the checkpoint appears only when whole.
    tmp = Path(tempfile.mkdtemp(dir=stage.dir, prefix=".tmp-checkpoint-"))
    try:
        metrics = train(rows, config, tmp)
        shutil.rmtree(checkpoint, ignore_errors=True)
        tmp.rename(checkpoint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # The manifest names the checkpoint relative to the stage, so identical runs in two
    # folders write identical manifests; callers get the full path.
    stage.finish(checkpoint="checkpoint", num_rows=len(rows), train_loss=metrics.get("train_loss"))
    return _with_path(stage)


def _with_path(stage: Stage) -> dict:
    manifest = stage.manifest()
    return {**manifest, "checkpoint": str(stage.dir / manifest["checkpoint"])}


def train(rows: list[dict], config: TrainConfig, output_dir: Path) -> dict:
    """Run SFTTrainer on prompt-completion rows and save a full checkpoint to output_dir."""
    trainer, tokenizer = make_trainer(rows, config, output_dir)
    result = trainer.train()
    trained = trainer.model
    if config.lora:
        trained = trained.merge_and_unload()
    trained.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(output_dir / "trainer", ignore_errors=True)
    return dict(result.metrics)


def make_trainer(rows: list[dict], config: TrainConfig, output_dir: Path):
    """An SFTTrainer over rows {"prompt": [messages], "completion": [messages]}; loss on completions."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    path = resolve_model(config.model)
    device = pick_device(config.device)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
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
        bf16=False,
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
