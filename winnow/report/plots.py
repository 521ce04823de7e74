"""PNG plots of a report (matplotlib, Agg backend). Each figure is written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot(path: Path, before: np.ndarray, after: np.ndarray, bon_curve: np.ndarray, *, title: str) -> None:
    """Two panels: reward histograms before/after fine-tuning, and the best-of-n curve."""
    plt = _pyplot()
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
    _save(fig, path)


def plot_best_of_n(path: Path, mean: np.ndarray, low: np.ndarray, high: np.ndarray, kl: np.ndarray) -> None:
    """Best-of-n reward with its bootstrap band against n (left) and against the KL bound (right).

    mean, low, high, kl: shape (N,), entry n-1 for best-of-n.
    """
    plt = _pyplot()
    ns = np.arange(1, len(mean) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x, label in ((left, ns, "n (samples per prompt)"), (right, kl, "KL upper bound, log n - (n-1)/n (nats)")):
        ax.fill_between(x, low, high, alpha=0.25, label="95% bootstrap band (prompts)")
        ax.plot(x, mean, marker="o", label="expected best reward")
        ax.set_xlabel(label)
        ax.set_ylabel("reward")
        ax.grid(alpha=0.3)
    left.set_title("Best-of-n")
    right.set_title("Best-of-n reward against its KL from the policy (upper bound)")
    left.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_selected_vs_all(path: Path, groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Histograms of reward (left) and length in tokens (right) for each group.

    groups: name -> (rewards (K,), num_tokens (K,)); NaN rewards are left out.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    scored = {name: rewards[~np.isnan(rewards)] for name, (rewards, _) in groups.items()}
    # Shared bin edges, so the groups' bars line up and their densities compare.
    reward_bins = np.histogram_bin_edges(np.concatenate(list(scored.values())), bins=20)
    token_bins = np.histogram_bin_edges(np.concatenate([tokens for _, tokens in groups.values()]), bins=20)
    for name, (_, tokens) in groups.items():
        rewards = scored[name]
        left.hist(rewards, bins=reward_bins, alpha=0.5, density=True, label=f"{name} (mean {np.mean(rewards):.3f})")
        right.hist(tokens, bins=token_bins, alpha=0.5, density=True, label=f"{name} (mean {np.mean(tokens):.1f})")
    left.set_xlabel("reward")
    left.set_title("Reward")
    right.set_xlabel("length (tokens)")
    right.set_title("Length")
    for ax in (left, right):
        ax.set_ylabel("density")
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_pass(path: Path, rates: np.ndarray, mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
    """Per-prompt pass rates as a histogram (left) and pass@k with its band (right).

    rates: shape (M,), NaN for a prompt with nothing scored; mean, low, high: shape (K,).
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(rates[~np.isnan(rates)], bins=np.linspace(0, 1, 11))
    left.set_xlabel("pass rate of the prompt's samples")
    left.set_ylabel("prompts")
    left.set_title("Per-prompt pass rate")
    ks = np.arange(1, len(mean) + 1)
    if len(ks):
        right.fill_between(ks, low, high, alpha=0.25, label="95% bootstrap band (prompts)")
        right.plot(ks, mean, marker="o", label="pass@k")
        right.legend()
    right.set_xlabel("k")
    right.set_ylabel("pass@k")
    right.set_ylim(0, 1.02)
    right.grid(alpha=0.3)
    right.set_title("pass@k (Chen et al. 2021)")
    fig.tight_layout()
    _save(fig, path)


def plot_eval_curve(path: Path, names: list[str], curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Held-out figures across models, one panel a figure: each model's value with its 95%
    interval as an error bar. curves: label -> (value, low, high), each shape (len(names),)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    xs = np.arange(len(names))
    for ax, (label, (value, low, high)) in zip(axes[0], curves.items(), strict=True):
        below, above = np.nan_to_num(value - low), np.nan_to_num(high - value)
        ax.errorbar(xs, value, yerr=[below, above], marker="o", capsize=4)
        ax.set_xticks(xs, names)
        ax.set_ylabel(f"{label} (held-out)")
        ax.set_title(f"{label}, 95% interval (prompts resampled)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
