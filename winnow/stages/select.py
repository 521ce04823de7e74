"""The select stage: pick rows of the reward matrix with a strategy into ``select/selected.jsonl``,
and, when asked, preference pairs into ``select/pairs.jsonl``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from winnow import select as sel
from winnow.config import PAIRING_NEEDS, STRATEGY_NEEDS, SelectConfig
from winnow.errors import WinnowError
from winnow.pool import load_pool_cells
from winnow.rundir import Stage
from winnow.stream import Cells, dedup_by_hash, load_scored_index, write_rows


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
    # strategy passing wants distinct passing texts: repeats are dropped as with --dedup
    dedup = config.dedup or config.strategy == "passing"
    # Streamed: the matrices and an index of where each completion lies are in memory; a
    # completion's row is read from its shard only when it is written out (``winnow.stream``).
    if pool is None:
        index, rewards, scored = load_scored_index(run_dir, hashes=dedup)
        cells = Cells([index])
        upstream: dict = {"score_hash": scored["config_hash"]}
        score_threshold = (scored["config"].get("score") or {}).get("pass_threshold")
    else:
        pooled = load_pool_cells(pool, hashes=dedup)
        rewards, columns, cells = pooled.rewards, pooled.columns, pooled.cells
        upstream = {"score_hashes": pooled.score_hashes}
    prompts, by_key = cells.prompts, cells.by_key()
    pass_threshold = config.pass_threshold if config.pass_threshold is not None else score_threshold
    check_pass_threshold(config, pass_threshold)
    stage = Stage(run_dir, "select", folder_config(config, upstream))
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
        if config.min_pass_rate is not None or config.max_pass_rate is not None:
            # Whole prompts leave: their samples become NaN, so no strategy or pairing sees them.
            assert pass_threshold is not None  # check_pass_threshold saw to it
            keep = sel.pass_rate_keep(rewards, pass_threshold, config.min_pass_rate, config.max_pass_rate)
            removed["prompts_outside_pass_rate"] = int((~keep).sum())
            rewards = np.where(keep[:, None], rewards, np.nan)
        if dedup:
            assert cells.hashes is not None  # scanned with hashes=dedup
            deduped = dedup_by_hash(rewards, cells.hashes, cells.present)
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
                if prompt.columns:  # the prompt row's other columns, nested so none can shadow a key above
                    row["columns"] = prompt.columns
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
                for pair in iter_pairs(prompts, by_key, rewards, config, pairing, columns, pass_threshold):
                    margins.append(pair["margin"])
                    yield pair

            summary["num_pairs"] = write_rows(stage.dir / "pairs.jsonl", pair_rows())
            summary["mean_margin"] = float(np.mean(margins)) if margins else None
        outputs = ["selected.jsonl"] + (["pairs.jsonl"] if config.pairs else [])
        cells.close()
        return stage.finish(outputs=outputs, **summary)


def folder_config(config: SelectConfig, upstream: dict) -> dict:
    """The stage's ``config.json``: the options and the score stage(s) chosen from
    (``{"score_hash": h}``, or ``{"score_hashes": {round: h}}`` over a pool)."""
    return {"select": config.stage_config(), **upstream}


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
    return list(iter_pairs(prompts, by_key, rewards, config, pairing, columns, pass_threshold))


def iter_pairs(
    prompts,
    by_key: Mapping,
    rewards: np.ndarray,
    config: SelectConfig,
    pairing: str,
    columns: list[tuple[int, int]] | None = None,
    pass_threshold: float | None = None,
) -> Iterator[dict]:
    """``preference_pairs`` one at a time, so pairs are written without being held together."""
    triples = sel.make_pairs(
        pairing, rewards, k=config.pair_k, beta=config.beta, seed=config.seed, pass_threshold=pass_threshold
    )
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
        if prompt.columns:
            pair["columns"] = prompt.columns
        yield pair


def check_pass_threshold(config: SelectConfig, pass_threshold: float | None) -> None:
    """Options that test passing need a threshold: from select, else from the score stage."""
    users = []
    if "pass_threshold" in STRATEGY_NEEDS[config.strategy]:
        users.append(f"strategy {config.strategy}")
    if config.pairs and "pass_threshold" in PAIRING_NEEDS[config.pairs]:
        users.append(f"pairs {config.pairs}")
    if config.min_pass_rate is not None or config.max_pass_rate is not None:
        users.append("the pass-rate filter")
    if users and pass_threshold is None:
        raise WinnowError(
            f"select.pass_threshold: {' and '.join(users)} needs a pass threshold "
            "(--pass-threshold on select, or on the score stage)"
        )
