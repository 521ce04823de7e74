"""Preference fine-tuning on ``select/pairs.jsonl`` with TRL's DPOTrainer.

``winnow select --pairs best-worst|all|rso`` writes the pairs (TRL's conversational
preference format); this stage fine-tunes the starting checkpoint on them, fully or with
LoRA adapters merged before saving, so ``generate`` loads the result like any checkpoint.
With no ``ref_model`` TRL keeps a frozen copy of the starting model as the reference (with
LoRA, the base model with adapters disabled).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from winnow.config import DpoConfig
from winnow.errors import WinnowError
from winnow.provenance import model_identity
from winnow.records import parse_jsonl
from winnow.rundir import Stage, completed_manifest, verified_bytes
from winnow.training import (
    load_starting_model,
    lora_config,
    train_and_save,
    trainer_arguments,
    with_checkpoint_path,
    write_checkpoint,
)


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
            return with_checkpoint_path(stage)
        data = verified_bytes(path, selected["files"].get("pairs.jsonl"), stage="select")
        rows = [row for _, row in parse_jsonl(data.splitlines(keepends=True), path)]
        if not rows:
            raise WinnowError(f"{path} has no pairs to train on (a lower --min-margin keeps more)")
        files, metrics = write_checkpoint(stage, lambda folder: train(rows, config, folder))
        stage.finish(
            outputs=files,
            checkpoint="checkpoint",
            num_pairs=len(rows),
            train_loss=metrics["train_loss"],
            loss_curve=metrics["loss_curve"],
        )
        return with_checkpoint_path(stage)


def train(rows: list[dict], config: DpoConfig, output_dir: Path) -> dict:
    """Run DPOTrainer on preference rows and save a full checkpoint to output_dir; diverged
    training raises WinnowError and saves nothing (``training.train_and_save``)."""
    trainer, tokenizer = make_trainer(rows, config, output_dir)
    return train_and_save(trainer, tokenizer, config, output_dir, section="dpo")


def make_trainer(rows: list[dict], config: DpoConfig, output_dir: Path):
    """A DPOTrainer over rows {"prompt": [messages], "chosen": [messages], "rejected": [messages]}."""
    import datasets
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    model, tokenizer, device, dtype, fp16_amp = load_starting_model(
        config.model, device=config.device, dtype=config.dtype, section="dpo"
    )
    # Only TRL's three columns: the rewards and provenance stay in pairs.jsonl.
    data = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = TrlDPOConfig(
        beta=config.beta, **trainer_arguments(config, output_dir, device=device, dtype=dtype, fp16_amp=fp16_amp)
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora_config(config)
    )
    return trainer, tokenizer
