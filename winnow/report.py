"""Numbers and plots for a before/after comparison: bootstrap interval, histograms, BoN curve."""

from __future__ import annotations

from math import comb
from pathlib import Path

import numpy as np


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


def best_of_n_curve(rewards: np.ndarray) -> np.ndarray:
    """Expected best reward of n samples drawn without replacement from each row, n = 1..N.

    rewards: shape (M, N), fully scored rows. Uses the unbiased order-statistic estimator:
    with a row sorted ascending, E[max of n] = sum_i C(i, n-1) / C(N, n) * r_(i), i = 0..N-1.
    Returns shape (N,), averaged over rows.
    """
    rows = np.sort(rewards[~np.isnan(rewards).any(axis=1)], axis=1)
    m, big_n = rows.shape
    curve = np.empty(big_n)
    for n in range(1, big_n + 1):
        weights = np.array([comb(i, n - 1) for i in range(big_n)], dtype=float) / comb(big_n, n)
        curve[n - 1] = (rows @ weights).mean() if m else np.nan
    return curve


def plot(path: Path, before: np.ndarray, after: np.ndarray, bon_curve: np.ndarray, *, title: str) -> None:
    """Two panels: reward histograms before/after fine-tuning, and the best-of-n curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(-1, 1, 21)
    left.hist(before, bins=bins, alpha=0.6, label=f"start (mean {np.mean(before):.3f})")
    left.hist(after, bins=bins, alpha=0.6, label=f"fine-tuned (mean {np.mean(after):.3f})")
    left.set_xlabel("reward (VADER compound)")
    left.set_ylabel("held-out completions")
    left.set_title("Reward on held-out prompts")
    left.legend()
    ns = np.arange(1, len(bon_curve) + 1)
    right.plot(ns, bon_curve, marker="o")
    right.set_xlabel("n (samples per prompt)")
    right.set_ylabel("expected best reward")
    right.set_title("Best-of-n on the training prompts")
    right.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
