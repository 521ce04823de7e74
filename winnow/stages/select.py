"""The select stage: pick rows of the reward matrix with a strategy into ``select/selected.jsonl``,
and, when asked, preference pairs into ``select/pairs.jsonl``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow import select as sel
from winnow.config import SelectConfig
from winnow.errors import WinnowError
from winnow.pool import load_pool
from winnow.records import atomic_write_jsonl
from winnow.rundir import Stage, load_scored


def select(run_dir: str | Path, config: SelectConfig, *, pool: Mapping[int, str | Path] | None = None) -> dict:
    """Pick rows with a strategy and write ``select/selected.jsonl`` in TRL's
    conversational prompt-completion format, each row keyed and carrying its reward (and,
    under ``columns``, the prompt row's other columns, when it has any); with
    ``config.pairs``, also ``select/pairs.jsonl`` in TRL's conversational preference format.

    pool: scored round folders ``{round: folder}`` whose candidates are chosen among
    together (``winnow.pool``); each row (and each side of a pair) then also carries its
    round, and its sample index is the one within that round. None: run_dir's own candidates.
    """
    config.validate()
    columns: list[tuple[int, int]] | None = None
    score_threshold = None
    if pool is None:
        prompts, by_key, rewards, scored = load_scored(run_dir)
        upstream: dict = {"score_hash": scored["config_hash"]}
        score_threshold = (scored["config"].get("score") or {}).get("pass_threshold")
    else:
        pooled = load_pool(pool)
        prompts, by_key, rewards, columns = pooled.prompts, pooled.by_key, pooled.rewards, pooled.columns
        upstream = {"score_hashes": pooled.score_hashes}
    pass_threshold = config.pass_threshold if config.pass_threshold is not None else score_threshold
    _check_pass_threshold(config, pass_threshold)
    stage = Stage(run_dir, "select", {"select": config.stage_config(), **upstream})
    with stage:
        if stage.stored_manifest() and all(stage.matches(f) for f in stage.manifest()["files"]):
            return stage.manifest()
        removed: dict[str, int] = {}
        if config.drop_truncated:
            # NaN is "not a candidate" to every strategy, so a cut completion can be neither
            # selected nor one side of a pair.
            cut = np.array(
                [
                    [by_key.get((p.id, j), {}).get("finish_reason") == "length" for j in range(rewards.shape[1])]
                    for p in prompts
                ],
                dtype=bool,
            ).reshape(rewards.shape)
            removed["truncated_dropped"] = int((cut & ~np.isnan(rewards)).sum())
            rewards = np.where(cut, np.nan, rewards)
        if config.min_pass_rate is not None or config.max_pass_rate is not None:
            # Whole prompts leave: their samples become NaN, so no strategy or pairing sees them.
            assert pass_threshold is not None  # _check_pass_threshold saw to it
            keep = sel.pass_rate_keep(rewards, pass_threshold, config.min_pass_rate, config.max_pass_rate)
            removed["prompts_outside_pass_rate"] = int((~keep).sum())
            rewards = np.where(keep[:, None], rewards, np.nan)
        # strategy passing wants distinct passing texts: repeats are dropped as with --dedup
        if config.dedup or config.strategy == "passing":
            texts = [[by_key.get((p.id, j), {}).get("text") for j in range(rewards.shape[1])] for p in prompts]
            deduped = sel.dedup(rewards, texts)
            removed["duplicates_removed"] = int((np.isnan(deduped) & ~np.isnan(rewards)).sum())
            rewards = deduped
        picked = sel.apply(
            config.strategy,
            rewards,
            k=config.k,
            t=config.threshold,
            beta=config.beta,
            seed=config.seed,
            pass_threshold=pass_threshold,
        )
        rows = []
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
            if prompt.columns:  # the prompt row's other columns, nested so none can shadow a key above
                row["columns"] = prompt.columns
            rows.append(row)
        pairs = None
        if config.pairs:
            pairs = preference_pairs(prompts, by_key, rewards, config, config.pairs, columns, pass_threshold)
        stage.claim()
        atomic_write_jsonl(stage.dir / "selected.jsonl", rows)
        summary: dict[str, Any] = {"num_selected": len(rows), **removed}
        summary["mean_selected_reward"] = float(np.mean([r["reward"] for r in rows])) if rows else None
        if pairs is not None:
            atomic_write_jsonl(stage.dir / "pairs.jsonl", pairs)
            summary["num_pairs"] = len(pairs)
            summary["mean_margin"] = float(np.mean([p["margin"] for p in pairs])) if pairs else None
        outputs = ["selected.jsonl"] + (["pairs.jsonl"] if pairs is not None else [])
        return stage.finish(outputs=outputs, **summary)


def preference_pairs(
    prompts,
    by_key: dict,
    rewards: np.ndarray,
    config: SelectConfig,
    pairing: str,
    columns: list[tuple[int, int]] | None = None,
    pass_threshold: float | None = None,
) -> list[dict]:
    """Rows {"prompt", "chosen", "rejected"} (TRL's conversational preference format) with both
    rewards, the margin and where each side came from; pairs under ``min_margin`` or tied are left out.
    columns: pooled column -> (round, sample_index), for candidates pooled across rounds."""
    triples = sel.make_pairs(
        pairing, rewards, k=config.pair_k, beta=config.beta, seed=config.seed, pass_threshold=pass_threshold
    )
    out = []
    for i, a, b in triples.tolist():
        margin = float(rewards[i, a] - rewards[i, b])
        if not margin > 0 or margin < config.min_margin:
            continue
        prompt, chosen, rejected = prompts[i], by_key[(prompts[i].id, a)], by_key[(prompts[i].id, b)]
        out.append(
            {
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
        )
        if columns is not None:  # provenance across rounds, as for selected rows
            (out[-1]["chosen_round"], out[-1]["chosen_index"]) = columns[a]
            (out[-1]["rejected_round"], out[-1]["rejected_index"]) = columns[b]
        if prompt.columns:
            out[-1]["columns"] = prompt.columns
    return out


def _check_pass_threshold(config: SelectConfig, pass_threshold: float | None) -> None:
    """Options that test passing need a threshold: from select, else from the score stage."""
    users = []
    if "pass_threshold" in sel.STRATEGIES[config.strategy].needs:
        users.append(f"strategy {config.strategy}")
    if config.pairs and "pass_threshold" in sel.PAIRING_NEEDS[config.pairs]:
        users.append(f"pairs {config.pairs}")
    if config.min_pass_rate is not None or config.max_pass_rate is not None:
        users.append("the pass-rate filter")
    if users and pass_threshold is None:
        raise WinnowError(
            f"select.pass_threshold: {' and '.join(users)} needs a pass threshold "
            "(--pass-threshold on select, or on the score stage)"
        )
