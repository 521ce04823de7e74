"""``select``, ``rounds``, ``adaptive`` and ``pick``: which completions are kept, over how many
rounds, when a prompt has been sampled enough, and what picks Best-of-N's completion."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, get_args

from winnow.config.fields import (
    Pairing,
    Pool,
    SelectBy,
    SftFrom,
    StopRule,
    Strategy,
    bounded,
    check_fields,
    check_price,
    seed_field,
)
from winnow.errors import WinnowError

STRATEGY_NEEDS: dict[str, tuple[str, ...]] = {
    "top_per_prompt": (),
    "top_k_overall": ("k",),
    "top_k_per_prompt": ("k",),
    "threshold": ("threshold",),
    "random_per_prompt": (),
    "random_k_overall": ("k",),
    "rso": ("beta",),
    "passing": ("pass_threshold",),
}
"""Each strategy's parameters that must be given, among k, threshold, beta and pass_threshold."""
PAIRING_NEEDS: dict[str, tuple[str, ...]] = {
    "best-worst": (),
    "all": (),
    "rso": ("beta",),
    "pass-fail": ("pass_threshold",),
}
"""Each pairing's parameters that must be given."""
assert tuple(STRATEGY_NEEDS) == get_args(Strategy) and tuple(PAIRING_NEEDS) == get_args(Pairing)


@dataclass
class SelectConfig:
    section: ClassVar[str] = "select"

    strategy: Strategy = field(default="top_per_prompt", metadata={"noun": "strategy"})
    """Which completions to keep (``winnow.select``): the best per prompt, the best k overall
    or per prompt, all above a threshold, RSO's samples of the reward-tilted policy, the
    passing ones; the random ones are matched controls of the first two."""
    k: int | None = bounded(None, ge=1)
    """Pairs to keep (top_k_overall, random_k_overall) or per prompt (top_k_per_prompt;
    rso, default 1)."""
    threshold: float | None = None
    """Keep every pair with reward >= threshold (strategy 'threshold')."""
    beta: float | None = bounded(None, gt=0, finite=True)
    """RSO's temperature (> 0), in reward units: accept with probability exp((r - r_max) / beta).
    Small beta approaches the best sample, large beta a uniform one. Strategy and pairs 'rso'."""
    dedup: bool = False
    """Treat repeated completion texts within a prompt as one (the earliest sample is kept)."""
    drop_truncated: bool = False
    """Leave out completions that did not end on their own before selecting: cut by
    max_new_tokens (finish_reason 'length'), or ended by an openai backend's server
    ('content_filter', 'abort', 'other': any reason but 'stop')."""
    pairs: Pairing | None = field(default=None, metadata={"noun": "pairing"})
    """Also write preference pairs to select/pairs.jsonl: 'best-worst' (best and worst sample
    per prompt), 'all' (every pair with different rewards) or 'rso' (RSO's accepted samples,
    paired in acceptance order)."""
    pair_k: int | None = bounded(None, ge=2)
    """Pairs 'rso': candidates accepted per prompt (two per pair); default: every scored one."""
    min_margin: float = bounded(0.0, ge=0, finite=True)
    """Keep a pair only if chosen reward - rejected reward >= min_margin; ties never make a pair."""
    seed: int = seed_field()
    """Seed of the random controls and of RSO."""
    pass_threshold: float | None = bounded(None, finite=True)
    """Reward at or above which a completion passes (strategy ``passing``, pairs
    ``pass-fail``, the pass-rate filter); default: the score stage's ``pass_threshold``."""
    min_pass_rate: float | None = bounded(None, ge=0, le=1, interval=True)
    """Keep only prompts whose share of passing samples is >= this (DPO wants prompts that
    are not always solved nor never); needs a pass threshold."""
    max_pass_rate: float | None = bounded(None, ge=0, le=1, interval=True)
    """Keep only prompts whose share of passing samples is <= this."""
    decontaminate: list[str] | None = None
    """Eval files to keep out: a prompt, or a completion, sharing an n-gram of
    decontaminate_ngram words with an eval item is no candidate (a prompt's next-best clean
    completion is selected instead). A .jsonl file: one item a row, its text the columns text,
    prompt, question, problem, answer, solution present; any other file: one item a line.
    Each file's sha256 is part of the stage's config."""
    decontaminate_ngram: int = bounded(13, ge=1)
    """Words in a shared n-gram that counts as contamination (lowercased \\w+ words)."""
    near_dedup: bool = False
    """Drop a selected completion whose word 5-shingles have a MinHash-estimated Jaccard >=
    near_dedup_threshold with an earlier selected one; its prompt's next-best candidate is
    selected instead (if it too is a near-duplicate, the next, and so on)."""
    near_dedup_threshold: float = bounded(0.8, gt=0, le=1, interval=True)
    """Jaccard on word 5-shingles at or above which two completions are near-duplicates."""

    def stage_config(self) -> dict:
        """The config a select stage is stored under: every field."""
        return asdict(self)

    def validate(self) -> None:
        """Every field in its range (``check_fields``), then what the strategy and pairs need."""
        check_fields(self)
        needs = STRATEGY_NEEDS[self.strategy]
        if "k" in needs and self.k is None:
            raise WinnowError(f"select.k: strategy {self.strategy} needs k")
        if "threshold" in needs and not (self.threshold is not None and math.isfinite(self.threshold)):
            raise WinnowError(f"select.threshold: strategy threshold needs a finite threshold, got {self.threshold}")
        if self.beta is None and ("beta" in needs or (self.pairs and "beta" in PAIRING_NEEDS[self.pairs])):
            user = f"strategy {self.strategy}" if "beta" in needs else f"pairs {self.pairs}"
            raise WinnowError(f"select.beta: {user} needs beta")
        low, high = self.min_pass_rate, self.max_pass_rate
        if low is not None and high is not None and low > high:
            raise WinnowError(f"select.min_pass_rate: must be <= max_pass_rate ({high}), got {low}")


@dataclass
class RoundsConfig:
    section: ClassVar[str] = "rounds"

    count: int | None = bounded(None, ge=1)
    """Rounds of generate -> score -> select -> sft, each in ``RUN_DIR/round-<r>/``; round r
    samples from round r-1's checkpoint. None: a single round in RUN_DIR itself."""
    pool: Pool = "all"
    """Candidates each round selects among: ``all`` rounds so far (Llama 2's way) or the
    ``latest`` round's only."""
    sft_from: SftFrom = "start"
    """Checkpoint each round fine-tunes: the ``start`` (the default: the recipe stays,
    only the selected data improve) or the ``previous`` round's."""

    def validate(self) -> None:
        check_fields(self)


@dataclass
class AdaptiveConfig:
    """Adaptive sampling (``winnow.adaptive``): generate.n is then the most samples per prompt."""

    section: ClassVar[str] = "adaptive"

    step: int | None = bounded(None, ge=1)
    """Samples per open prompt and step; None: no adaptive sampling (all n at once)."""
    stop_when: str = "pass"
    """When a prompt closes: ``pass`` (one completion with reward >= score.pass_threshold),
    ``pass-and-fail`` (one of each: a DPO pair), ``passing:K`` (K distinct passing texts),
    ``consensus:F`` (the most common extracted answer holds a share >= F of the samples) or
    ``confident-consensus:F`` (after the first step, a warm-up, the leading answer holds a
    share >= F of the samples' summed confidence, DeepConf's stop; needs generate.top_logprobs)."""
    answer: str = "auto"
    """How consensus (and ``bon --aggregate``) reads a completion's answer: ``auto`` (the
    last \\boxed{...}, else 'answer is/:' X, else the last number), ``math`` (math-verify's
    reading and equality, the math verifier's own), or ``module:function`` /
    ``file.py:function`` mapping a text to a str or None."""

    def rule(self) -> tuple[str, float]:
        """The stop rule's name and parameter (K or F; 0 for the plain rules)."""
        name, _, value = self.stop_when.partition(":")
        return name, float(value) if value else 0.0

    def validate(self) -> None:
        if self.step is None:  # no adaptive sampling: the rule is never read
            return
        check_fields(self)
        name, _, value = self.stop_when.partition(":")
        if name not in get_args(StopRule):
            raise WinnowError(
                "adaptive.stop_when: must be one of pass, pass-and-fail, passing:K, consensus:F, "
                f"confident-consensus:F, got {self.stop_when!r}"
            )
        if name == "passing" and not (value.isdigit() and int(value) >= 1):
            raise WinnowError(
                f"adaptive.stop_when: passing needs an integer K >= 1 (passing:2), got {self.stop_when!r}"
            )
        if name in ("consensus", "confident-consensus") and not 0 < _share(value) <= 1:
            raise WinnowError(
                f"adaptive.stop_when: {name} needs a share F in (0, 1] ({name}:0.6), got {self.stop_when!r}"
            )
        if name in ("pass", "pass-and-fail") and value:
            raise WinnowError(f"adaptive.stop_when: {name} takes no parameter, got {self.stop_when!r}")


@dataclass
class PickConfig:
    """What picks ``winnow bon``'s completion of each prompt, or ``winnow serve``'s answer of
    each Best-of-N request (``winnow.rewards.pick``)."""

    section: ClassVar[str] = "pick"

    select_by: SelectBy = "reward"
    """``reward``: the highest reward (or the vote of ``--aggregate``); ``judge``: a judge
    model compares the prompt's candidates, ``window`` at a time, the winners compared
    again until one is left (a tournament), and names the best; their positions are
    shuffled with ``seed``. A reply naming no candidate leaves the window's highest
    reward the winner, and is counted."""
    judge: str | None = None
    """Judge that picks: its OpenAI-compatible API root (``http://host/v1``)."""
    judge_model: str | None = None
    """Judge that picks: the served model name."""
    window: int = bounded(4, ge=2, le=64)
    """Judge that picks: candidates shown in one call; n candidates take one call when
    n <= window, else ceil(m / window) calls a round of m (a lone candidate left over goes
    on without one) until one is left: 3 calls for 8 candidates in windows of 4, 7 in windows of 2."""
    seed: int = seed_field()
    """Judge that picks: seed of the order its candidates are shown in (per prompt)."""
    prompt: str | None = None
    """Judge that picks: a prompt template file with {question} and {candidates} (default:
    the shipped ``winnow/data/judge_pick.txt``, which asks for the number as ``[[k]]``)."""
    max_tokens: int = bounded(64, ge=1)
    """Judge that picks: tokens its reply may take."""
    api_key_env: str | None = None
    """Judge that picks: name of the environment variable holding its API key (never stored)."""
    concurrency: int = bounded(16, ge=1)
    """Judge that picks: requests in flight at once."""
    price_per_mtok: list[float] | None = None
    """Judge that picks: ``IN,OUT``, the price of a million prompt tokens and of a million
    completion tokens; each row's ``judge_usage`` (and a server's answer) then shows what its
    calls cost. Unset: token counts only."""

    def validate(self) -> None:
        """Every field in its range; a judge needs its URL and model, and its options a judge."""
        check_fields(self)
        check_price("pick.price_per_mtok", self.price_per_mtok)
        if self.select_by == "judge":
            for name, flag in (("judge", "--pick-judge"), ("judge_model", "--pick-model")):
                if not getattr(self, name):
                    raise WinnowError(f"pick.{name}: select_by judge needs it ({flag})")
            return
        defaults = PickConfig()
        for name in [f.name for f in fields(self) if f.name != "select_by"]:
            if getattr(self, name) != getattr(defaults, name):
                raise WinnowError(f"pick.{name}: applies to select_by judge only (--select-by judge)")


def _share(text: str) -> float:
    """``0.6`` -> 0.6; anything else NaN (which no range holds)."""
    try:
        return float(text)
    except ValueError:
        return math.nan
