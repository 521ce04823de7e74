"""The select stage: pick rows of the reward matrix with a strategy into ``select/selected.jsonl``,
and, when asked, preference pairs into ``select/pairs.jsonl``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from winnow import select as sel
from winnow.config import SelectConfig
from winnow.pool import load_pool_cells
from winnow.rundir import Stage
from winnow.stream import Cells, dedup_by_hash, load_scored_index, write_rows


def select(run_dir: str | Path, config: SelectConfig, *, pool: Mapping[int, str | Path] | None = None) -> dict:
    """Pick rows with a strategy and write ``select/selected.jsonl`` in TRL's
    conversational prompt-completion format, each row keyed and carrying its reward; with
    ``config.pairs``, also ``select/pairs.jsonl`` in TRL's conversational preference format.

    pool: scored round folders ``{round: folder}`` whose candidates are chosen among
    together (``winnow.pool``); each row (and each side of a pair) then also carries its
    round, and its sample index is the one within that round. None: run_dir's own candidates.
    """
    config.validate()
    columns: list[tuple[int, int]] | None = None
    # Streamed: the matrices and an index of where each completion lies are in memory; a
    # completion's row is read from its shard only when it is written out (``winnow.stream``).
    if pool is None:
        index, rewards, scored = load_scored_index(run_dir, hashes=config.dedup)
        cells = Cells([index])
        upstream: dict = {"score_hash": scored["config_hash"]}
    else:
        pooled = load_pool_cells(pool, hashes=config.dedup)
        rewards, columns, cells = pooled.rewards, pooled.columns, pooled.cells
        upstream = {"score_hashes": pooled.score_hashes}
    prompts, by_key = cells.prompts, cells.by_key()
    stage = Stage(run_dir, "select", {"select": asdict(config), **upstream})
    with stage:
        if stage.stored_manifest() and all(stage.matches(f) for f in stage.manifest()["files"]):
            return stage.manifest()
        removed: dict[str, int] = {}
        if config.drop_truncated:
            # NaN is "not a candidate" to every strategy, so a cut completion can be neither
            # selected nor one side of a pair.
            cut = cells.cut
            removed["truncated_dropped"] = int((cut & ~np.isnan(rewards)).sum())
            rewards = np.where(cut, np.nan, rewards)
        if config.dedup:
            assert cells.hashes is not None  # scanned with hashes=config.dedup
            deduped = dedup_by_hash(rewards, cells.hashes, cells.present)
            removed["duplicates_removed"] = int((np.isnan(deduped) & ~np.isnan(rewards)).sum())
            rewards = deduped
        picked = sel.apply(config.strategy, rewards, k=config.k, t=config.threshold, beta=config.beta, seed=config.seed)
        chosen_rewards: list[float] = []

        def selected_rows():
            for i, j in picked.tolist():
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
                chosen_rewards.append(row["reward"])
                yield row

        stage.claim()
        num_selected = write_rows(stage.dir / "selected.jsonl", selected_rows())
        summary: dict[str, Any] = {"num_selected": num_selected, **removed}
        summary["mean_selected_reward"] = float(np.mean(chosen_rewards)) if chosen_rewards else None
        if config.pairs:
            pairing = config.pairs
            margins: list[float] = []

            def pair_rows():
                for pair in iter_pairs(prompts, by_key, rewards, config, pairing, columns):
                    margins.append(pair["margin"])
                    yield pair

            summary["num_pairs"] = write_rows(stage.dir / "pairs.jsonl", pair_rows())
            summary["mean_margin"] = float(np.mean(margins)) if margins else None
        outputs = ["selected.jsonl"] + (["pairs.jsonl"] if config.pairs else [])
        cells.close()
        return stage.finish(outputs=outputs, **summary)


def preference_pairs(
    prompts,
    by_key: dict,
    rewards: np.ndarray,
    config: SelectConfig,
    pairing: str,
    columns: list[tuple[int, int]] | None = None,
) -> list[dict]:
    """Rows {"prompt", "chosen", "rejected"} (TRL's conversational preference format) with both
    rewards, the margin and where each side came from; pairs under ``min_margin`` or tied are left out.
    columns: pooled column -> (round, sample_index), for candidates pooled across rounds."""
    return list(iter_pairs(prompts, by_key, rewards, config, pairing, columns))


def iter_pairs(
    prompts,
    by_key: Mapping,
    rewards: np.ndarray,
    config: SelectConfig,
    pairing: str,
    columns: list[tuple[int, int]] | None = None,
) -> Iterator[dict]:
    """``preference_pairs`` one at a time, so pairs are written without being held together."""
    triples = sel.make_pairs(pairing, rewards, k=config.pair_k, beta=config.beta, seed=config.seed)
    for i, a, b in triples.tolist():
        margin = float(rewards[i, a] - rewards[i, b])
        if not margin > 0 or margin < config.min_margin:
            continue
        prompt, chosen, rejected = prompts[i], by_key[(prompts[i].id, a)], by_key[(prompts[i].id, b)]
        pair = {
            "prompt": prompt.as_messages(),
            "chosen": [{"role": "assistant", "content": chosen["text"]}],
            "rejected": [{"role": "assistant", "content": rejected["text"]}],
            "prompt_id": prompt.id,
            "chosen_index": a,
            "rejected_index": b,
            "chosen_model": chosen["model"],
            "rejected_model": rejected["model"],
            "chosen_reward": float(rewards[i, a]),
            "rejected_reward": float(rewards[i, b]),
            "margin": margin,
            "chosen_tokens": chosen["num_tokens"],
            "rejected_tokens": rejected["num_tokens"],
        }
        if columns is not None:  # provenance across rounds, as for selected rows
            (pair["chosen_round"], pair["chosen_index"]) = columns[a]
            (pair["rejected_round"], pair["rejected_index"]) = columns[b]
        yield pair
