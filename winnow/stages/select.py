"""The select stage: pick rows of the reward matrix with a strategy into ``select/selected.jsonl``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow.config import SelectConfig
from winnow.pool import load_pool
from winnow.records import atomic_write_jsonl
from winnow.rundir import Stage, load_scored


def select(run_dir: str | Path, config: SelectConfig, *, pool: Mapping[int, str | Path] | None = None) -> dict:
    """Pick rows with a strategy and write ``select/selected.jsonl`` in TRL's
    conversational prompt-completion format, each row keyed and carrying its reward.

    pool: scored round folders ``{round: folder}`` whose candidates are chosen among
    together (``winnow.pool``); each row then also carries its ``round``, and its
    ``sample_index`` is the one within that round. None: run_dir's own candidates.
    """
    config.validate()
    columns: list[tuple[int, int]] | None = None
    if pool is None:
        prompts, by_key, rewards, scored = load_scored(run_dir)
        upstream: dict = {"score_hash": scored["config_hash"]}
    else:
        pooled = load_pool(pool)
        prompts, by_key, rewards, columns = pooled.prompts, pooled.by_key, pooled.rewards, pooled.columns
        upstream = {"score_hashes": pooled.score_hashes}
    stage = Stage(run_dir, "select", {"select": asdict(config), **upstream})
    stage.begin()
    if stage.is_complete():
        return stage.manifest()
    if config.dedup:
        texts = [[by_key.get((p.id, j), {}).get("text") for j in range(rewards.shape[1])] for p in prompts]
        rewards = sel.dedup(rewards, texts)
    pairs = sel.apply(config.strategy, rewards, k=config.k, t=config.threshold, seed=config.seed)
    rows = []
    for i, j in pairs.tolist():
        prompt, completion = prompts[i], by_key[(prompts[i].id, j)]
        row = {
            "prompt": prompt.as_messages(),
            "completion": [{"role": "assistant", "content": completion["text"]}],
            "prompt_id": prompt.id,
            "sample_index": j,
            "model": completion["model"],
            "reward": float(rewards[i, j]),
        }
        if columns is not None:  # provenance: the round, and the sample's index within it
            row["round"], row["sample_index"] = columns[j]
        rows.append(row)
    stage.claim()
    atomic_write_jsonl(stage.dir / "selected.jsonl", rows)
    mean = float(np.mean([r["reward"] for r in rows])) if rows else None
    return stage.finish(num_selected=len(rows), mean_selected_reward=mean)
