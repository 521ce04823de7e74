"""Selection over an M x N reward matrix: pure numpy, no model code.

``rewards`` is float, shape (M, N): row i is prompt i, column j its j-th sample, NaN is
"unscored" and never selected. Ties go to the earlier prompt, then the earlier sample,
so the chapter's 5x4 example gives flattened order 8, 5, 14, 0, 11 for k = 5.

>>> import numpy as np
>>> R = np.array([[0.7, 0.3, 0.5, 0.2], [0.4, 0.8, 0.6, 0.5], [0.9, 0.3, 0.4, 0.7],
...               [0.2, 0.5, 0.8, 0.6], [0.5, 0.4, 0.3, 0.6]])
>>> top_per_prompt(R).tolist()
[0, 1, 0, 2, 3]
>>> top_k_overall(R, 5).tolist()
[[2, 0], [1, 1], [3, 2], [0, 0], [2, 3]]
"""

from __future__ import annotations

import numpy as np

from winnow.errors import WinnowError


def _as_matrix(rewards) -> np.ndarray:
    rewards = np.asarray(rewards)
    if rewards.ndim != 2:
        raise WinnowError(f"rewards must be a 2-D (M, N) matrix, got shape {rewards.shape}")
    if not np.issubdtype(rewards.dtype, np.floating):
        rewards = rewards.astype(np.float64)
    return rewards


def top_per_prompt(rewards) -> np.ndarray:
    """Column of the best sample per row: int (M,), -1 for an all-NaN row.

    Equivalent to ``np.nanargmax(rewards, axis=1)`` with -1 instead of an error.
    """
    r = _as_matrix(rewards)
    if r.shape[1] == 0:
        return np.full(r.shape[0], -1, dtype=np.int64)
    # fmax(x, -inf) is x with NaN turned into -inf: one pass, one copy, cheaper than where(isnan).
    key = np.fmax(r, -np.inf)
    best = np.argmax(key, axis=1)  # the first maximum: ties go to the earlier sample
    # A row whose maximum is -inf is all NaN, or its scored cells are all -inf and argmax may
    # have landed on a NaN before them: those rare rows take their first scored cell, or -1.
    low = np.flatnonzero(key[np.arange(r.shape[0]), best] == -np.inf)
    if low.size:
        scored = ~np.isnan(r[low])
        best[low] = np.where(scored.any(axis=1), np.argmax(scored, axis=1), -1)
    return best.astype(np.int64, copy=False)


def top_k_overall(rewards, k: int) -> np.ndarray:
    """The k best (row, column) pairs of the flattened matrix, best first: int (k', 2).

    k must be in [1, M*N]; k' = min(k, number of scored entries). Runs in O(MN) with one
    partition instead of a full sort, then sorts only the k winners.
    """
    r = _as_matrix(rewards)
    m, n = r.shape
    total = m * n
    if not 1 <= k <= total:
        raise WinnowError(f"k must be between 1 and M x N = {total}, got {k}")
    flat = r.reshape(-1)
    k = min(k, total - int(np.count_nonzero(np.isnan(flat))))
    if k == 0:
        return np.empty((0, 2), dtype=np.int64)
    # The only full-size copy: NaN as -inf, partitioned in place (the caller's matrix is never
    # touched), so the extra memory stays near one matrix.
    key = np.fmax(flat, -np.inf)
    key.partition(total - k)
    kth = key[total - k]  # the k-th largest value
    del key
    # Compare the original values, where NaN equals nothing, so a real -inf reward is kept
    # and a NaN never is.
    above = np.flatnonzero(flat > kth)
    # Among entries equal to the k-th value, the earliest flat indices win the tie.
    ties = np.flatnonzero(flat == kth)[: k - above.size]
    chosen = np.concatenate([above, ties])
    order = np.lexsort((chosen, -flat[chosen]))  # reward descending, then flat index ascending
    chosen = chosen[order]
    return np.stack(np.divmod(chosen, n), axis=1).astype(np.int64, copy=False)


def top_k_per_prompt(rewards, k: int) -> np.ndarray:
    """The k best columns of each row, best first: int (M, k), -1 where a row has fewer scored."""
    r = _as_matrix(rewards)
    if k < 1:
        raise WinnowError(f"k must be >= 1, got {k}")
    key = np.where(np.isnan(r), -np.inf, r)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]  # stable: earlier sample wins ties
    picked_nan = np.isnan(np.take_along_axis(r, order, axis=1))
    order[picked_nan] = -1
    if order.shape[1] < k:
        order = np.pad(order, ((0, 0), (0, k - order.shape[1])), constant_values=-1)
    return order.astype(np.int64)


def threshold(rewards, t: float) -> np.ndarray:
    """Every (row, column) pair with reward >= t, in row-major order: int (P, 2)."""
    r = _as_matrix(rewards)
    with np.errstate(invalid="ignore"):
        return np.argwhere(r >= t).astype(np.int64)


def random_per_prompt(rewards, seed: int) -> np.ndarray:
    """A uniformly random scored column per row (matched control for top_per_prompt): int (M,)."""
    r = _as_matrix(rewards)
    rng = np.random.default_rng(seed)
    # A random key per entry, -inf where unscored: its argmax is a uniform scored column.
    nan = np.isnan(r)
    picked = np.argmax(np.where(nan, -1.0, rng.random(r.shape)), axis=1)
    picked[nan.all(axis=1)] = -1
    return picked.astype(np.int64)


def random_k_overall(rewards, k: int, seed: int) -> np.ndarray:
    """k uniformly random scored pairs (control for top_k_overall), row-major: int (k', 2)."""
    r = _as_matrix(rewards)
    total = r.size
    if not 1 <= k <= total:
        raise WinnowError(f"k must be between 1 and M x N = {total}, got {k}")
    scored = np.flatnonzero(~np.isnan(r.reshape(-1)))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(scored, size=min(k, scored.size), replace=False))
    return np.stack([chosen // r.shape[1], chosen % r.shape[1]], axis=1).astype(np.int64)


def dedup(rewards, texts) -> np.ndarray:
    """Rewards with repeated texts within a row set to NaN, keeping the earliest sample.

    texts: shape (M, N) of str or None (None = no completion). Returns a new float matrix.
    """
    r = np.array(_as_matrix(rewards), dtype=float, copy=True)
    if len(texts) != r.shape[0] or any(len(row) != r.shape[1] for row in texts):
        raise WinnowError(f"texts must have the shape of rewards {r.shape}")
    for i, row in enumerate(texts):
        seen = set()
        for j, text in enumerate(row):
            if text is None:
                continue
            if text in seen:
                r[i, j] = np.nan
            seen.add(text)
    return r


def to_pairs(strategy: str, picked: np.ndarray) -> np.ndarray:
    """Normalise any strategy's output to (row, column) pairs in output order: int (P, 2)."""
    if strategy in ("top_per_prompt", "random_per_prompt"):
        rows = np.flatnonzero(picked >= 0)
        return np.stack([rows, picked[rows]], axis=1).astype(np.int64)
    if strategy == "top_k_per_prompt":
        rows, ranks = np.nonzero(picked >= 0)
        return np.stack([rows, picked[rows, ranks]], axis=1).astype(np.int64)
    return picked.reshape(-1, 2).astype(np.int64)


def apply(strategy: str, rewards, *, k: int | None = None, t: float | None = None, seed: int = 0) -> np.ndarray:
    """Run a strategy by name and return (row, column) pairs: int (P, 2)."""
    if strategy in ("top_k_overall", "top_k_per_prompt", "random_k_overall") and k is None:
        raise WinnowError(f"strategy {strategy} needs k")
    if strategy == "threshold" and t is None:
        raise WinnowError("strategy threshold needs a threshold")
    match strategy:
        case "top_per_prompt":
            picked = top_per_prompt(rewards)
        case "top_k_overall" if k is not None:
            picked = top_k_overall(rewards, k)
        case "top_k_per_prompt" if k is not None:
            picked = top_k_per_prompt(rewards, k)
        case "threshold" if t is not None:
            picked = threshold(rewards, t)
        case "random_per_prompt":
            picked = random_per_prompt(rewards, seed)
        case "random_k_overall" if k is not None:
            picked = random_k_overall(rewards, k, seed)
        case _:
            raise WinnowError(f"unknown strategy {strategy!r}")
    return to_pairs(strategy, picked)
