"""Selection over an M x N reward matrix: pure numpy, no model code.

``rewards`` is float, shape (M, N): row i is prompt i, column j its j-th sample, NaN is
"unscored" and never selected. Ties go to the earlier prompt, then the earlier sample,
so the 5x4 example below gives flattened order 8, 5, 14, 0, 11 for k = 5.

>>> import numpy as np
>>> R = np.array([[0.7, 0.3, 0.5, 0.2], [0.4, 0.8, 0.6, 0.5], [0.9, 0.3, 0.4, 0.7],
...               [0.2, 0.5, 0.8, 0.6], [0.5, 0.4, 0.3, 0.6]])
>>> top_per_prompt(R).tolist()
[0, 1, 0, 2, 3]
>>> top_k_overall(R, 5).tolist()
[[2, 0], [1, 1], [3, 2], [0, 0], [2, 3]]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from winnow.confidence import keep_confident as keep_confident_mask
from winnow.config import PAIRING_NEEDS, STRATEGY_NEEDS
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
    # argsort puts NaN after every number, +inf (a real -inf reward) included, so unscored
    # cells come last and the -1 padding stays at the end; stable: earlier sample wins ties.
    order = np.argsort(-r, axis=1, kind="stable")[:, :k]
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

    texts: shape (M, N) of str or None (None = no completion). Returns a new float64 matrix.
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


def rso(rewards, beta: float, k: int, seed: int) -> np.ndarray:
    """Statistical rejection sampling (RSO, Liu et al. 2023): k columns per row, int (M, k), -1 padded.

    Draws from the reward-tilted policy pi(y) * exp(r(y) / beta) using the row's scored
    candidates (samples of pi) as proposals: a candidate drawn uniformly at random from the
    row's remaining scored candidates is accepted with probability exp((r - r_max) / beta),
    r_max being the best remaining reward; accepted candidates leave the pool (no
    replacement), until k are accepted or the pool is spent. Columns come in acceptance
    order. The first accepted column j has probability exp(r_j / beta) / sum exp(r / beta)
    over the scored candidates, and each next one the same over those left. The paper's
    reference code scans candidates in a fixed order instead, which favours early columns.

    beta > 0: beta -> 0 gives top_k_per_prompt (in random order among tied rewards), a large
    beta a uniform draw without replacement. NaN is never chosen. Seeded and reproducible.
    Cost: O(M N) per round of proposals; a round makes N proposals per row at once (those
    between two acceptances are independent uniform draws, so this is the same process) and
    accepts one per row with probability >= 1 - (1 - 1/N)^N > 0.63, so about k + log M rounds.

    >>> R = np.array([[0.7, 0.3, 0.5, 0.2], [0.4, 0.8, 0.6, 0.5], [0.9, 0.3, 0.4, 0.7],
    ...               [0.2, 0.5, 0.8, 0.6], [0.5, 0.4, 0.3, 0.6]])
    >>> rso(R, beta=1e-3, k=2, seed=0).tolist()  # beta -> 0: the two best, best first
    [[0, 2], [1, 2], [0, 3], [2, 3], [3, 0]]
    """
    r = _as_matrix(rewards)
    if not beta > 0:
        raise WinnowError(f"beta must be > 0, got {beta}")
    if k < 1:
        raise WinnowError(f"k must be >= 1, got {k}")
    m, n = r.shape
    rng = np.random.default_rng(seed)
    out = np.full((m, k), -1, dtype=np.int64)
    remaining = ~np.isnan(r)
    taken = np.zeros(m, dtype=np.int64)
    active = np.flatnonzero(remaining.any(axis=1)) if n else np.empty(0, dtype=np.int64)
    while active.size:
        rem, rows = remaining[active], r[active]
        r_max = np.where(rem, rows, -np.inf).max(axis=1)
        # N proposals per row, uniform over all columns; one outside the pool is skipped,
        # which leaves a uniform draw from the pool (and needs no per-row list of it).
        proposed = rng.integers(0, n, size=(active.size, n))
        in_pool = np.take_along_axis(rem, proposed, axis=1)
        value = np.take_along_axis(rows, proposed, axis=1)
        with np.errstate(invalid="ignore"):
            # r == r_max is accepted outright (also when both are infinite, where r - r_max is NaN);
            # the clip keeps proposals outside the pool, which may exceed r_max, from overflowing.
            gap = np.minimum(value - r_max[:, None], 0.0)
            accept_p = np.where(value == r_max[:, None], 1.0, np.exp(gap / beta))
        accepted = in_pool & (rng.random((active.size, n)) < accept_p)
        hit = accepted.any(axis=1)
        first = np.argmax(accepted, axis=1)  # the earliest accepted proposal of the round
        rows_hit, cols = active[hit], proposed[hit, first[hit]]
        out[rows_hit, taken[rows_hit]] = cols
        taken[rows_hit] += 1
        remaining[rows_hit, cols] = False
        active = active[(taken[active] < k) & remaining[active].any(axis=1)]
    return out


def best_worst(rewards) -> np.ndarray:
    """Chosen and rejected column per row, the best and the worst sample: int (M, 2).

    -1 in both where a row has fewer than two scored samples. Ties go to the earlier sample
    for both; when every scored reward of a row is equal, the rejected is the earliest
    sample after the chosen one (a pair with margin 0, which the select stage drops).
    """
    r = _as_matrix(rewards)
    m = r.shape[0]
    out = np.full((m, 2), -1, dtype=np.int64)
    scored = ~np.isnan(r)
    ok = scored.sum(axis=1) >= 2
    if not ok.any():
        return out
    chosen = top_per_prompt(r[ok])
    key = np.where(scored[ok], r[ok], np.inf)
    key[np.arange(key.shape[0]), chosen] = np.inf  # the chosen one is not also the rejected
    # argmin finds the first minimum; a row of +inf rewards would tie with the mask, so test
    # the mask, not the value, for the rare row whose scored cells are all +inf.
    rejected = np.argmin(key, axis=1)
    masked = ~scored[ok][np.arange(key.shape[0]), rejected] | (rejected == chosen)
    if masked.any():
        others = scored[ok][masked].copy()
        others[np.arange(others.shape[0]), chosen[masked]] = False
        rejected[masked] = np.argmax(others, axis=1)
    out[ok, 0], out[ok, 1] = chosen, rejected
    return out


def all_pairs(rewards) -> np.ndarray:
    """Every (row, chosen, rejected) with both scored and reward[chosen] > reward[rejected]:
    int (P, 3), by row, then chosen column, then rejected column. P <= M N (N - 1) / 2;
    ties make no pair. Cost O(M N^2)."""
    r = _as_matrix(rewards)
    with np.errstate(invalid="ignore"):
        better = r[:, :, None] > r[:, None, :]  # NaN compares False: unscored make no pair
    return np.argwhere(better).astype(np.int64)


def rso_pairs(rewards, beta: float, k: int, seed: int) -> np.ndarray:
    """Preference pairs from RSO's accepted candidates: int (P, 3) of (row, chosen, rejected).

    ``rso`` accepts k per row; consecutive accepted candidates are paired, (1st, 2nd),
    (3rd, 4th), ..., and each pair is ordered by reward, so both sides come from the
    reward-tilted policy (RSO's point) rather than from the extremes. Tied pairs are left out.
    """
    picked = rso(rewards, beta, k, seed)
    r = _as_matrix(rewards)
    out = []
    for a in range(0, k - 1, 2):
        first, second = picked[:, a], picked[:, a + 1]
        rows = np.flatnonzero((first >= 0) & (second >= 0))
        ra, rb = r[rows, first[rows]], r[rows, second[rows]]
        keep = ra != rb
        rows, fa, fb, a_wins = rows[keep], first[rows][keep], second[rows][keep], (ra > rb)[keep]
        out.append(np.stack([rows, np.where(a_wins, fa, fb), np.where(a_wins, fb, fa)], axis=1))
    if not out:
        return np.empty((0, 3), dtype=np.int64)
    pairs = np.concatenate(out)
    return pairs[np.argsort(pairs[:, 0], kind="stable")].astype(np.int64)  # by row, acceptance order kept


def passing(rewards, t: float, k: int) -> np.ndarray:
    """Up to k passing columns per row (reward >= t), best first: int (M, k), -1 padded.

    When more than k pass, the k highest rewards are taken, ties going to the earlier sample
    (with a 0/1 verifier every passing reward ties, so these are the k earliest passing
    samples). Distinctness is the caller's: the select stage drops repeated texts first.

    >>> passing(np.array([[1.0, 0.0, 1.0, 1.0], [0.0, np.nan, 0.0, 0.0]]), 1.0, 2).tolist()
    [[0, 2], [-1, -1]]
    """
    r = _as_matrix(rewards)
    with np.errstate(invalid="ignore"):
        return top_k_per_prompt(np.where(r >= t, r, np.nan), k)


def pass_fail(rewards, t: float) -> np.ndarray:
    """One pair per row of a passing against a failing sample: int (P, 3) of (row, chosen, rejected).

    chosen: the best passing sample (reward >= t), rejected: the worst failing one (reward < t),
    ties to the earlier sample; rows without both make no pair. NaN is neither.

    >>> pass_fail(np.array([[0.0, 1.0, 0.0], [1.0, 1.0, np.nan], [0.2, 0.9, 0.5]]), 0.5).tolist()
    [[0, 1, 0], [2, 1, 0]]
    """
    r = _as_matrix(rewards)
    with np.errstate(invalid="ignore"):
        passed, failed = r >= t, r < t
    chosen = top_per_prompt(np.where(passed, r, np.nan))
    rejected = top_per_prompt(np.where(failed, -r, np.nan))  # the lowest failing reward
    rows = np.flatnonzero((chosen >= 0) & (rejected >= 0))
    return np.stack([rows, chosen[rows], rejected[rows]], axis=1).astype(np.int64)


def pass_rates(rewards, t: float) -> np.ndarray:
    """Per-row share of scored samples with reward >= t: float (M,), NaN for a row with none scored."""
    r = _as_matrix(rewards)
    scored = (~np.isnan(r)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scored > 0, (r >= t).sum(axis=1) / np.maximum(scored, 1), np.nan)


def pass_rate_keep(rewards, t: float, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Rows whose pass rate lies in [low, high] (either bound may be None): bool (M,).

    DPO wants prompts neither always nor never solved, e.g. low=0.1, high=0.9. A row with no
    scored sample is never kept.

    >>> R = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [np.nan, np.nan]])
    >>> pass_rate_keep(R, 0.5, low=0.1, high=0.9).tolist()
    [False, True, False, False]
    """
    rates = pass_rates(rewards, t)
    keep = ~np.isnan(rates)
    if low is not None:
        keep &= rates >= low
    if high is not None:
        keep &= rates <= high
    return keep


def vote_classes(answers, equal: Callable[[str, str], bool] | None = None) -> list[list[int]]:
    """Group sample indices by answer: a list of classes, each the (ascending) indices of one answer.

    answers: length N, each an extracted answer (str) or None (no answer could be extracted:
    it joins no class). ``equal(a, b)`` says whether two answers count as one (e.g. a math
    equivalence check); default ``==``. A new answer joins the first class whose first
    member's answer it equals, so classes come in order of first appearance. Cost: at most
    N x classes calls of ``equal``.

    >>> vote_classes(["4", None, "5", "4"])
    [[0, 3], [2]]
    """
    same = equal or (lambda a, b: a == b)
    classes: list[list[int]] = []
    for j, answer in enumerate(answers):
        if answer is None:
            continue
        for members in classes:
            if same(answers[members[0]], answer):
                members.append(j)
                break
        else:
            classes.append([j])
    return classes


def majority(answers, rewards=None, equal: Callable[[str, str], bool] | None = None) -> int:
    """The sample that carries the winning answer of a vote: int column, -1 when no answer.

    answers: length N, str or None (unextractable answers never vote). Without rewards,
    each sample is one vote (self-consistency, Wang et al. 2023); with rewards (length N,
    NaN = unscored, which does not vote), each answer weighs the sum of its samples'
    rewards (weighted best-of-N, as in Hugging Face's search-and-learn). Ties between
    answers go to the answer that appeared first. The returned sample is the winning
    class's best-rewarded member when rewards are given (ties: the earliest), else its
    earliest member. ``equal``: see ``vote_classes``.

    >>> majority(["7", "3", "3", None, "7"])  # 7 and 3 tie at two votes: 7 came first
    0
    >>> majority(["7", "3", "3", None, "7"], rewards=[0.1, 0.9, 0.8, 1.0, 0.2])  # 3 weighs 1.7
    1
    >>> majority([None, None])
    -1
    """
    if rewards is not None:
        weights = np.asarray(rewards, dtype=float)
        if weights.shape != (len(answers),):
            raise WinnowError(f"rewards must have one value per answer ({len(answers)}), got shape {weights.shape}")
        answers = [None if np.isnan(w) else a for a, w in zip(answers, weights, strict=True)]
    classes = vote_classes(answers, equal)
    if not classes:
        return -1
    scores: list[float]
    if rewards is None:
        scores = [float(len(members)) for members in classes]
    else:
        scores = [float(weights[members].sum()) for members in classes]
    winner = classes[int(np.argmax(scores))]  # argmax: the first of equal scores, i.e. the earliest answer
    if rewards is None:
        return winner[0]
    return winner[int(np.argmax(weights[winner]))]


def consensus_share(answers, equal: Callable[[str, str], bool] | None = None) -> float:
    """Share of all N samples held by the most common answer (unextractable ones count in N
    but never agree): float in [0, 1], 0.0 for N = 0.

    >>> consensus_share(["4", "4", None, "5"])
    0.5
    """
    classes = vote_classes(answers, equal)
    return max((len(m) for m in classes), default=0) / len(answers) if len(answers) else 0.0


def confident_share(answers, confidence, equal: Callable[[str, str], bool] | None = None) -> float:
    """Share of the N samples' summed confidence held by the answer that holds the most of it
    (DeepConf's consensus beta: the leading answer's confidence-weighted votes over all).
    Unextractable answers count in the total but never agree, as in ``consensus_share``; a
    NaN confidence (a sample of no tokens) weighs nothing. Float in [0, 1], 0.0 when nothing weighs.

    >>> confident_share(["4", "4", None, "5"], [1.0, 2.0, 1.0, 4.0])
    0.5
    """
    w = np.nan_to_num(np.asarray(confidence, dtype=float), nan=0.0)
    total = float(w.sum())
    classes = vote_classes(answers, equal)
    return max((float(w[m].sum()) for m in classes), default=0.0) / total if total > 0 else 0.0


AGGREGATES = ("best", "majority", "weighted", "prm-weighted", "confidence")
"""Ways Best-of-N picks a prompt's answer (``aggregate``)."""


def aggregate(
    texts,
    rewards,
    how: str = "best",
    *,
    extract: Callable[[str], str | None] | None = None,
    equal: Callable[[str, str], bool] | None = None,
    confidence=None,
    keep_confident: float | None = None,
) -> int:
    """Best-of-N's answer among one prompt's N candidates: the index of the chosen one, -1 if none.

    texts: length N (str, or None for a missing candidate); rewards: length N (NaN = unscored).
    how: ``best`` (the highest reward, ties to the earlier), ``majority`` (the vote over
    extracted answers, ``majority`` without rewards), ``weighted`` (each answer weighs the
    sum of its rewards), ``prm-weighted`` (``weighted``, where the caller passes a process
    reward model's aggregated step scores as ``rewards``: ``winnow.pipeline.best_of_n``) or
    ``confidence`` (each answer weighs the sum of its samples' ``confidence``: DeepConf's
    confidence-weighted majority vote; the chosen sample is the winner's most confident).
    extract: text -> answer or None (default:
    ``winnow.answers.extract_answer``); equal: answer equivalence (default ``==``).
    confidence: length N, each candidate's confidence (``winnow.confidence.WEIGHT``; NaN:
    none), for ``confidence`` and ``keep_confident``. keep_confident: a percentage P: only
    the most confident P% of the candidates take part, whatever ``how``
    (``winnow.confidence.keep_confident``: DeepConf's filter). A vote in which no candidate
    has an answer falls back to ``best``.

    >>> aggregate(["= 3", "= 4", "= 4"], [0.9, 0.1, 0.2], "majority")
    1
    >>> aggregate(["= 3", "= 4", "= 4"], [0.9, 0.1, 0.2], "weighted"), aggregate(["a", "b"], [0.1, 0.5])
    (0, 1)
    >>> aggregate(["= 3", "= 4", "= 4"], [0.9, 0.1, 0.2], "confidence", confidence=[5.0, 2.0, 2.5])
    0
    >>> aggregate(["= 3", "= 4", "= 4"], [0.9, 0.1, 0.2], "majority", confidence=[3.0, 1.0, 2.0], keep_confident=50)
    0
    """
    r = np.asarray(rewards, dtype=float)
    if how not in AGGREGATES:
        raise WinnowError(f"unknown aggregate {how!r} (choose from {', '.join(AGGREGATES)})")
    if len(texts) != r.shape[0]:
        raise WinnowError(f"texts and rewards differ in length: {len(texts)} and {r.shape[0]}")
    c = None
    if how == "confidence" or keep_confident is not None:
        texts, r, c = _confident(texts, r, confidence, keep_confident, how)
    if how != "best":
        from winnow.answers import extract_answer

        read = extract or extract_answer
        answers = [None if t is None else read(t) for t in texts]
        weights = {"majority": None, "weighted": r, "prm-weighted": r, "confidence": c}[how]
        picked = majority(answers, rewards=weights, equal=equal)
        if picked >= 0:
            return picked
    return int(top_per_prompt(r[None, :])[0]) if r.size else -1


def _confident(texts, r: np.ndarray, confidence, keep: float | None, how: str):
    """(texts, rewards, confidence (N,)) with only the most confident ``keep`` % of the
    candidates left (the others: None, NaN, NaN); all of them when ``keep`` is None."""
    if confidence is None:
        raise WinnowError(f"aggregate {how!r} with keep_confident {keep} needs each candidate's confidence")
    c = np.asarray(confidence, dtype=float)
    if c.shape != r.shape:
        raise WinnowError(f"confidence must have one value per candidate ({r.shape[0]}), got shape {c.shape}")
    if keep is None:
        return texts, r, c
    kept = keep_confident_mask(c, keep)
    texts = [t if k else None for t, k in zip(texts, kept, strict=True)]
    return texts, np.where(kept, r, np.nan), np.where(kept, c, np.nan)


@dataclass(frozen=True)
class Strategy:
    """A selection strategy: how to run it and the shape of its output (what it needs:
    ``config.STRATEGY_NEEDS``)."""

    pick: Callable[..., np.ndarray]
    """(rewards, *, k, threshold, beta, seed) -> its output (see ``output``)."""
    output: str
    """"columns": int (M,); "column_lists": int (M, k), -1 padded; "pairs": int (P, 2)."""


# How each strategy runs, keyed by the names of ``config.fields.Strategy`` (the one list).
STRATEGIES: dict[str, Strategy] = {
    "top_per_prompt": Strategy(lambda r, **p: top_per_prompt(r), "columns"),
    "top_k_overall": Strategy(lambda r, **p: top_k_overall(r, p["k"]), "pairs"),
    "top_k_per_prompt": Strategy(lambda r, **p: top_k_per_prompt(r, _per_row(p["k"], r)), "column_lists"),
    "threshold": Strategy(lambda r, **p: threshold(r, p["threshold"]), "pairs"),
    "random_per_prompt": Strategy(lambda r, **p: random_per_prompt(r, p["seed"]), "columns"),
    "random_k_overall": Strategy(lambda r, **p: random_k_overall(r, p["k"], p["seed"]), "pairs"),
    # k defaults to 1 for rso: one sample of the tilted policy per prompt.
    "rso": Strategy(lambda r, **p: rso(r, p["beta"], _per_row(p["k"] or 1, r), p["seed"]), "column_lists"),
    # k defaults to 1 for passing: one verified completion per prompt (the SFT case).
    "passing": Strategy(lambda r, **p: passing(r, p["pass_threshold"], _per_row(p["k"] or 1, r)), "column_lists"),
}


def _per_row(k: int, r: np.ndarray) -> int:
    """A per-prompt k capped at the N columns: more can never be picked, and a huge k (a typo
    such as 99999999999) would allocate an (M, k) array of padding."""
    return min(k, max(r.shape[1], 1))


# Ways to build preference pairs, each returning (row, chosen, rejected): int (P, 3).
PAIRINGS: dict[str, Callable[..., np.ndarray]] = {
    "best-worst": lambda r, **p: _rows_with(best_worst(r)),
    "all": lambda r, **p: all_pairs(r),
    # k defaults to the whole pool for rso pairs: every candidate, in acceptance order.
    "rso": lambda r, **p: rso_pairs(r, p["beta"], _per_row(p["k"] or r.shape[1], r), p["seed"]),
    "pass-fail": lambda r, **p: pass_fail(r, p["pass_threshold"]),
}


def _rows_with(columns: np.ndarray) -> np.ndarray:
    """(M, 2) chosen/rejected columns -> (P, 3) (row, chosen, rejected), rows with -1 dropped."""
    rows = np.flatnonzero(columns[:, 0] >= 0)
    return np.column_stack([rows, columns[rows]]).astype(np.int64)


def to_pairs(strategy: str, picked: np.ndarray) -> np.ndarray:
    """Normalise any strategy's output to (row, column) pairs in output order: int (P, 2)."""
    match STRATEGIES[strategy].output:
        case "columns":
            rows = np.flatnonzero(picked >= 0)
            return np.stack([rows, picked[rows]], axis=1).astype(np.int64)
        case "column_lists":
            rows, ranks = np.nonzero(picked >= 0)
            return np.stack([rows, picked[rows, ranks]], axis=1).astype(np.int64)
    return picked.reshape(-1, 2).astype(np.int64)


def apply(
    strategy: str,
    rewards,
    *,
    k: int | None = None,
    t: float | None = None,
    beta: float | None = None,
    seed: int = 0,
    pass_threshold: float | None = None,
) -> np.ndarray:
    """Run a strategy by name and return (row, column) pairs: int (P, 2)."""
    if strategy not in STRATEGIES:
        raise WinnowError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    params = {"k": k, "threshold": t, "beta": beta, "seed": seed, "pass_threshold": pass_threshold}
    for need in STRATEGY_NEEDS[strategy]:
        if params[need] is None:
            raise WinnowError(f"strategy {strategy} needs {need}")
    return to_pairs(strategy, STRATEGIES[strategy].pick(_as_matrix(rewards), **params))


def make_pairs(
    pairing: str,
    rewards,
    *,
    k: int | None = None,
    beta: float | None = None,
    seed: int = 0,
    pass_threshold: float | None = None,
) -> np.ndarray:
    """Preference pairs by name: (row, chosen, rejected), int (P, 3)."""
    if pairing not in PAIRINGS:
        raise WinnowError(f"unknown pairing {pairing!r} (choose from {', '.join(PAIRINGS)})")
    params = {"beta": beta, "pass_threshold": pass_threshold}
    for need in PAIRING_NEEDS[pairing]:
        if params[need] is None:
            raise WinnowError(f"pairs {pairing} needs {need}")
    return PAIRINGS[pairing](_as_matrix(rewards), k=k, beta=beta, seed=seed, pass_threshold=pass_threshold)
