"""The select stage: pick rows of the reward matrix with a strategy into ``select/selected.jsonl``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow.config import SelectConfig
from winnow.records import atomic_write_jsonl
from winnow.rundir import Stage, load_scored


def select(run_dir: str | Path, config: SelectConfig) -> dict:
    """Pick rows with a strategy and write ``select/selected.jsonl`` in TRL's
    conversational prompt-completion format, each row keyed and carrying its reward."""
    config.validate()
    prompts, by_key, rewards, scored = load_scored(run_dir)
    stage = Stage(run_dir, "select", {"select": asdict(config), "score_hash": scored["config_hash"]})
    with stage:
        if stage.stored_manifest() and stage.matches("selected.jsonl"):
            return stage.manifest()
        if config.dedup:
            texts = [[by_key.get((p.id, j), {}).get("text") for j in range(rewards.shape[1])] for p in prompts]
            rewards = sel.dedup(rewards, texts)
        pairs = sel.apply(config.strategy, rewards, k=config.k, t=config.threshold, seed=config.seed)
        rows = []
        for i, j in pairs.tolist():
            prompt, completion = prompts[i], by_key[(prompts[i].id, j)]
            rows.append(
                {
                    "prompt": prompt.as_messages(),
                    "completion": [{"role": "assistant", "content": completion["text"]}],
                    "prompt_id": prompt.id,
                    "sample_index": j,
                    "model": completion["model"],
                    "reward": float(rewards[i, j]),
                }
            )
        stage.claim()
        atomic_write_jsonl(stage.dir / "selected.jsonl", rows)
        mean = float(np.mean([r["reward"] for r in rows])) if rows else None
        return stage.finish(outputs=["selected.jsonl"], num_selected=len(rows), mean_selected_reward=mean)
