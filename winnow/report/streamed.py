"""The completion statistics of a report from arrays, in bounded memory.

``completion_stats`` takes a list of row dicts, texts included; a run of 10^6 prompts x 16
holds 16 million of them. Here the same numbers come from per-completion arrays (reward,
token count, cut, prompt row, text hash) in the order of the rows, and only distinct-n
reads texts: all of them while there are at most ``DISTINCT_SAMPLE``, else an evenly
drawn sample of that many (seeded), which the report states with its size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from winnow.report.stats import distinct_n

DISTINCT_SAMPLE = 10_000
"""Texts distinct-n is computed on exactly; beyond this, a sample of this many (its n-gram
sets grow with the text, about 0.5 GB at 10,000 texts of 300 words)."""


@dataclass
class CompletionArrays:
    """One set of completions (all, or selected), in row order; each array has shape (K,)."""

    rewards: np.ndarray  # float64, NaN = unscored
    tokens: np.ndarray  # int64
    cut: np.ndarray  # bool: finish_reason "length"
    prompt_row: np.ndarray  # int64: matrix row of the completion's prompt
    hashes: np.ndarray  # uint64: text hash
    text: Callable[[int], str]
    """The text of completion k, read from its shard."""


def repeated(prompt_row: np.ndarray, hashes: np.ndarray) -> int:
    """Completions whose text repeats an earlier one's for the same prompt (``stats.duplicates``)."""
    if prompt_row.size < 2:
        return 0
    order = np.lexsort((hashes, prompt_row))
    rows, keys = prompt_row[order], hashes[order]
    return int(((rows[1:] == rows[:-1]) & (keys[1:] == keys[:-1])).sum())


def array_stats(c: CompletionArrays, *, seed: int = 0) -> dict:
    """``stats.completion_stats`` of the arrays: the same keys and, summed in the same order,
    the same values; with ``distinct_sample`` added when distinct-n was computed on a sample."""
    count = int(c.rewards.size)
    scored = c.rewards[~np.isnan(c.rewards)]
    if count <= DISTINCT_SAMPLE:
        picks = np.arange(count)
    else:
        picks = np.sort(np.random.default_rng(seed).choice(count, DISTINCT_SAMPLE, replace=False))
    texts = [c.text(int(k)) for k in picks]
    out = {
        "count": count,
        "scored": int(scored.size),
        "mean_reward": float(scored.mean()) if scored.size else float("nan"),
        "mean_tokens": float(np.mean(c.tokens)) if count else float("nan"),
        "truncated_share": float(np.mean(c.cut)) if count else float("nan"),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "duplicates": repeated(c.prompt_row, c.hashes),
    }
    if count > DISTINCT_SAMPLE:
        out["distinct_sample"] = DISTINCT_SAMPLE
    return out
