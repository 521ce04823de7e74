"""Instruction fine-tuning on the selected completions with TRL's SFTTrainer.

The last step of rejection sampling: the *starting* checkpoint is fine-tuned on the selected rows, with
the same loss as instruction tuning, here computed on completion tokens only (TRL's
``completion_only_loss`` for prompt-completion data). LoRA adapters, when asked for, are
merged before saving, so ``generate`` loads the result like any other checkpoint.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from winnow.config import TrainConfig
from winnow.errors import WinnowError
from winnow.provenance import model_identity
from winnow.rundir import Stage, completed_manifest, load_selected
from winnow.train_images import image_paths
from winnow.training import (
    check_trl_options,
    finished_training,
    train_and_save,
    train_into_stage,
    trl_trainer,
)

SELECTED = Path("select/selected.jsonl")
"""The rows trained on, as errors name them when no run dir is given."""


def folder_config(config: TrainConfig, select_hash: str) -> dict:
    """The stage's ``config.json``: the options, the select stage trained on, the model's identity."""
    assert config.model, "sft.model: set by the caller (default: the first generate model)"
    provenance = {"model": model_identity(config.model)}
    return {"sft": config.stage_config(), "select_hash": select_hash, "provenance": provenance}


def sft(run_dir: str | Path, config: TrainConfig) -> dict:
    """Fine-tune ``config.model`` on ``select/selected.jsonl``; saves ``sft/checkpoint``."""
    config.validate()
    check_trl_options(config)
    if not config.model:
        raise WinnowError("sft.model: no starting checkpoint given")
    selected = completed_manifest(run_dir, "select")
    stage = Stage(run_dir, "sft", folder_config(config, selected["config_hash"]))
    with stage:
        if (done := finished_training(stage)) is not None:
            return done
        source = Path(run_dir) / "select" / "selected.jsonl"
        rows = image_paths(load_selected(run_dir), run_dir, source)  # checked before any model loads
        stripped: dict = {}
        if config.strip_reasoning:
            rows, left_out = strip_reasoning(rows, reasoning_tags(run_dir))
            stripped = {"unfinished_reasoning_left_out": left_out}
        if not rows:
            raise WinnowError(f"{run_dir}/select/selected.jsonl has no rows to train on")
        kept = ("rows_trained", "train_loss", "loss_curve")
        return train_into_stage(
            stage,
            partial(train, rows, config, logs=stage.dir, source=source),
            kept=kept,
            num_rows=len(rows),
            **stripped,
        )


def reasoning_tags(run_dir: str | Path) -> tuple[str, str]:
    """The reasoning tags the run's score stage split completions with."""
    from winnow.verifiers.reasoning import resolve_tags

    tags = resolve_tags(completed_manifest(run_dir, "score")["config"]["score"].get("reasoning_tags"))
    if tags is None:
        raise WinnowError("sft.strip_reasoning: the score stage of this run has no reasoning_tags to strip")
    return tags


def strip_reasoning(rows: list[dict], tags: tuple[str, str]) -> tuple[list[dict], int]:
    """Rows whose completion is only the answer after the reasoning (leading whitespace
    dropped), and how many rows were left out because their reasoning never closed."""
    from winnow.verifiers.reasoning import answer_after_reasoning

    out = []
    for row in rows:
        answer = answer_after_reasoning(row["completion"][0]["content"], tags)
        if answer is not None:
            out.append({**row, "completion": [{**row["completion"][0], "content": answer.lstrip()}]})
    return out, len(rows) - len(out)


def train(
    rows: list[dict], config: TrainConfig, output_dir: Path, *, logs: Path | None = None, source: Path = SELECTED
) -> dict:
    """Run SFTTrainer on prompt-completion rows (of ``source``) and save a full checkpoint to output_dir.

    Returns {"train_loss": float, "loss_curve": [[step, loss], ...], "rows_trained": int}
    (rows whose completion max_length cut off entirely are not trained on). Diverged
    training raises WinnowError and saves nothing (``training.train_and_save``).
    """
    trainer, tokenizer = make_trainer(rows, config, output_dir, logs=logs, source=source)
    kept = len(trainer.train_dataset)  # TRL drops rows whose completion max_length cut off entirely
    if kept == 0:
        raise WinnowError(
            f"sft.max_length: {config.max_length} tokens leave no completion token in any of the {len(rows)} "
            "selected rows (the prompts alone are that long); raise --max-length"
        )
    return {**train_and_save(trainer, tokenizer, config, output_dir, section="sft"), "rows_trained": kept}


def make_trainer(
    rows: list[dict], config: TrainConfig, output_dir: Path, *, logs: Path | None = None, source: Path = SELECTED
):
    """An SFTTrainer over rows {"prompt": [messages], "completion": [messages]} of ``source``,
    with "images" (checked absolute paths, ``train_images.image_paths``) where a row has
    any; loss on completions."""
    from trl import SFTConfig, SFTTrainer

    keys = ("prompt", "completion", "images")
    columns = [{k: r[k] for k in keys if k in r} for r in rows]
    return trl_trainer(
        SFTTrainer,
        SFTConfig,
        columns,
        config,
        output_dir,
        section="sft",
        source=str(source),
        logs=logs,
        completion_only_loss=True,
    )
