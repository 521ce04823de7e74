"""The completion statistics of a report from arrays, in bounded memory.

``completion_stats`` takes a list of row dicts, texts included; a run of 10^6 prompts x 16
holds 16 million of them. Here the same numbers come from per-completion arrays (reward,
token count, cut, prompt row, text hash) in the order of the rows, and only distinct-n
reads texts: all of them while they hold at most ``DISTINCT_BYTES``, else a sample drawn
uniformly (seeded) of as many as fit in that, which the report states with its size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

DISTINCT_BYTES = 16 << 20
"""Bytes of completion rows distinct-n reads at most: its n-gram sets grow with the text
(about 0.3 GB for 16 MiB of English); beyond this it reads a uniform sample that fits."""


@dataclass
class CompletionArrays:
    """One set of completions (all, or selected), in row order; each array has shape (K,)."""

    rewards: np.ndarray  # float64, NaN = unscored
    tokens: np.ndarray  # int32 or int64
    cut: np.ndarray  # bool: not ended by the model (finish_reason other than "stop")
    prompt_row: np.ndarray  # int: matrix row of the completion's prompt
    hashes: np.ndarray  # uint64: text hash
    size: np.ndarray  # int: bytes of the completion's row (about its text's)
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
    total = int(c.size.sum(dtype=np.int64))
    if total <= DISTINCT_BYTES:
        picks = np.arange(count)
    else:
        take = max(1, int(count * DISTINCT_BYTES // total))
        picks = np.sort(np.random.default_rng(seed).choice(count, take, replace=False))
    distinct_1, distinct_2 = distinct_counts(c.text(int(k)) for k in picks)
    out = {
        "count": count,
        "scored": int(scored.size),
        "mean_reward": float(scored.mean()) if scored.size else float("nan"),
        "mean_tokens": float(np.mean(c.tokens)) if count else float("nan"),
        "truncated_share": float(np.mean(c.cut)) if count else float("nan"),
        "distinct_1": distinct_1,
        "distinct_2": distinct_2,
        "duplicates": repeated(c.prompt_row, c.hashes),
    }
    if picks.size < count:
        out["distinct_sample"] = int(picks.size)
    return out


def distinct_counts(texts: Iterable[str]) -> tuple[float, float]:
    """(distinct-1, distinct-2) of the texts, as ``stats.distinct_n`` counts them, in one pass
    that keeps only the distinct n-grams (not every n-gram of every text)."""
    unigrams: set[str] = set()
    bigrams: set[tuple[str, str]] = set()
    total_1 = total_2 = 0
    for text in texts:
        words = text.lower().split()
        unigrams.update(words)
        bigrams.update(pairwise(words))
        total_1 += len(words)
        total_2 += max(len(words) - 1, 0)
    return (
        len(unigrams) / total_1 if total_1 else float("nan"),
        len(bigrams) / total_2 if total_2 else float("nan"),
    )
