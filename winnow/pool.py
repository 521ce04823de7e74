"""The scored candidates of several rounds as one reward matrix, for selection across rounds.

Llama 2's iterative rejection sampling chooses, for each prompt, among the samples of every
round so far. Each round's folder holds its own (M, C_r) matrix; the pool puts them side by
side, round by round, into one (M, C_1 + ... + C_R) matrix, and keeps for every pooled
column the (round, sample_index) it came from, so a selected row names its provenance.
Ties go to the earlier column, hence to the earlier round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow.errors import WinnowError
from winnow.records import Prompt
from winnow.rundir import load_scored
from winnow.stream import Cells, CompletionIndex, load_scored_index


@dataclass
class Pool:
    prompts: list[Prompt]
    """The matrix rows, in the order every round's ``generate/prompts.jsonl`` shares."""
    rewards: np.ndarray
    """float64 (M, C): the rounds' matrices side by side, NaN = unscored."""
    columns: list[tuple[int, int]]
    """Pooled column -> (round, sample_index within that round); length C."""
    by_key: dict[tuple[str, int], dict]
    """(prompt_id, pooled column) -> the completion row (its own ``sample_index`` unchanged)."""
    score_hashes: dict[str, str]
    """Config hash of each round's score manifest, by round (str keys, as in JSON)."""


def load_pool(rounds: Mapping[int, str | Path]) -> Pool:
    """Pool the scored round folders ``{round: folder}``; every round must have the same prompts."""
    if not rounds:
        raise WinnowError("no rounds to pool")
    prompts: list[Prompt] = []
    blocks: list[np.ndarray] = []
    columns: list[tuple[int, int]] = []
    by_key: dict[tuple[str, int], dict] = {}
    hashes: dict[str, str] = {}
    for r, folder in sorted(rounds.items()):
        round_prompts, round_by_key, rewards, scored = load_scored(folder)
        if not blocks:
            prompts = round_prompts
        elif [p.id for p in round_prompts] != [p.id for p in prompts]:
            raise WinnowError(f"{folder}: round {r} has other prompts than round {min(rounds)}; cannot pool them")
        offset = len(columns)
        columns += [(r, j) for j in range(rewards.shape[1])]
        for (prompt_id, j), row in round_by_key.items():
            by_key[(prompt_id, offset + j)] = row
        blocks.append(rewards)
        hashes[str(r)] = scored["config_hash"]
    return Pool(prompts, np.concatenate(blocks, axis=1), columns, by_key, hashes)


@dataclass
class PoolCells:
    """``Pool`` streamed: the same matrix and columns, the completions as ``Cells`` (numbers
    in memory, each row read from its shard when asked) instead of a dict of every row."""

    prompts: list[Prompt]
    rewards: np.ndarray
    columns: list[tuple[int, int]]
    cells: Cells
    score_hashes: dict[str, str]


def load_pool_cells(rounds: Mapping[int, str | Path], *, hashes: bool = False) -> PoolCells:
    """``load_pool`` without holding texts: every round must have the same prompts.

    hashes: also hash every text (for dedup)."""
    if not rounds:
        raise WinnowError("no rounds to pool")
    parts: list[CompletionIndex] = []
    blocks: list[np.ndarray] = []
    columns: list[tuple[int, int]] = []
    score_hashes: dict[str, str] = {}
    for r, folder in sorted(rounds.items()):
        index, rewards, scored = load_scored_index(folder, hashes=hashes)
        if parts and [p.id for p in index.prompts] != [p.id for p in parts[0].prompts]:
            raise WinnowError(f"{folder}: round {r} has other prompts than round {min(rounds)}; cannot pool them")
        columns += [(r, j) for j in range(rewards.shape[1])]
        parts.append(index)
        blocks.append(rewards)
        score_hashes[str(r)] = scored["config_hash"]
    return PoolCells(parts[0].prompts, np.concatenate(blocks, axis=1), columns, Cells(parts), score_hashes)
