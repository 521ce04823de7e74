"""Pass statistics of a run scored against a pass threshold: pass@k, maj@k, weighted@k, solved shares.

Pure numpy, no files. ``passed`` is bool (M, N): sample j of prompt i passed (reward >= t).
Only fully scored rows enter pass@k (their n must be the same N, as for best-of-n).
"""

from __future__ import annotations

import numpy as np

from winnow import select as sel
from winnow.report.votes import vote_at_k, vote_rows

__all__ = ["bootstrap_band", "pass_at_k", "pass_at_k_rows", "pass_stats", "solved_shares", "vote_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), for n samples of
    which c passed, 1 <= k <= n. Computed as 1 - prod_{i=n-c+1..n} (1 - k/i) (their stable form).

    >>> [round(pass_at_k(5, c, k), 4) for c, k in ((2, 1), (2, 2), (0, 3), (5, 5), (1, 5))]
    [0.4, 0.7, 0.0, 1.0, 1.0]
    """
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"need 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_rows(passed: np.ndarray) -> np.ndarray:
    """pass@k of each row for k = 1..N: float (M, N), column k-1 holding pass@k."""
    passed = np.asarray(passed, dtype=bool)
    m, n = passed.shape
    counts = passed.sum(axis=1)
    return np.array([[pass_at_k(n, int(c), k) for k in range(1, n + 1)] for c in counts], dtype=float).reshape(m, n)


def bootstrap_band(rows: np.ndarray, *, iters: int = 2000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap band of ``rows.mean(axis=0)``, resampling rows (prompts): (low, high), each (K,)."""
    rows = np.asarray(rows, dtype=float)
    m, width = rows.shape
    if m == 0:
        return np.full(width, np.nan), np.full(width, np.nan)
    rng = np.random.default_rng(seed)
    means = np.full((iters, width), np.nan)  # a resample left unfilled would show, as NaN
    for start in range(0, iters, 256):
        size = min(256, iters - start)
        counts = rng.multinomial(m, np.full(m, 1.0 / m), size=size)  # draws per prompt, per resample
        means[start : start + size] = counts @ rows / m
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


def solved_shares(passed: np.ndarray, scored: np.ndarray) -> dict:
    """Shares of prompts (with at least one scored sample) solved by none, some and all of their
    scored samples: {"none", "some", "all", "prompts"}.

    >>> p = np.array([[0, 0], [1, 0], [1, 1]], dtype=bool)
    >>> solved_shares(p, np.ones((3, 2), dtype=bool))
    {'none': 0.3333333333333333, 'some': 0.3333333333333333, 'all': 0.3333333333333333, 'prompts': 3}
    """
    has = scored.any(axis=1)
    hits, tries = (passed & scored).sum(axis=1)[has], scored.sum(axis=1)[has]
    m = int(has.sum())
    if m == 0:
        return {"none": float("nan"), "some": float("nan"), "all": float("nan"), "prompts": 0}
    return {
        "none": float(np.mean(hits == 0)),
        "some": float(np.mean((hits > 0) & (hits < tries))),
        "all": float(np.mean(hits == tries)),
        "prompts": m,
    }


def pass_stats(
    rewards: np.ndarray,
    t: float,
    *,
    columns: int | None = None,
    answers: list[list[str | None]] | None = None,
    iters: int = 2000,
    seed: int = 0,
    vote_ks=None,
    equal=None,
) -> dict:
    """Every pass statistic of a reward matrix (M, N) at threshold t, as a JSON-ready dict.

    columns: use only the first ``columns`` samples for pass@k and votes (an adaptive run's
    first step, where every prompt was sampled alike); None: all N. answers: M rows of N
    extracted answers for maj@k and weighted@k, grouped with ``equal`` (default ``==``).
    """
    rewards = np.asarray(rewards, dtype=float)
    scored = ~np.isnan(rewards)
    with np.errstate(invalid="ignore"):
        passed = rewards >= t
    rates = sel.pass_rates(rewards, t)
    width = rewards.shape[1] if columns is None else columns
    head, head_passed = rewards[:, :width], passed[:, :width]
    full = ~np.isnan(head).any(axis=1)
    rows = pass_at_k_rows(head_passed[full]) if width else np.empty((0, 0))
    low, high = bootstrap_band(rows, iters=iters, seed=seed) if width else (np.empty(0), np.empty(0))
    result = {
        "threshold": t,
        "pass_rate_per_prompt": [None if np.isnan(x) else float(x) for x in rates],
        "mean_pass_rate": float(np.nanmean(rates)) if np.any(~np.isnan(rates)) else float("nan"),
        "solved": solved_shares(passed, scored),
        "pass_at_k": {
            "k": list(range(1, width + 1)),
            "mean": (rows.mean(axis=0) if rows.shape[0] else np.full(width, np.nan)).tolist(),
            "low": np.asarray(low).tolist(),
            "high": np.asarray(high).tolist(),
            "rows": int(rows.shape[0]),
            "columns": width,
        },
    }
    if answers is not None and full.any() and any(a is not None for row in answers for a in row):
        ks = vote_ks or sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k <= width} | {width})
        keep = np.flatnonzero(full)
        sub_answers = [answers[i][:width] for i in keep]
        maj, maj_estimated = vote_rows(sub_answers, head_passed[keep], ks, seed=seed, equal=equal)
        weighted, weighted_estimated = vote_rows(
            sub_answers, head_passed[keep], ks, weights=head[keep], seed=seed, equal=equal
        )
        result["votes"] = {
            "k": list(ks),
            "maj_at_k": maj.mean(axis=0).tolist(),
            "weighted_at_k": weighted.mean(axis=0).tolist(),
            "estimated_prompts": {"maj": int(maj_estimated.sum()), "weighted": int(weighted_estimated.sum())},
            "answered_share": float(np.mean([a is not None for row in sub_answers for a in row])),
        }
    return result
