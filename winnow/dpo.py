"""Preference fine-tuning on ``select/pairs.jsonl`` with TRL's DPOTrainer.

``winnow select --pairs best-worst|all|rso`` writes the pairs (TRL's conversational
preference format); this stage fine-tunes the starting checkpoint on them, fully or with
LoRA adapters merged before saving, so ``generate`` loads the result like any checkpoint.
With no ``ref_model`` TRL keeps a frozen copy of the starting model as the reference (with
LoRA, the base model with adapters disabled).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from winnow.config import DpoConfig
from winnow.errors import WinnowError
from winnow.models import load_tokenizer, pick_device, resolve_dtype, resolve_model
from winnow.provenance import model_identity
from winnow.records import honour_umask, parse_jsonl
from winnow.rundir import TMP_DIR_PREFIX, Stage, completed_manifest, verified_bytes


def dpo(run_dir: str | Path, config: DpoConfig) -> dict:
    """Fine-tune ``config.model`` on ``select/pairs.jsonl`` with DPO; saves ``dpo/checkpoint``."""
    config.validate()
    if not config.model:
        raise WinnowError("dpo.model: no starting checkpoint given")
    selected = completed_manifest(run_dir, "select")
    path = Path(run_dir) / "select" / "pairs.jsonl"
    if "num_pairs" not in selected or not path.exists():
        raise WinnowError(f"{path} not found: run `winnow select --pairs best-worst|all|rso` first")
    provenance = {"model": model_identity(config.model)}
    stage = Stage(
        run_dir, "dpo", {"dpo": asdict(config), "select_hash": selected["config_hash"], "provenance": provenance}
    )
    with stage:
        if stage.stored_manifest() and all(stage.matches(f) for f in stage.manifest()["files"]):
            return _with_path(stage)
        data = verified_bytes(path, selected["files"].get("pairs.jsonl"), stage="select")
        rows = [row for _, row in parse_jsonl(data.splitlines(keepends=True), path)]
        if not rows:
            raise WinnowError(f"{path} has no pairs to train on (a lower --min-margin keeps more)")
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
        stage.finish(outputs=files, checkpoint="checkpoint", num_pairs=len(rows), train_loss=metrics.get("train_loss"))
        return _with_path(stage)


def _with_path(stage: Stage) -> dict:
    manifest = stage.manifest()
    return {**manifest, "checkpoint": str(stage.dir / manifest["checkpoint"])}


def train(rows: list[dict], config: DpoConfig, output_dir: Path) -> dict:
    """Run DPOTrainer on preference rows and save a full checkpoint to output_dir."""
    trainer, tokenizer = make_trainer(rows, config, output_dir)
    result = trainer.train()
    trained = trainer.model
    if config.lora:
        trained = trained.merge_and_unload()
    trained.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.rmtree(output_dir / "trainer", ignore_errors=True)
    return dict(result.metrics)


def make_trainer(rows: list[dict], config: DpoConfig, output_dir: Path):
    """A DPOTrainer over rows {"prompt": [messages], "chosen": [messages], "rejected": [messages]}."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    if not config.model:
        raise WinnowError("dpo.model: no starting checkpoint given")
    path = resolve_model(config.model)
    device = pick_device(config.device)
    tokenizer = load_tokenizer(path)
    dtype = resolve_dtype(config.dtype, device)
    fp16_amp = dtype == torch.float16 and device != "cpu"  # float32 master weights, as in sft
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32 if fp16_amp else dtype)
    # Only TRL's three columns: the rewards and provenance stay in pairs.jsonl.
    data = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = TrlDPOConfig(
        output_dir=str(output_dir / "trainer"),
        beta=config.beta,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        lr_scheduler_type="linear",
        warmup_steps=0,
        seed=config.seed,
        # TRL turns both on by default; on CPU they make a step ~10x slower (no bf16 units).
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
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config
    )
    return trainer, tokenizer
