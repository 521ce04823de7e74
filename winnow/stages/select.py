"""The select stage: pick rows of the reward matrix with a strategy into ``select/selected.jsonl``,
and, when asked, preference pairs into ``select/pairs.jsonl``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from winnow import select as sel
from winnow.config import PAIRING_NEEDS, STRATEGY_NEEDS, SelectConfig
from winnow.decontaminate import EvalIndex, file_sha256, minhash, near_duplicates
from winnow.errors import WinnowError
from winnow.pool import load_pool_cells
from winnow.rundir import Stage
from winnow.stream import Cells, dedup_by_hash, load_scored_index, write_rows


@dataclass
class Candidates:
    """What the stage chooses among: the (M, C) reward matrix, the completions behind its
    cells, and the score stage(s) it came from.

    columns: pooled column -> (round, sample_index), or None for run_dir's own candidates.
    upstream: ``{"score_hash": h}``, or ``{"score_hashes": {round: h}}`` over a pool.
    score_threshold: the score stage's ``pass_threshold`` (None over a pool, or when unset).
    """

    rewards: np.ndarray
    cells: Cells
    columns: list[tuple[int, int]] | None
    upstream: dict
    score_threshold: float | None


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
    # strategy passing wants distinct passing texts: repeats are dropped as with --dedup
    dedup = config.dedup or config.strategy == "passing"
    found = load_candidates(run_dir, pool, dedup=dedup)
    cells = found.cells
    pass_threshold = config.pass_threshold if config.pass_threshold is not None else found.score_threshold
    check_pass_threshold(config, pass_threshold)
    stage = Stage(run_dir, "select", folder_config(config, found.upstream))
    with stage:
        if stage.stored_manifest() and all(stage.matches(f) for f in stage.manifest()["files"]):
            return stage.manifest()
        rewards, removed = drop_candidates(found.rewards, cells, config, pass_threshold, dedup=dedup)
        if config.decontaminate:
            rewards, found_out = drop_contaminated(rewards, cells, config)
            removed.update(found_out)

        def pick(rewards: np.ndarray) -> np.ndarray:
            return sel.apply(
                config.strategy,
                rewards,
                k=config.k,
                t=config.threshold,
                beta=config.beta,
                seed=config.seed,
                pass_threshold=pass_threshold,
            )

        picked = pick(rewards)
        if config.near_dedup:
            rewards, picked, near = drop_near_duplicates(rewards, picked, cells, config.near_dedup_threshold, pick)
            removed.update(near)
        stage.claim()
        num_selected, mean_reward = write_selected(stage.dir, picked, rewards, cells, found.columns)
        summary: dict[str, Any] = {"num_selected": num_selected, **removed, "mean_selected_reward": mean_reward}
        if config.pairs:
            pairs = iter_pairs(
                cells.prompts, cells.by_key(), rewards, config, config.pairs, found.columns, pass_threshold
            )
            summary.update(write_pairs(stage.dir, pairs))
        outputs = ["selected.jsonl"] + (["pairs.jsonl"] if config.pairs else [])
        cells.close()
        return stage.finish(outputs=outputs, **summary)


def load_candidates(run_dir: str | Path, pool: Mapping[int, str | Path] | None, *, dedup: bool) -> Candidates:
    """The reward matrix and its completions, streamed: the matrices and an index of where
    each completion lies are in memory; a completion's row is read from its shard only when
    it is written out (``winnow.stream``). dedup: also hash every text."""
    if pool is None:
        index, rewards, scored = load_scored_index(run_dir, hashes=dedup)
        score_threshold = (scored["config"].get("score") or {}).get("pass_threshold")
        return Candidates(rewards, Cells([index]), None, {"score_hash": scored["config_hash"]}, score_threshold)
    pooled = load_pool_cells(pool, hashes=dedup)
    return Candidates(pooled.rewards, pooled.cells, pooled.columns, {"score_hashes": pooled.score_hashes}, None)


def drop_candidates(
    rewards: np.ndarray, cells: Cells, config: SelectConfig, pass_threshold: float | None, *, dedup: bool
) -> tuple[np.ndarray, dict[str, int]]:
    """The (M, C) rewards with the cells the options rule out set to NaN, which is "not a
    candidate" to every strategy and pairing, and how many each option removed:
    ``truncated_dropped`` (cut completions), ``prompts_outside_pass_rate`` (whole prompts),
    ``duplicates_removed`` (repeated texts), each key present only when its option is on."""
    removed: dict[str, int] = {}
    if config.drop_truncated:
        # a cut completion can be neither selected nor one side of a pair
        cut = cells.cut
        removed["truncated_dropped"] = int((cut & ~np.isnan(rewards)).sum())
        rewards = np.where(cut, np.nan, rewards)
    if config.min_pass_rate is not None or config.max_pass_rate is not None:
        assert pass_threshold is not None  # check_pass_threshold saw to it
        keep = sel.pass_rate_keep(rewards, pass_threshold, config.min_pass_rate, config.max_pass_rate)
        removed["prompts_outside_pass_rate"] = int((~keep).sum())
        rewards = np.where(keep[:, None], rewards, np.nan)
    if dedup:
        assert cells.hashes is not None  # scanned with hashes=dedup
        deduped = dedup_by_hash(rewards, cells.hashes, cells.present)
        removed["duplicates_removed"] = int((np.isnan(deduped) & ~np.isnan(rewards)).sum())
        rewards = deduped
    return rewards, removed


MATCHES_SHOWN = 5
"""Matches the manifest keeps (and the report shows) of each filter: the first ones found."""


def drop_contaminated(rewards: np.ndarray, cells: Cells, config: SelectConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """The (M, C) rewards with every candidate sharing a ``decontaminate_ngram``-gram with an
    eval item set to NaN: a contaminated prompt's whole row, else each contaminated completion
    (so selection takes the prompt's next-best clean one). Every candidate (a scored cell) is
    read once, in row then column order. Returns the counts ``contaminated_prompts`` and
    ``contaminated_completions`` (outside those prompts) and ``contamination_matches``, the
    first ``MATCHES_SHOWN``: ``{"prompt_id", "sample_index" (None for the prompt), "eval_item",
    "ngram"}``."""
    assert config.decontaminate is not None
    index = EvalIndex.build(config.decontaminate, config.decontaminate_ngram)
    rewards = rewards.copy()
    matches: list[dict] = []
    prompts_out = completions_out = 0
    for i, prompt in enumerate(cells.prompts):
        alive = np.flatnonzero(~np.isnan(rewards[i]))
        if not len(alive):
            continue
        text = "\n".join(prompt.texts())  # a vision-language prompt's text parts too
        found = index.find(text)
        if found is not None:
            prompts_out += 1
            rewards[i] = np.nan
            matches.append(
                {"prompt_id": prompt.id, "sample_index": None, "eval_item": found.item, "ngram": found.ngram}
            )
            continue
        for j in alive.tolist():
            row = cells.row(i, j)
            found = index.find(row["text"]) if row is not None else None
            if found is not None:
                completions_out += 1
                rewards[i, j] = np.nan
                matches.append(
                    {"prompt_id": prompt.id, "sample_index": j, "eval_item": found.item, "ngram": found.ngram}
                )
    return rewards, {
        "contaminated_prompts": prompts_out,
        "contaminated_completions": completions_out,
        "contamination_matches": matches[:MATCHES_SHOWN],
    }


def drop_near_duplicates(
    rewards: np.ndarray, picked: np.ndarray, cells: Cells, threshold: float, pick
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Drop selected completions that are near-duplicates of earlier selected ones (in pick
    order, ``winnow.decontaminate.near_duplicates``) and select again, until the picks hold
    none: each pass NaNs at least one cell, so it ends; the same inputs give the same passes.
    A completion's MinHash is computed once (512 bytes of signature and 1 KB of object a
    selected cell). pick: (M, C) rewards -> (n, 2) picks, the stage's strategy.
    Returns the rewards, the final picks, ``near_duplicates_removed`` and
    ``near_duplicate_matches`` (the first ``MATCHES_SHOWN`` found:
    ``{"prompt_id", "sample_index", "like_prompt_id", "like_sample_index", "jaccard"}``)."""
    rewards = rewards.copy()
    signatures: dict[tuple[int, int], Any] = {}
    removed, matches = 0, []  # type: tuple[int, list[dict]]
    while True:
        keys = [(i, j) for i, j in picked.tolist()]
        for key in keys:
            if key not in signatures:
                row = cells.row(*key)
                signatures[key] = minhash(row["text"] if row is not None else "")
        dropped = near_duplicates(keys, signatures, threshold)
        if not dropped:
            break
        for (i, j), (a, b), jaccard in dropped:
            rewards[i, j] = np.nan
            if len(matches) < MATCHES_SHOWN:
                matches.append(
                    {
                        "prompt_id": cells.prompts[i].id,
                        "sample_index": j,
                        "like_prompt_id": cells.prompts[a].id,
                        "like_sample_index": b,
                        "jaccard": round(float(jaccard), 4),
                    }
                )
        removed += len(dropped)
        picked = pick(rewards)
    return rewards, picked, {"near_duplicates_removed": removed, "near_duplicate_matches": matches}


def write_selected(
    folder: Path, picked: np.ndarray, rewards: np.ndarray, cells: Cells, columns: list[tuple[int, int]] | None
) -> tuple[int, float | None]:
    """Write ``selected.jsonl``, a row per picked (prompt row, column) pair of ``picked``
    (shape (n, 2)), in pick order; return how many rows and their mean reward (None when
    nothing was picked)."""
    prompts, by_key = cells.prompts, cells.by_key()
    chosen_rewards: list[float] = []

    def rows() -> Iterator[dict]:
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
            if prompt.images:  # TRL's images column: run-dir paths, one per {"type": "image"} part
                row["images"] = [image.path for image in prompt.images]
            chosen_rewards.append(row["reward"])
            yield row

    num_selected = write_rows(folder / "selected.jsonl", rows())
    return num_selected, float(np.mean(chosen_rewards)) if chosen_rewards else None


def write_pairs(folder: Path, pairs: Iterator[dict]) -> dict[str, Any]:
    """Write ``pairs.jsonl``, one row per pair as it comes; return ``num_pairs`` and
    ``mean_margin`` (None when there is no pair)."""
    margins: list[float] = []

    def rows() -> Iterator[dict]:
        for pair in pairs:
            margins.append(pair["margin"])
            yield pair

    num_pairs = write_rows(folder / "pairs.jsonl", rows())
    return {"num_pairs": num_pairs, "mean_margin": float(np.mean(margins)) if margins else None}


def folder_config(config: SelectConfig, upstream: dict) -> dict:
    """The stage's ``config.json``: the options, the sha256 of each eval file (so a changed
    file refuses resume) and the score stage(s) chosen from (``{"score_hash": h}``, or
    ``{"score_hashes": {round: h}}`` over a pool)."""
    digests = {"eval_sha256": [file_sha256(p) for p in config.decontaminate]} if config.decontaminate else {}
    return {"select": config.stage_config(), **digests, **upstream}


def iter_pairs(
    prompts,
    by_key: Mapping,
    rewards: np.ndarray,
    config: SelectConfig,
    pairing: str,
    columns: list[tuple[int, int]] | None = None,
    pass_threshold: float | None = None,
) -> Iterator[dict]:
    """Rows {"prompt", "chosen", "rejected"} (TRL's conversational preference format) with
    both rewards, the margin and where each side came from, one at a time, so pairs are
    written without being held together; pairs under ``min_margin`` or tied are left out.
    columns: pooled column -> (round, sample_index), for candidates pooled across rounds."""
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
        if prompt.images:
            pair["images"] = [image.path for image in prompt.images]
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
