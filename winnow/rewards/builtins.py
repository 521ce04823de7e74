"""Built-in reward functions that work offline."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader(prompts: list, completions: list[str], **kw) -> list[float | None]:
    """VADER sentiment compound score of each completion, in [-1, 1]; empty text is unscored.

    >>> vader(["p", "p"], ["What a wonderful, happy day!", ""])[1] is None
    True
    """
    analyzer = _vader()
    return [analyzer.polarity_scores(c)["compound"] if c.strip() else None for c in completions]


def length(prompts: list, completions: list[str], **kw) -> list[float]:
    """Number of characters of each completion (a deterministic reward for smoke tests)."""
    return [float(len(c)) for c in completions]
