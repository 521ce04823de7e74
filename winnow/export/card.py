"""The dataset card (``README.md``) of an exported run: the Hub's YAML metadata, then how
the data was made, read from the stages' manifests (every config field is stored there,
defaults included), and the run's report when there is a current one.

The commands that remake the run are written from the stored configs: one YAML file holding
every stage's section (``--config`` takes it) and one command a stage, so the card states
exactly what was run, defaults included, and each stage's config hash says which it was.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from huggingface_hub import DatasetCardData

from winnow.config import SECTIONS
from winnow.executors import shard_file

SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
SIZES += [(10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
"""The Hub's size categories (rows), up to a billion rows."""
STAGES = ("generate", "score", "select", "sft", "dpo")
"""The stages a card describes, in the order they run."""
WHAT = {
    "selected": "the selected completions, one a row, in TRL's conversational prompt-completion format",
    "pairs": "preference pairs (chosen, rejected) in TRL's conversational preference format",
    "all": "every sampled completion with its reward (null: unscored)",
}
"""What each config holds, as the card says it."""


def size_category(rows: int) -> str:
    """The Hub's size category of a dataset of ``rows`` rows (its largest config).

    >>> size_category(0), size_category(999), size_category(1000), size_category(123_456)
    ('n<1K', 'n<1K', '1K<n<10K', '100K<n<1M')
    """
    return next((name for limit, name in SIZES if rows < limit), "n>1B")


def card_data(
    configs: dict[str, tuple[int, list[str]]], license: str | None, pairs: bool, images: bool = False
) -> DatasetCardData:
    """The YAML metadata: configs (``selected`` the default, each a ``train`` split of its
    Parquet files), license when given, task category, size category and tags; with
    ``images``, the vision-language task category and a tag."""
    entries = [
        {"config_name": name, **({"default": True} if name == "selected" else {}), "data_files": _files(name)}
        for name in configs
    ]
    tags = ["synthetic", "rejection-sampling", "best-of-n", "winnow"] + (["dpo"] if pairs else [])
    tags += ["vision"] if images else []
    return DatasetCardData(
        license=license,  # None leaves it out
        task_categories=["text-generation"] + (["image-text-to-text"] if images else []),
        size_categories=[size_category(max(rows for rows, _ in configs.values()))],
        tags=tags,
        configs=entries,
    )


def _files(name: str) -> list[dict]:
    return [{"split": "train", "path": f"{name}/train-*.parquet"}]


def dataset_card(
    run_dir: Path,
    manifests: dict[str, dict],
    configs: dict[str, tuple[int, list[str]]],
    *,
    license: str | None,
    report: str | None,
    images: int = 0,
) -> str:
    """README.md: metadata, a summary, the configs, how it was made, commands, hashes, report.

    manifests: stage -> its manifest (generate, score, select; sft and dpo when finished).
    configs: config name -> (rows, Parquet file names). report: the report's markdown, ready.
    images: the distinct images the rows carry (0: a text run, whose card says nothing of them).
    """
    data = card_data(configs, license, "pairs" in configs, images=images > 0)
    lines = ["---", data.to_yaml(), "---", "", "# Rejection-sampled data made with winnow", ""]
    lines += [summary(manifests), ""]
    lines += ["## Configs", "", "| config | rows | what |", "|---|---|---|"]
    lines += [f"| `{name}` | {rows:,} | {WHAT[name]} |" for name, (rows, _) in configs.items()]
    lines += [
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'selected = load_dataset("PATH_OR_REPO")  # the default',
    ]
    lines += [f'{name}_rows = load_dataset("PATH_OR_REPO", "{name}")' for name in configs if name != "selected"]
    lines += ["```", ""]
    lines += images_lines(images)
    lines += made(manifests)
    lines += commands(run_dir, manifests)
    lines += hashes(manifests)
    if report:
        lines += [report, ""]
    lines += license_lines(license)
    return "\n".join(lines)


def images_lines(images: int) -> list[str]:
    """What the card says of the rows' images (nothing for a text run).

    >>> images_lines(0)
    []
    """
    if not images:
        return []
    return [
        "## Images",
        "",
        f"The prompts hold images ({images:,} distinct). Every row carries its prompt's images in `images`, a "
        "list per row (the `datasets` Image feature: `PIL.Image` values once loaded), and its prompt's messages "
        'hold one `{"type": "image"}` part per image, in order: TRL\'s conversational vision format, which its '
        "SFT and DPO trainers take with a vision-language model's processor.",
        "",
    ]


def summary(manifests: dict[str, dict]) -> str:
    """One paragraph: prompts, samples, model(s), reward, strategy, what was kept (counts from
    the files' records, which every manifest holds)."""
    gen, score, sel = (manifests[s] for s in ("generate", "score", "select"))
    files = gen["files"]
    prompts = files["prompts.jsonl"]["rows"]
    completions = sum(files[shard_file(Path(), s).name]["rows"] for s in gen["shards"])
    models = ", ".join(f"`{m}`" for m in stage_sections(manifests).get("generate", {}).get("models", ["?"]))
    unscored = f" ({score['unscored']:,} unscored)" if "unscored" in score else ""
    text = (
        f"{prompts:,} prompts, {gen['num_columns']} samples each from {models}: {completions:,} completions, "
        f"scored by {reward_of(score['config'].get('score') or {})}{unscored}; strategy "
        f"`{sel['config']['select']['strategy']}` selected {sel['num_selected']:,} "
        f"(mean reward {number(sel.get('mean_selected_reward'))})"
    )
    if sel.get("num_pairs") is not None:
        text += f", and {sel['num_pairs']:,} preference pairs were made (mean margin {number(sel.get('mean_margin'))})"
    return text + "."


def reward_of(score: dict) -> str:
    """The reward as the score config names it: functions, reward model, judge, weights.

    >>> reward_of({"reward_fn": "length"}), reward_of({"reward_fn": ["math", "length"], "reward_weights": [1, 0.1]})
    ('`length`', '`math` + `length` weighted [1, 0.1]')
    >>> reward_of({"reward_fn": "vader", "reward_model": "rm"})  # a string is the default a model replaces
    'reward model `rm`'
    """
    fns = score.get("reward_fn")
    names = [fns] if isinstance(fns, str) else list(fns or [])
    if isinstance(fns, str) and (score.get("reward_model") or score.get("prm_model") or score.get("reward_judge")):
        names = []
    parts = [f"`{name}`" for name in names]
    if score.get("reward_model"):
        parts.append(f"reward model `{score['reward_model']}`")
    if score.get("prm_model"):
        parts.append(f"process reward model `{score['prm_model']}` ({score.get('prm_aggregate')} of its steps)")
    if score.get("reward_judge"):
        parts.append(f"judge `{score.get('judge_model')}` at {score['reward_judge']}")
    weights = f" weighted {score['reward_weights']}" if score.get("reward_weights") else ""
    return (" + ".join(parts) or "?") + weights


def made(manifests: dict[str, dict]) -> list[str]:
    """How it was made: each stage's settings that say what the data is."""
    gen = manifests["generate"]["config"]
    lines = ["## How it was made", ""]
    if "generate" in gen:
        g = gen["generate"]
        lines += ["### Sampling", "", "| setting | value |", "|---|---|"]
        models = gen.get("provenance", {}).get("models", {})
        lines += [f"| model | `{m}` (files' hash {models.get(m, '?')}) |" for m in g["models"]]
        keys = ("backend", "n", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")
        lines += [f"| {k} | {g[k]} |" for k in (*keys, "seed", "stop") if k in g]
    elif "import" in gen:
        lines += [f"Completions made elsewhere, imported with `winnow import` (model `{gen['import']['model']}`)."]
    if manifests["generate"].get("adaptive"):
        a = manifests["generate"]["adaptive"]
        lines += ["", f"Adaptive sampling: rule `{a['stop_when']}`, {a['step']} samples a step, at most {a['max']}."]
    score = manifests["score"]["config"].get("score") or {}
    threshold = score.get("pass_threshold")
    passing = f"; a completion passes at reward >= {threshold}" if threshold is not None else ""
    lines += ["", "### Reward", "", f"{reward_of(score)}{passing}."]
    reward_hashes = manifests["score"]["config"].get("provenance", {}).get("reward")
    if reward_hashes:
        lines += ["", f"Reward code and models are identified by hash: {', '.join(map(str, reward_hashes))}."]
    sel = manifests["select"]
    options = {k: v for k, v in sel["config"]["select"].items() if v is not None and v is not False}
    lines += ["", "### Selection", "", ", ".join(f"{k} `{v}`" for k, v in options.items()) + "."]
    removed = [f"{sel[k]:,} {k.replace('_', ' ')}" for k in ("truncated_dropped", "duplicates_removed") if k in sel]
    if removed:
        lines += ["", f"Before selecting: {', '.join(removed)}."]
    for stage in ("sft", "dpo"):
        if stage in manifests:
            m = manifests[stage]
            c = m["config"][stage]
            lines += ["", f"### Fine-tuning ({stage})", "", f"`{c['model']}` fine-tuned on these rows "]
            lines[-1] += (
                f"({c['epochs']} epochs, learning rate {c['learning_rate']}): final loss {number(m.get('train_loss'))}."
            )
            lines += [
                "",
                f"`winnow export RUN --model-card --stage {stage} --to DIR` exports the checkpoint with its card.",
            ]
    return lines + [""]


def stage_sections(manifests: dict[str, dict]) -> dict[str, dict]:
    """Every config section the stages were made under ({section: fields}), in run order."""
    out: dict[str, dict] = {}
    for stage in STAGES:
        config = manifests.get(stage, {}).get("config", {})
        out.update({key: value for key, value in config.items() if key in SECTIONS})
    return out


def commands(run_dir: Path, manifests: dict[str, dict]) -> list[str]:
    """The commands that remake the run, with every stage's section in one ``--config`` file."""
    gen = manifests["generate"]["config"]
    first = (
        f"winnow import --config winnow.yaml --prompts PROMPTS --completions COMPLETIONS --run-dir {run_dir}"
        if "import" in gen
        else f"winnow generate --config winnow.yaml --prompts PROMPTS --run-dir {run_dir}"
    )
    cmds = [first] + [
        f"winnow {stage} --config winnow.yaml --run-dir {run_dir}" for stage in STAGES[1:] if stage in manifests
    ]
    return [
        "### Commands",
        "",
        f"PROMPTS is the prompts file whose rows hash to `{gen.get('prompts_hash')}` (the generate stage's "
        "`prompts_hash`); `winnow.yaml` holds every option each stage ran with, defaults included:",
        "",
        "```bash",
        *cmds,
        "```",
        "",
        "```yaml",
        "# winnow.yaml",
        yaml.safe_dump(stage_sections(manifests), sort_keys=False, allow_unicode=True).rstrip(),
        "```",
        "",
    ]


def hashes(manifests: dict[str, dict]) -> list[str]:
    """Each stage's config hash (``winnow verify`` checks them) and the one it was made from."""
    lines = ["### Config hashes", "", "| stage | config hash | made from |", "|---|---|---|"]
    for stage in STAGES:
        if stage in manifests:
            config = manifests[stage]["config"]
            upstream = ", ".join(f"{k} {v}" for k, v in config.items() if k.endswith("_hash") and k != "prompts_hash")
            lines.append(f"| {stage} | `{manifests[stage]['config_hash']}` | {upstream or '-'} |")
    return lines + [""]


def report_section(markdown: str, folder: str) -> str:
    """The run's report.md as a section of the card: headings one level down, and its plots
    under ``folder``/ (where the export copies them).

    >>> report_section("# winnow report\\n## Best-of-n\\n![b](best_of_n.png)", "report")
    '## Report\\n### Best-of-n\\n![b](report/best_of_n.png)'
    """
    text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", markdown, flags=re.M)
    text = text.replace("## winnow report", "## Report", 1)
    return re.sub(r"!\[([^\]]*)\]\(([\w.-]+\.png)\)", rf"![\1]({folder}/\2)", text)


def license_lines(license: str | None) -> list[str]:
    if license is not None:
        return ["## License", "", f"`{license}`, as the exporter stated it."]
    return [
        "## License",
        "",
        "No license was given at export (`winnow export --license`). The completions were sampled from the "
        "model(s) above, whose licenses may apply.",
    ]


def number(x) -> str:
    """A figure with three decimals; '-' for none."""
    return "-" if x is None else f"{x:.3f}"
