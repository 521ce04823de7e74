"""Preference fine-tuning on ``select/pairs.jsonl`` with TRL's DPOTrainer.

``winnow select --pairs best-worst|all|rso`` writes the pairs (TRL's conversational
preference format); this stage fine-tunes the starting checkpoint on them, fully or with
LoRA adapters merged before saving, so ``generate`` loads the result like any checkpoint.
With no ``ref_model`` TRL keeps a frozen copy of the starting model as the reference (with
LoRA, the base model with adapters disabled).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from winnow.config import DpoConfig
from winnow.errors import WinnowError
from winnow.provenance import model_identity
from winnow.records import parse_jsonl
from winnow.rundir import Stage, completed_manifest, verified_bytes
from winnow.train_images import image_paths
from winnow.training import (
    check_trl_options,
    finished_training,
    train_and_save,
    train_into_stage,
    trl_trainer,
)

PAIRS = Path("select/pairs.jsonl")
"""The pairs trained on, as errors name them when no run dir is given."""


def dpo(run_dir: str | Path, config: DpoConfig) -> dict:
    """Fine-tune ``config.model`` on ``select/pairs.jsonl`` with DPO; saves ``dpo/checkpoint``."""
    config.validate()
    check_trl_options(config)
    if not config.model:
        raise WinnowError("dpo.model: no starting checkpoint given")
    selected = completed_manifest(run_dir, "select")
    path = Path(run_dir) / "select" / "pairs.jsonl"
    if "num_pairs" not in selected or not path.exists():
        raise WinnowError(f"{path} not found: run `winnow select --pairs best-worst|all|rso` first")
    provenance = {"model": model_identity(config.model)}
    stage = Stage(
        run_dir, "dpo", {"dpo": config.stage_config(), "select_hash": selected["config_hash"], "provenance": provenance}
    )
    with stage:
        if (done := finished_training(stage)) is not None:
            return done
        data = verified_bytes(path, selected["files"].get("pairs.jsonl"), stage="select")
        rows = [row for _, row in parse_jsonl(data.splitlines(keepends=True), path)]
        if not rows:
            raise WinnowError(f"{path} has no pairs to train on (a lower --min-margin keeps more)")
        rows = image_paths(rows, run_dir, path)  # checked before any model loads
        return train_into_stage(
            stage,
            partial(train, rows, config, logs=stage.dir, source=path),
            kept=("train_loss", "loss_curve"),
            num_pairs=len(rows),
        )


def train(
    rows: list[dict], config: DpoConfig, output_dir: Path, *, logs: Path | None = None, source: Path = PAIRS
) -> dict:
    """Run DPOTrainer on preference rows (of ``source``) and save a full checkpoint to
    output_dir; diverged training raises WinnowError and saves nothing (``training.train_and_save``)."""
    trainer, tokenizer = make_trainer(rows, config, output_dir, logs=logs, source=source)
    return train_and_save(trainer, tokenizer, config, output_dir, section="dpo")


def make_trainer(
    rows: list[dict], config: DpoConfig, output_dir: Path, *, logs: Path | None = None, source: Path = PAIRS
):
    """A DPOTrainer over rows {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
    of ``source``, with "images" (checked absolute paths, ``train_images.image_paths``)
    where a row has any."""
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    # Only TRL's columns: the rewards and provenance stay in pairs.jsonl.
    columns = [{k: r[k] for k in ("prompt", "chosen", "rejected", "images") if k in r} for r in rows]
    return trl_trainer(
        DPOTrainer,
        TrlDPOConfig,
        columns,
        config,
        output_dir,
        section="dpo",
        source=str(source),
        logs=logs,
        beta=config.beta,
    )
