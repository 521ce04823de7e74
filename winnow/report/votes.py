"""maj@k and weighted@k, computed exactly: the expected pass of a vote over a random k-subset.

The vote is ``winnow.select.majority``'s, applied to the k samples of the subset kept in
sample order: each answer class scores its votes (maj@k: one per sample; weighted@k: the
sum of its samples' rewards, NaN rewards not voting); the highest score wins and a tie goes
to the class whose first sample in the subset comes first; the vote's sample is the
winner's first sample (maj@k) or its best-rewarded one, ties to the earliest (weighted@k).
A subset in which no sample votes counts as failed.

Exact, as pass@k is exact: every k-subset counts once. Each class's non-empty subsets are
counted by (first sample, size, total score, whether the vote's sample passes); such a subset
wins when every other class has no sample in it or a lower key (total, then a later first
sample). Counting the other classes' losing subsets by size is a product of polynomials in
z, so one pass gives every k: the coefficient of z^k, over C(N, k).

Cost: scores are exact integers (float rewards are dyadic rationals, put on their common
grid), so ties are exact, and the counts span the totals the classes' subsets reach. With
counts (maj@k) or rewards of a few values (a verifier's 0/1) that is O(N) totals, and N =
64 with every k takes well under a second. Rewards of many distinct values reach up to
2^L totals on a class of L samples (counting them is #P-hard in general): exact while a
class's table stays within ``MAX_CELLS`` (about L <= 12 for continuous rewards), and past
it the prompt is estimated from ``draws`` seeded random subsets and counted as estimated.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from winnow import select as sel

MAX_CELLS = 4_000_000
"""Size of one class's count table (sizes x totals x positions or top scores x 2) beyond
which a prompt's vote is estimated by sampling instead."""


def _exact_ints(weights: np.ndarray) -> list[int] | None:
    """Finite float weights as integers on their common dyadic grid (exact sums and ties); None
    if a weight is infinite."""
    if not np.all(np.isfinite(weights)):
        return None
    fractions = [Fraction(float(x)) for x in weights]
    scale = max((f.denominator for f in fractions), default=1)  # powers of two: the largest divides all
    return [int(f * scale) for f in fractions]


def _times(q: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Row-wise product of polynomials in z, truncated to q's degree: q (E, D), f (E, d)."""
    out = np.zeros_like(q)
    for i in range(min(f.shape[1], q.shape[1])):
        out[:, i:] += f[:, i : i + 1] * q[:, : q.shape[1] - i]
    return out


def _subset_totals(scores: list[int]) -> set[int] | None:
    """The totals a non-empty subset of one class can reach; None when more than its table
    could hold within ``MAX_CELLS``."""
    limit = MAX_CELLS // (2 * (len(scores) + 1) * max(len(scores), 1))
    reach: set[int] = set()
    for w in scores:
        reach |= {w} | {t + w for t in reach}
        if len(reach) > limit:
            return None
    return reach


def _class_table(scores: list[int], passes: list[bool], at: dict[int, int]) -> np.ndarray:
    """One class's non-empty subsets, counted: float (L, L + 1, T, 2) indexed by [first
    member's position in the class, size, total's index in ``at``, whether the vote's sample
    passes]. ``at`` maps every total the class reaches to its rank among all classes' totals.

    Members are added latest first, so each subset made at a step has the added member first;
    its pick is the highest score, ties to the earlier sample (the one just added).
    """
    size, width = len(scores), len(at)
    levels = sorted(set(scores))
    totals = sorted(at, key=at.__getitem__)
    held = np.zeros((size + 1, width, len(levels), 2))  # subsets of the later members: [size, total, top, passes]
    table = np.zeros((size, size + 1, width, 2))
    for pos in reversed(range(size)):
        w, p, top = scores[pos], int(passes[pos]), levels.index(scores[pos])
        pairs = [(i, at[t + w]) for i, t in enumerate(totals) if t + w in at]  # total -> total + w
        src, dst = (np.array(x, dtype=int) for x in zip(*pairs, strict=True)) if pairs else (np.zeros(0, int),) * 2
        new = np.zeros_like(held)
        new[1, at[w], top, p] = 1.0
        below = held[:-1, :, : top + 1].sum(axis=(2, 3))  # picks scoring at most w: w takes over
        new[1:, dst, top, p] += below[:, src]
        new[1:, dst, top + 1 :] += held[:-1, src, top + 1 :]
        table[pos] = new.sum(axis=2)
        held += new
    return table


def exact_vote_counts(label: np.ndarray, score: list[int], passed: np.ndarray) -> np.ndarray | None:
    """Passing k-subsets of one prompt for k = 0..N: float (N + 1,), or None when a class's
    table would pass ``MAX_CELLS`` (rewards of many distinct values on a large class).

    label: int (N,), the answer class of each sample, -1 for a sample that does not vote;
    score: N integer votes (all 1 for maj@k); passed: bool (N,).
    """
    n = len(label)
    classes = [m for c in range(int(label.max(initial=-1)) + 1) if len(m := np.flatnonzero(label == c))]
    voters = sum(len(m) for m in classes)
    reach = [_subset_totals([score[j] for j in m]) for m in classes]
    if any(r is None for r in reach):
        return None
    at = {t: i for i, t in enumerate(sorted(set().union(*(r for r in reach if r is not None))))}
    for m in classes:
        if (len(m) + 1) * len(at) * max(len(m), len({score[j] for j in m})) * 2 > MAX_CELLS:
            return None
    tables = [_class_table([score[j] for j in m], [bool(passed[j]) for j in m], at) for m in classes]
    # for class d and a key (total tau, first sample j): d's subsets that lose, by size, are
    # those of a lower total plus those of total tau whose first sample comes after j
    lower = [
        np.concatenate([np.zeros((t.shape[1], 1)), np.cumsum(t.sum(axis=(0, 3)), axis=1)[:, :-1]], axis=1)
        for t in tables
    ]
    later = [
        np.concatenate([np.cumsum(t.sum(axis=3)[::-1], axis=0)[::-1], np.zeros((1, *t.shape[1:3]))]) for t in tables
    ]
    free = np.array([math.comb(n - voters, i) for i in range(n + 1)], dtype=float)  # non-voters: any of them
    total = np.zeros(n + 1)
    for c, members in enumerate(classes):
        pos, tau = np.nonzero(tables[c][:, :, :, 1].sum(axis=1))  # keys with a passing pick
        if not len(pos):
            continue
        q = np.tile(free, (len(pos), 1))
        for d, others in enumerate(classes):
            if d != c:
                f = lower[d][:, tau].T + later[d][np.searchsorted(others, members[pos]), :, tau]
                f[:, 0] = 1.0  # the class has no sample in the subset
                q = _times(q, f)
        total += _times(q, tables[c][pos, :, tau, 1]).sum(axis=0)
    return total


def vote_rows(
    answers: list[list[str | None]],
    passed: np.ndarray,
    ks,
    *,
    weights: np.ndarray | None = None,
    draws: int = 200,
    seed: int = 0,
    equal=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's maj@k (or, with ``weights``, weighted@k): float (M, len(ks)), and which
    prompts were estimated from ``draws`` random subsets: bool (M,).

    answers: M rows of N extracted answers (None: never votes); passed: bool (M, N); weights:
    float (M, N), the rewards (NaN: does not vote); ``equal`` groups answers (default ``==``).
    """
    rng = np.random.default_rng(seed)
    ks = [int(k) for k in ks]
    rows = np.zeros((len(answers), len(ks)))
    estimated = np.zeros(len(answers), dtype=bool)
    for i, row in enumerate(answers):
        n = len(row)
        label = np.full(n, -1)
        for c, members in enumerate(sel.vote_classes(row, equal)):
            label[members] = c
        score: list[int] | None = [1] * n
        if weights is not None:
            w = np.asarray(weights[i], dtype=float)
            label = np.where(np.isnan(w), -1, label)
            score = _exact_ints(np.where(np.isnan(w), 0.0, w))
        counts = None if score is None else exact_vote_counts(label, score, passed[i])
        if counts is not None:
            rows[i] = [counts[k] / math.comb(n, k) for k in ks]
        else:
            estimated[i] = True
            w = np.ones(n) if weights is None else np.asarray(weights[i], dtype=float)
            rows[i] = [_sampled(label, w, passed[i], k, draws, rng) for k in ks]
    return rows, estimated


def _sampled(label: np.ndarray, w: np.ndarray, passed: np.ndarray, k: int, draws: int, rng) -> float:
    """The same vote's pass share over ``draws`` random k-subsets (a prompt too costly to count)."""
    ok = 0
    for _ in range(draws):
        subset = np.sort(rng.choice(len(label), size=k, replace=False))
        votes = label[subset]
        if not (votes >= 0).any():
            continue
        pick = sel.majority([None if v < 0 else str(v) for v in votes], rewards=np.where(votes < 0, np.nan, w[subset]))
        ok += bool(passed[subset[pick]])
    return ok / draws


def vote_at_k(answers, passed, ks, *, weights=None, equal=None) -> np.ndarray:
    """maj@k (or, with ``weights``, weighted@k) averaged over prompts: float (len(ks),), exact
    (see the module's rule); NaN when there is no prompt.

    >>> vote_at_k([["4", "4", "5"]], np.array([[True, True, False]]), [1, 2, 3])
    array([0.66666667, 1.        , 1.        ])
    """
    ks = list(ks)
    rows, _ = vote_rows(answers, np.asarray(passed, dtype=bool), ks, weights=weights, equal=equal)
    return rows.mean(axis=0) if len(answers) else np.full(len(ks), np.nan)
