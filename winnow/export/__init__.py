"""``winnow export RUN --to DIR``: a finished run as a dataset folder that
``datasets.load_dataset(DIR)`` reads (``tables``: Parquet written a batch at a time) with a
dataset card saying how it was made (``card``); or, with ``model_card``, its fine-tuned
checkpoint with a model card (``model``); then, if asked, uploaded to the Hub (``hub``).

Layout of the dataset folder::

    DIR/README.md                            the card: YAML metadata, how it was made, report
    DIR/selected/train-00000-of-00001.parquet  config ``selected`` (the default)
    DIR/pairs/train-...parquet               config ``pairs``, when select made pairs
    DIR/all/train-...parquet                 config ``all``, with ``all_scored``
    DIR/report/*.png                         the report's plots, when the run has a current report

A run whose prompts had images adds an ``images`` column to every config (``images``).

The folder is written beside DIR and renamed into place when whole (``staged_folder``, the
one folder-atomic writer): a failed or killed export leaves no DIR.
"""

from __future__ import annotations

from pathlib import Path

from winnow.config.export import ExportConfig
from winnow.errors import WinnowError
from winnow.export import card, tables
from winnow.export import images as img
from winnow.records import read_json, read_text
from winnow.report.run import staged_folder
from winnow.rundir import completed_manifest

READ = ("generate", "score", "select")
"""The stages a dataset is made from; each must be finished."""
TRAINED = ("sft", "dpo")


def export_run(run_dir: str | Path, to: str | Path, config: ExportConfig) -> dict:
    """Write the export of ``run_dir`` to ``to`` (which must not exist, or be empty), then
    push it when ``config.push_to_hub`` is set. Returns what the command prints: the folder,
    rows per config (or the checkpoint's files), whether the report was included, the URL."""
    config.validate()
    run_dir, to = Path(run_dir), Path(to)
    check_run_dir(run_dir)
    check_target(to, run_dir)
    if config.model_card:
        from winnow.export.model import write_model

        with staged_folder(to) as out:
            result = write_model(run_dir, out, stage=config.stage, license=config.license)
    else:
        with staged_folder(to) as out:
            result = write_dataset(run_dir, out, all_scored=config.all_scored, license=config.license)
    result["folder"] = str(to)
    if config.push_to_hub:
        from winnow.export.hub import push

        kind = "model" if config.model_card else "dataset"
        result["url"] = push(to, config.push_to_hub, repo_type=kind, private=config.private)
    return result


def check_run_dir(run_dir: Path) -> None:
    """A run dir (a folder with a generate stage) whose stage folders are all finished."""
    if (run_dir / "round-1").is_dir() and not (run_dir / "generate").exists():
        raise WinnowError(f"{run_dir}: a --rounds run; export one round's folder, such as {run_dir / 'round-1'}")
    if not (run_dir / "generate").is_dir():
        raise WinnowError(f"{run_dir}: not a run dir (no generate stage folder)")
    for stage in (*READ, *TRAINED):
        folder = run_dir / stage
        if folder.is_dir() and not (folder / "manifest.json").exists():
            raise WinnowError(
                f"{folder}: the {stage} stage is not finished (no manifest.json); rerun the command that "
                "started it to finish it, or delete the folder"
            )


def check_target(to: Path, run_dir: Path) -> None:
    """``--to`` must be a new folder, or an empty one, outside the run's stage folders: an
    export never overwrites, and never adds a file a stage's manifest does not record."""
    if to.exists() and not (to.is_dir() and not any(to.iterdir())):
        raise WinnowError(f"--to {to}: exists and is not an empty folder; give a new folder (nothing was written)")
    target = to.resolve()
    for stage in (*READ, *TRAINED, "report"):
        folder = (run_dir / stage).resolve()
        if target == folder or folder in target.parents:
            raise WinnowError(f"--to {to}: inside the run's stage folder {run_dir / stage}; give a folder outside it")


def finished(run_dir: Path, stages: tuple[str, ...]) -> dict[str, dict]:
    """The manifests of ``stages`` that ran (each checked, with its upstream chain)."""
    return {s: completed_manifest(run_dir, s) for s in stages if (run_dir / s / "manifest.json").exists()}


def write_dataset(run_dir: Path, out: Path, *, all_scored: bool, license: str | None, **sizes: int) -> dict:
    """The Parquet configs and README.md of ``run_dir`` into ``out``; sizes: ``tables.write``'s."""
    manifests = {s: completed_manifest(run_dir, s) for s in READ} | finished(run_dir, TRAINED)
    select = manifests["select"]
    prompts, paths = img.run_prompts(run_dir, manifests["generate"])  # no image bytes: read per batch
    extra = tables.has_prompt_columns(prompts)
    images = img.RunImages(run_dir, paths) if any(paths) else None  # None: a text run, exported as ever
    batch_rows = sizes.get("batch_rows", tables.BATCH_ROWS)
    if images is not None:
        batch_rows = images.batch_rows(batch_rows)
    del prompts  # 10^5 prompts are tens of MB: not held while the tables are written
    pooled = "score_hashes" in select["config"]
    configs: dict[str, tuple[int, list[str]]] = {}
    for name, columns, wanted in (
        ("selected", tables.SELECTED, True),
        ("pairs", tables.PAIRS, select.get("num_pairs") is not None),
        ("all", tables.ALL, all_scored),
    ):
        if not wanted:
            continue
        pool = tables.POOLED.get(name, ()) if pooled else ()
        schema = tables.schema(columns, pooled=pool, prompt_columns=extra, images=images is not None)
        if name == "all":
            batches = tables.all_tables(run_dir, schema, batch_rows, images)
        else:
            rows = tables.select_rows(run_dir, name, schema.names, images)
            batches = tables.batches(rows, schema, batch_rows, images)
        configs[name] = tables.write(out / name, batches, schema, **sizes)
    report, note = report_markdown(run_dir, manifests, out)
    distinct = len(images.known) if images else 0
    text = card.dataset_card(run_dir, manifests, configs, license=license, report=report or note, images=distinct)
    (out / "README.md").write_text(text, encoding="utf-8")
    shown = "included" if report else "stale, left out" if note else "none"
    return {"configs": {name: rows for name, (rows, _) in configs.items()}, "report": shown}


def report_markdown(run_dir: Path, manifests: dict[str, dict], out: Path) -> tuple[str | None, str | None]:
    """The run's report as a card section, its plots copied to ``out/report/``: (markdown,
    None); (None, a note) when the report was made from other stages; (None, None) without one."""
    folder = run_dir / "report"
    if not (folder / "report.json").is_file() or not (folder / "report.md").is_file():
        return None, None
    made = {s: manifests[s]["config_hash"] for s in ("generate", "score")}
    if (read_json(folder / "report.json") or {}).get("made_from") != made:
        return None, (
            f"The run's report ({folder}) was made from other stages than these; "
            f"`winnow report {run_dir}` remakes it, and a new export includes it."
        )
    (out / "report").mkdir()
    for png in sorted(folder.glob("*.png")):
        if png.is_file() and not png.is_symlink():  # the report's own plots; no link is followed
            (out / "report" / png.name).write_bytes(png.read_bytes())
    return card.report_section(read_text(folder / "report.md"), "report"), None
