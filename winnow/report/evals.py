"""Held-out evaluation as tables and a curve: what ``winnow eval`` writes, and the section
``winnow report`` adds for a run evaluated with ``--eval-prompts`` (``RUN_DIR/eval/eval.json``).

The numbers are computed by ``winnow.evaluation``; this module only reads and draws them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from winnow.errors import WinnowError
from winnow.report import plots

FOLDER = "eval"
"""Where ``winnow run --eval-prompts`` evaluates, inside the run dir."""
CURVE = "eval_curve.png"
RESULT = "eval.json"
"""Every number of an evaluation; written after its models' run dirs are finished."""
FILES = ("eval.md", RESULT, CURVE)
"""What an evaluation writes besides its models' run dirs."""


def model_dir(out: str | Path, name: str) -> Path:
    """The run dir of one evaluated model: ``OUT/<name>`` with spaces as dashes (``round-1``)."""
    return Path(out) / name.replace(" ", "-")


def read(run_dir: str | Path) -> dict | None:
    """``RUN_DIR/eval/eval.json``, or None when the run was not evaluated."""
    path = Path(run_dir) / FOLDER / RESULT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise WinnowError(f"{path}: not valid JSON ({e}); rerun the command that evaluated the run") from None


def _interval(pair) -> str:
    return "-" if pair is None or None in pair else f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _signed(x) -> str:
    return "-" if x is None else f"{x:+.3f}"


def markdown(result: dict) -> list[str]:
    """The evaluation's tables: each model's mean reward (and pass@1) with its 95% interval,
    then each gain with its paired bootstrap 95% interval."""
    models, t = result["models"], result["pass_threshold"]
    passing = t is not None
    lines = [
        "## Held-out evaluation",
        "",
        f"{result['prompts']} held-out prompts x {result['samples_per_prompt']} samples, the same seeds for every "
        f"model; 95% intervals: bootstrap, prompts resampled ({result['bootstrap']['iters']} resamples).",
        "",
        "| model | checkpoint | mean reward | 95% interval |" + (" pass@1 | 95% interval |" if passing else ""),
        "|---|---|---|---|" + ("---|---|" if passing else ""),
    ]
    for m in models:
        row = f"| {m['name']} | {m['model']} | {_fmt(m['mean_reward'])} | {_interval(m['mean_reward_ci95'])} |"
        if passing:
            row += f" {_fmt(m['pass_at_1'])} | {_interval(m['pass_at_1_ci95'])} |"
        lines.append(row)
    if passing:
        lines += ["", f"pass@k (reward >= {t:g}, Chen et al. 2021's estimator over fully scored prompts):", ""]
        ks = models[0]["pass_at_k"]["k"]
        lines += ["| model | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        lines += [f"| {m['name']} | " + " | ".join(map(_fmt, m["pass_at_k"]["mean"])) + " |" for m in models]
    if result["gains"]:
        lines += [
            "",
            "| gain | mean reward | paired 95% interval |" + (" pass@1 | paired 95% interval |" if passing else ""),
        ]
        lines.append("|---|---|---|" + ("---|---|" if passing else ""))
        for g in result["gains"]:
            row = f"| {g['after']} over {g['before']} | {_signed(g['gain'])} | {_interval(g['ci95'])} |"
            if passing:
                row += f" {_signed(g['pass_at_1_gain'])} | {_interval(g['pass_at_1_ci95'])} |"
            lines.append(row)
    return [*lines, ""]


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def draw(result: dict, path: Path) -> None:
    """The curve across models (start, round 1, round 2... or baseline and model): mean
    reward, and pass@1 with a threshold, each with its 95% interval."""
    models = result["models"]

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if m[key] is None else m[key] for m in models], dtype=float)

    def band(key: str) -> tuple[np.ndarray, np.ndarray]:
        pairs = [m[key] or [None, None] for m in models]
        return tuple(
            np.array([np.nan if x is None else x for x in side], dtype=float) for side in zip(*pairs, strict=True)
        )  # type: ignore[return-value]

    curves = {"mean reward": (column("mean_reward"), *band("mean_reward_ci95"))}
    if result["pass_threshold"] is not None:
        curves["pass@1"] = (column("pass_at_1"), *band("pass_at_1_ci95"))
    plots.plot_eval_curve(path, [m["name"] for m in models], curves)


def lines(result: dict, *files: Path) -> list[str]:
    """What the commands print of an evaluation: a line per model and per gain, then the
    ``files`` written."""
    passing = result["pass_threshold"] is not None
    shown = [f"eval: {result['prompts']} held-out prompts x {result['samples_per_prompt']} samples"]
    for m in result["models"]:
        text = f"  {m['name']} ({m['model']}): mean reward {_fmt(m['mean_reward'])} {_interval(m['mean_reward_ci95'])}"
        if passing:
            text += f", pass@1 {_fmt(m['pass_at_1'])} {_interval(m['pass_at_1_ci95'])}"
        shown.append(text)
    for g in result["gains"]:
        text = f"  {g['after']} over {g['before']}: {_signed(g['gain'])} {_interval(g['ci95'])}"
        if passing:
            text += f", pass@1 {_signed(g['pass_at_1_gain'])} {_interval(g['pass_at_1_ci95'])}"
        shown.append(text)
    return [*shown, f"  -> {', '.join(map(str, files))}"]
