"""Confidence from log-probabilities, as DeepConf defines it (Fu, Wang, Tian and Zhao, "Deep
Think with Confidence", 2025, section 2), and the two ways a vote uses it: weights, and
keeping only the most confident traces.

Definitions (the paper's, with its symbols):

    token confidence      C_i = -(1/k) * sum_{j=1..k} log P_i(j), over the k most likely
                          tokens at position i (the top-k log-probabilities). A peaked
                          distribution has one log-probability near 0 and k-1 very negative
                          ones, so C_i is high where the model is sure (k must be >= 2:
                          with k = 1, C_i = -log P_i(1) is *low* where the model is sure).
    group confidence      C_G = mean of C_i over a group G of ``window`` consecutive tokens,
                          the groups sliding one token at a time (stride 1).
    lowest group conf.    C_least = min over the trace's groups of C_G; a trace shorter than
                          the window is one group (the mean of all its tokens), as in the
                          paper's code.
    mean token conf.      C_avg = mean of C_i over the trace (the paper's "average trace
                          confidence", the global measure it improves on).

Where winnow departs: the paper's window is 2048 tokens, sized for reasoning traces of tens
of thousands of tokens; winnow's default (32, ``config.generate.CONFIDENCE_WINDOW``) fits completions of a few
dozen to a few hundred tokens, and ``generate.confidence_window`` sets it. The log-probabilities
are the model's own distribution (raw logits, before temperature, top-k/top-p/min-p and the
repetition penalty), as vLLM returns them by default: the confidence of a trace does not
depend on how it was sampled. Votes, keeping and adaptive stopping all use the lowest group
confidence (the paper's measure for its online mode and its best offline one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from winnow.errors import WinnowError

COLUMNS = ("mean_confidence", "lowest_group_confidence")
"""The two numbers a completion row keeps when confidence is recorded."""
WEIGHT = "lowest_group_confidence"
"""The column votes are weighted by, traces kept by and adaptive stopping weighs."""


@dataclass(frozen=True)
class TokenLogprobs:
    """What a backend returns per token of one completion when asked (``Sampling.top_logprobs``).

    sampled: (T,) the log-probability of each sampled token under the model's distribution;
    confidence: (T,) each token's confidence ``C_i`` from the top-k (``token_confidence``).
    tokens and top, only when asked (``Sampling.top_tokens``, for a server's logprobs body):
    (T,) the sampled token ids, and (T, k) each position's k most likely (token id,
    log-probability) pairs, most likely first; () otherwise.
    """

    sampled: tuple[float, ...]
    confidence: tuple[float, ...]
    tokens: tuple[int, ...] = ()
    top: tuple[tuple[tuple[int, float], ...], ...] = ()


def token_confidence(top_logprobs: np.ndarray) -> np.ndarray:
    """C_i = minus the mean of the top-k log-probabilities: (T, k) -> (T,).

    >>> token_confidence(np.array([[-0.1, -2.0, -3.9], [-1.0, -1.0, -1.0]])).tolist()
    [2.0, 1.0]
    """
    return -np.asarray(top_logprobs, dtype=np.float64).mean(axis=-1)


def group_confidences(confidence, window: int) -> np.ndarray:
    """The mean of every ``window`` consecutive token confidences, stride 1: (T,) ->
    (T - window + 1,); a trace shorter than the window is one group, (1,); none, (0,).

    >>> group_confidences([1.0, 3.0, 2.0, 6.0], 2).tolist()
    [2.0, 2.5, 4.0]
    >>> group_confidences([1.0, 3.0], 4).tolist()
    [2.0]
    """
    if window < 1:
        raise WinnowError(f"confidence window must be >= 1, got {window}")
    c = np.asarray(confidence, dtype=np.float64)
    if len(c) <= window:
        return c.mean(keepdims=True) if len(c) else c
    # a window sum as a difference of running sums: O(T) whatever the window
    running = np.concatenate([[0.0], np.cumsum(c)])
    return (running[window:] - running[:-window]) / window


def summarize(confidence, window: int) -> dict[str, float | None]:
    """A completion's two numbers (``COLUMNS``): its mean token confidence and its lowest
    group confidence; both None for a completion of no tokens.

    >>> summarize([1.0, 3.0, 2.0, 6.0], 2)
    {'mean_confidence': 3.0, 'lowest_group_confidence': 2.0}
    """
    groups = group_confidences(confidence, window)
    if not len(groups):
        return dict.fromkeys(COLUMNS)
    return {"mean_confidence": float(np.mean(confidence)), "lowest_group_confidence": float(groups.min())}


def row_columns(logprobs: TokenLogprobs | None, *, window: int, keep: bool) -> dict:
    """What a completion row holds of its log-probabilities: the two summaries, and with
    ``keep`` every token's (``token_logprobs``, ``token_confidence``); {} when there are none."""
    if logprobs is None:
        return {}
    out: dict = summarize(logprobs.confidence, window)
    if keep:
        out["token_logprobs"] = list(logprobs.sampled)
        out["token_confidence"] = list(logprobs.confidence)
    return out


def weights_of(rows, where: str = "completion") -> np.ndarray:
    """The confidence each vote weighs (``WEIGHT``) of N completion rows (None: a missing
    candidate): float (N,), NaN for a missing candidate or one of no tokens. A present row
    without the column was sampled without confidence: refused, naming ``where``."""
    out = np.full(len(rows), np.nan)
    for j, row in enumerate(rows):
        if row is None:
            continue
        if WEIGHT not in row:
            raise WinnowError(
                f"{where}: sample {row.get('sample_index', j)} of prompt {row.get('prompt_id')!r} has no "
                f"confidence: sample with --top-logprobs K (generate.top_logprobs) to record it"
            )
        value = row[WEIGHT]
        out[j] = np.nan if value is None else float(value)
    return out


def keep_confident(confidence, percent: float) -> np.ndarray:
    """Which of one prompt's N traces are its most confident ``percent`` %: bool (N,).

    Of the traces with a confidence (NaN: none, never kept), the ceil(percent / 100 x count)
    most confident are kept (at least one); ties go to the earlier sample, so the count is
    exact. DeepConf keeps the top 10% ("DeepConf-low") or 90% ("DeepConf-high").

    >>> keep_confident([0.5, 2.0, float("nan"), 2.0, 1.0], 50).tolist()
    [False, True, False, True, False]
    >>> keep_confident([0.5, 2.0, 1.0], 10).tolist()
    [False, True, False]
    """
    if not 0 < percent <= 100:
        raise WinnowError(f"keep-confident must be a percentage in (0, 100], got {percent}")
    c = np.asarray(confidence, dtype=np.float64)
    known = np.flatnonzero(~np.isnan(c))
    count = math.ceil(percent / 100 * len(known) - 1e-9) if len(known) else 0  # 1e-9: 10% of 30 is 3, not 4
    order = known[np.argsort(-c[known], kind="stable")]  # most confident first, ties by sample order
    kept = np.zeros(len(c), dtype=bool)
    kept[order[: max(count, 1) if len(known) else 0]] = True
    return kept
