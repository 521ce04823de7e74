"""Stages in sequence, and Best-of-N on top of generate + score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow import stages
from winnow.config import GenerateConfig
from winnow.records import atomic_write_jsonl


def run_stages(run_dir: str | Path, prompts, configs: dict) -> dict:
    """Run the configured stages in order; returns each stage's manifest summary.

    With ``configs["rounds"].count`` set, the four stages run that many rounds, each in
    ``RUN_DIR/round-<r>/`` (``winnow.rounds``); the summary is then keyed by round.
    """
    from winnow.sft import sft

    rounds = configs.get("rounds")
    if rounds is not None and rounds.count is not None:
        from winnow.rounds import run_rounds

        by_round = run_rounds(run_dir, prompts, configs, rounds)
        return {f"round-{r}": _brief(summary) for r, summary in by_round.items()}
    summary = {}
    executor = configs.get("executor")  # where generate and score make shards, never what
    if "generate" in configs:
        summary["generate"] = stages.generate(run_dir, prompts, configs["generate"], executor=executor)
    if "score" in configs:
        summary["score"] = stages.score(run_dir, configs["score"], executor=executor)
    if "select" in configs:
        summary["select"] = stages.select(run_dir, configs["select"])
    if "sft" in configs:
        summary["sft"] = sft(run_dir, configs["sft"])
    if "dpo" in configs:
        from winnow.dpo import dpo

        summary["dpo"] = dpo(run_dir, configs["dpo"])
    return _brief(summary)


def _brief(summary: dict) -> dict:
    """Stage manifests without their (long) configs."""
    return {name: {k: v for k, v in m.items() if k != "config"} for name, m in summary.items()}


def default_sft_model(run_dir: str | Path, generate: GenerateConfig | None, file_config: dict) -> str:
    """The chapter fine-tunes the starting checkpoint: the (first) model that generated."""
    if generate is not None:
        return generate.models[0]
    path = Path(run_dir) / "generate" / "manifest.json"
    if path.exists():
        return json.loads(path.read_text())["config"]["generate"]["models"][0]
    return GenerateConfig().models[0]


def best_of_n(run_dir: str | Path, out: str | Path | None = None) -> list[dict]:
    """The best completion per prompt with its reward (shape (M,) rows; the earliest sample
    wins a tie), written to ``out`` (default ``RUN_DIR/best.jsonl``) and returned."""
    prompts, by_key, rewards, _ = stages.load_scored(run_dir)
    best = sel.top_per_prompt(rewards)
    rows = []
    for i, (prompt, j) in enumerate(zip(prompts, best.tolist(), strict=True)):
        c = by_key.get((prompt.id, j)) if j >= 0 else None
        rows.append(
            {
                "prompt_id": prompt.id,
                "prompt": prompt.content,
                "sample_index": j if c else None,
                "model": c["model"] if c else None,
                "completion": c["text"] if c else None,
                "reward": float(rewards[i, j]) if c else None,
                "mean_reward": float(np.nanmean(rewards[i])) if c else None,
            }
        )
    atomic_write_jsonl(Path(out) if out else Path(run_dir) / "best.jsonl", rows)
    return rows
