"""The fine-tuned checkpoint of a run (its sft or dpo stage) as a model folder: the
checkpoint's files, each checked against the stage's manifest as it is copied, and a model
card (``README.md``) saying what it was trained from and on, with the commands that remake it."""

from __future__ import annotations

import shutil
from pathlib import Path

from huggingface_hub import ModelCardData

from winnow.errors import WinnowError
from winnow.export import card
from winnow.models import HUB_ID, SMOLLM2
from winnow.records import check_file
from winnow.rundir import completed_manifest

SMOLLM2_HUB = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the model ``smollm2`` names (``winnow.models``)."""


def trained_stage(run_dir: Path, stage: str | None) -> str:
    """The stage whose checkpoint is exported: ``stage``, else the one sft or dpo that finished."""
    if stage is not None:
        return stage
    done = [s for s in ("sft", "dpo") if (run_dir / s / "manifest.json").exists()]
    if not done:
        raise WinnowError(f"{run_dir}: no finished sft or dpo stage to export; run `winnow sft` (or dpo) first")
    if len(done) > 1:
        raise WinnowError(f"{run_dir}: both sft and dpo made a checkpoint; choose one with --stage")
    return done[0]


def base_model(spec: str) -> str | None:
    """The Hub id of the starting model, for the card's ``base_model``; None for a local folder.

    >>> base_model("smollm2"), base_model("org/name"), base_model("/tmp/x/policy")
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'org/name', None)
    """
    if spec == SMOLLM2:
        return SMOLLM2_HUB
    return spec if HUB_ID.fullmatch(spec) and not Path(spec).exists() else None


def write_model(run_dir: Path, out: Path, *, stage: str | None, license: str | None) -> dict:
    """Copy the checkpoint of ``stage`` into ``out`` and write its model card."""
    name = trained_stage(run_dir, stage)
    manifest = completed_manifest(run_dir, name)
    prefix = f"{manifest.get('checkpoint', 'checkpoint')}/"
    files = {rel: record for rel, record in manifest["files"].items() if rel.startswith(prefix)}
    for rel, record in sorted(files.items()):
        source = run_dir / name / rel
        problem = check_file(source, record)
        if problem:
            raise WinnowError(f"{source}: {problem}; rerun `winnow {name}` on this run dir to remake it")
        target = out / rel.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    manifests = {s: completed_manifest(run_dir, s) for s in ("generate", "score", "select")} | {name: manifest}
    (out / "README.md").write_text(model_card(run_dir, manifests, name, license), encoding="utf-8")
    return {"stage": name, "files": len(files)}


def model_card(run_dir: Path, manifests: dict[str, dict], stage: str, license: str | None) -> str:
    """README.md of the checkpoint: metadata (base model when it is a Hub id), then what it
    was trained on, its training settings, the commands and the config hashes."""
    config = manifests[stage]["config"][stage]
    base = base_model(config["model"])
    data = ModelCardData(
        license=license,
        base_model=base,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["winnow", "trl", stage, "rejection-sampling"],
    )
    trained_on = f"{manifests[stage].get('num_rows', manifests['select'].get('num_selected')):,} selected rows"
    if stage == "dpo":
        trained_on = f"{manifests[stage].get('num_pairs', 0):,} preference pairs"
    lines = ["---", data.to_yaml(), "---", "", f"# `{config['model']}` fine-tuned by winnow ({stage})", ""]
    lines += [f"Trained with TRL on {trained_on} of a rejection-sampling run: {card.summary(manifests)}", ""]
    lines += ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in config.items()]
    lines += [f"| final train loss | {card.number(manifests[stage].get('train_loss'))} |", ""]
    lines += card.made({s: m for s, m in manifests.items() if s != stage})  # how its training data was made
    lines += card.commands(run_dir, manifests) + card.hashes(manifests) + card.license_lines(license)
    return "\n".join(lines)
