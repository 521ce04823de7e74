"""The numbers of a report: bootstrap intervals, the best-of-n curve and its KL, diversity.

Pure numpy, no files: ``winnow.report.run`` reads a run directory and calls these.
"""

from __future__ import annotations

from math import comb

import numpy as np

from winnow.replies import ended_on_its_own


def paired_bootstrap(
    before: np.ndarray, after: np.ndarray, *, iters: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of mean(after - before), resampling prompts.

    before, after: shape (P,), the per-prompt mean reward of each model on the same
    prompts; resampling whole prompts keeps their pairing.
    """
    diff = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(iters, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def best_of_n_rows(rewards: np.ndarray) -> np.ndarray:
    """Each fully scored row's expected best reward of n samples drawn without replacement.

    rewards: shape (M, N). Rows with any NaN are left out (their n would differ). Uses the
    unbiased order-statistic estimator: with a row sorted ascending,
    E[max of n] = sum_i C(i, n-1) / C(N, n) * r_(i), i = 0..N-1. Returns shape (M', N),
    column n-1 holding best-of-n; M' is the number of fully scored rows.
    """
    rewards = np.asarray(rewards, dtype=float)
    rows = np.sort(rewards[~np.isnan(rewards).any(axis=1)], axis=1)
    big_n = rows.shape[1]
    # weights[i, n-1] = C(i, n-1) / C(N, n): the chance that sorted sample i is the max of n.
    weights = np.array(
        [[comb(i, n - 1) / comb(big_n, n) for n in range(1, big_n + 1)] for i in range(big_n)], dtype=float
    )
    return rows @ weights


def best_of_n_curve(rewards: np.ndarray) -> np.ndarray:
    """Expected best reward of n samples per prompt, n = 1..N, averaged over fully scored
    rows (see ``best_of_n_rows``): shape (N,), NaN where no row is fully scored."""
    rows = best_of_n_rows(rewards)
    if rows.shape[0] == 0:
        return np.full(rows.shape[1], np.nan)
    return rows.mean(axis=0)


def best_of_n_band(
    rewards: np.ndarray, *, iters: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap band of ``best_of_n_curve``, resampling prompts: (low, high), each (N,).

    The estimator is exact for the N samples at hand, so the band is the uncertainty that
    comes from which prompts were drawn. Costs O(iters * M' * N) in blocks of up to 256 resamples.
    """
    rows = best_of_n_rows(rewards)
    m, big_n = rows.shape
    if m == 0:
        return np.full(big_n, np.nan), np.full(big_n, np.nan)
    rng = np.random.default_rng(seed)
    means = np.full((iters, big_n), np.nan)  # a resample left unfilled would show, as NaN
    # At most 2^22 counts (32 MB) a block: 256 resamples of 10^6 prompts would take 2 GB.
    # The draws are the same whatever the block size (multinomial draws row after row).
    block = max(1, min(256, (1 << 22) // m))
    for start in range(0, iters, block):
        size = min(block, iters - start)
        # How often each prompt is drawn in each resample: a multinomial count, so the mean
        # is one matrix product and no (iters, M, N) array is ever built.
        counts = rng.multinomial(m, np.full(m, 1.0 / m), size=size)
        means[start : start + size] = counts @ rows / m
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


def best_of_n_kl(n):
    """The analytic KL(best-of-n || policy) = log n - (n - 1) / n, in nats; n >= 1, int or array.

    Beirami et al. (2024), "Theoretical guarantees on the best-of-n alignment policy", show
    this long-quoted formula is an upper bound on the true KL, tight only when the policy's
    outputs have negligible probability each; the true KL can be much smaller. Read the
    curve's reward against it as "at most this far from the policy".
    """
    n = np.asarray(n, dtype=float)
    if np.any(n < 1):
        raise ValueError(f"n must be >= 1, got {n}")
    kl = np.log(n) - (n - 1) / n
    return float(kl) if kl.ndim == 0 else kl


def distinct_n(texts, n: int) -> float:
    """Distinct-n of a set of texts: distinct n-grams / all n-grams, pooled over the texts.

    Words are lower-cased, whitespace-separated tokens (Li et al. 2016 count tokens the
    same way). 1.0 means no n-gram repeats; NaN when the texts hold no n-gram at all.
    It falls as a set grows (more chances to repeat), so a small selected set scores higher
    than the whole pool for that reason alone: compare sets of similar size.
    """
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else float("nan")


def duplicates(rows) -> int:
    """Rows whose text repeats an earlier row's text for the same prompt (what dedup drops)."""
    seen: set[tuple[str, str]] = set()
    count = 0
    for row in rows:
        key = (row["prompt_id"], row["text"])
        count += key in seen
        seen.add(key)
    return count


def completion_stats(rows) -> dict:
    """Summary of a set of completions, each a dict with ``prompt_id``, ``text``,
    ``num_tokens``, ``finish_reason`` and ``reward`` (None or NaN = unscored).

    Returns count, mean_reward (over scored rows), mean_tokens, truncated_share (not ended
    by the model: cut by max_new_tokens, "length", or ended by a server, "content_filter",
    "abort", "other"), distinct_1, distinct_2 and duplicates. A
    statistic with no rows to average is NaN.
    """
    rows = list(rows)
    rewards = np.array([np.nan if r["reward"] is None else r["reward"] for r in rows], dtype=float)
    scored = rewards[~np.isnan(rewards)]
    texts = [r["text"] for r in rows]
    return {
        "count": len(rows),
        "scored": int(scored.size),
        "mean_reward": float(scored.mean()) if scored.size else float("nan"),
        "mean_tokens": float(np.mean([r["num_tokens"] for r in rows])) if rows else float("nan"),
        "truncated_share": float(np.mean([not ended_on_its_own(r["finish_reason"]) for r in rows]))
        if rows
        else float("nan"),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "duplicates": duplicates(rows),
    }
