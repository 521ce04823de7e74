"""A judge that picks: a judge model names the best of a prompt's candidates, in a tournament.

As in GenSelect (NeMo-Skills, optillm), the judge compares candidates side by side rather
than scoring each alone. For one prompt's n candidates:

1. **Order.** Their positions are shuffled by ``random.Random(f"{seed}:{key}")`` (``key``:
   the prompt's id), so the judge's bias for a position is not the sampler's order, and
   one seed gives one order on every run.
2. **Windows.** The order is cut into windows of ``window`` candidates (the last may be
   shorter). Each window of two or more is one judge call, showing its candidates
   numbered 1..k in the prompt (``winnow/data/judge_pick.txt``, or a template with
   ``{question}`` and ``{candidates}``); a lone candidate goes on without a call. The
   winners, in order, are the next round's candidates, until one is left. Calls: one when
   n <= window; in general ceil(m / window) a round of m (less one where a lone candidate
   is left over): 3 for 8 candidates in windows of 4, 7 in windows of 2, 5 for 16 in 4.
3. **Reading the reply** (``parse_pick``): ``[[k]]``, else ``Candidate k``, else a reply that
   is a number alone; every mention must name the same k of the window. A reply that
   names none (or two, or one past the window) is a **fallback**: the window's highest
   reward wins (the earliest shown on a tie, or where no reward is known), and is counted.

Every prompt's tournament runs at once, round by round: a round's windows of all prompts
go to the judge together, ``concurrency`` at a time (``winnow.rewards.judge.ask_async``).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from winnow import remote
from winnow.budget import Usage
from winnow.config import PickConfig
from winnow.rewards.judge import ask_async, fill, load_template, render_prompt

TEMPLATE = "judge_pick.txt"
"""The shipped prompt of the judge that picks (``winnow/data/``)."""
SLOTS = ("question", "candidates")

_PATTERNS = (
    re.compile(r"\[\[\s*(\d+)\s*\]\]"),
    re.compile(r"(?i)\bcandidate\s*#?\s*(\d+)\b"),
    re.compile(r"\A\W*(\d+)\W*\Z"),
)


def parse_pick(reply: str, count: int) -> int | None:
    """The 1-based candidate number a reply names among ``count``; None when it names none,
    several, or one out of range (see the module's rule 3).

    >>> [parse_pick(r, 4) for r in ["[[3]]", "Candidate 3", "3", "The best is candidate #2.", " 4. "]]
    [3, 3, 3, 2, 4]
    >>> [parse_pick(r, 4) for r in ["[[5]]", "Candidate 1 beats candidate 2", "none of them", "[[2]] or [[3]]"]]
    [None, None, None, None]
    >>> parse_pick("Candidate 1 is wrong. [[2]]", 4)
    2
    """
    for pattern in _PATTERNS:
        named = {int(n) for n in pattern.findall(reply)}
        if named:
            k = named.pop()
            return k if not named and 1 <= k <= count else None
    return None


def shuffled(n: int, seed: int, key: str) -> list[int]:
    """Positions 0..n-1 in the order the judge is shown them, one order per (seed, key).

    >>> shuffled(5, 0, "p1") == shuffled(5, 0, "p1"), sorted(shuffled(5, 0, "p1"))
    (True, [0, 1, 2, 3, 4])
    """
    order = list(range(n))
    random.Random(f"{seed}:{key}").shuffle(order)
    return order


def windows(alive: list[int], size: int) -> list[list[int]]:
    """One round's windows: ``alive`` cut into runs of ``size`` (the last may be shorter).

    >>> windows([4, 0, 3, 1, 2], 2)
    [[4, 0], [3, 1], [2]]
    """
    return [alive[i : i + size] for i in range(0, len(alive), size)]


def calls_for(n: int, size: int) -> int:
    """Judge calls a tournament of ``n`` candidates makes in windows of ``size``.

    >>> [calls_for(n, 4) for n in (1, 2, 4, 5, 8, 16)], calls_for(8, 2)
    ([0, 1, 1, 2, 3, 5], 7)
    """
    calls, m = 0, n
    while m > 1:
        full, rest = divmod(m, size)
        calls += full + (rest > 1)
        m = full + (rest > 0)
    return calls


@dataclass(frozen=True)
class Judge:
    """The judge that picks: where it is, and how it is asked."""

    client: remote.ClientSettings
    model: str
    window: int = 4
    """Candidates shown in one call (>= 2)."""
    seed: int = 0
    template: str = field(default_factory=lambda: load_template(None, TEMPLATE, SLOTS, "pick.prompt"))
    max_tokens: int = 64
    price_per_mtok: list[float] | None = None
    """``[IN, OUT]`` per million tokens: what a server's answer says its calls cost (None: tokens only)."""


def judge_of(pick: PickConfig) -> Judge:
    """The judge ``pick`` (``select_by: judge``) describes; its prompt file is read here."""
    return Judge(
        remote.ClientSettings(base_url=pick.judge or "", api_key_env=pick.api_key_env, concurrency=pick.concurrency),
        pick.judge_model or "",
        window=pick.window,
        seed=pick.seed,
        template=load_template(pick.prompt, TEMPLATE, SLOTS, "pick.prompt"),
        max_tokens=pick.max_tokens,
        price_per_mtok=pick.price_per_mtok,
    )


@dataclass
class Pick:
    """One prompt's tournament."""

    index: int
    """The chosen candidate's position in the list given; -1 when there was none."""
    calls: int = 0
    """Judge calls made."""
    fallbacks: int = 0
    """Windows whose reply named no candidate (their highest reward won)."""
    order: list[int] = field(default_factory=list)
    """The candidates' positions in the order the judge was shown them."""
    usage: Usage = field(default_factory=Usage)
    """The tokens its calls used, as the judge's replies report them (``usage.requests`` ==
    ``calls``; a reply without ``usage`` counts its completion tokens alone, and is counted
    in ``usage.unreported``)."""


async def pick_best_async(
    judge: Judge,
    questions: list,
    candidates: Sequence[Sequence[str | None]],
    rewards: Sequence[Sequence[float]] | None = None,
    keys: Sequence[str] | None = None,
) -> list[Pick]:
    """The judge's pick among each prompt's candidates (M prompts; see the module's rule).

    questions: M prompts (text or chat messages); candidates: M lists of texts (None: no
    such candidate, never shown); rewards: M lists aligned with candidates (NaN: unscored),
    read only to settle a fallback; keys: M prompt ids that seed each order (default:
    their positions). Returns M ``Pick``. Awaited inside a running event loop (a server's);
    ``pick_best`` is its blocking twin.
    """
    keys = list(keys) if keys is not None else [str(i) for i in range(len(questions))]
    picks, alive = [], []
    for given, key in zip(candidates, keys, strict=True):
        order = [i for i in shuffled(len(given), judge.seed, key) if given[i] is not None]
        picks.append(Pick(order[0] if len(order) == 1 else -1, order=order))
        alive.append(order)
    while any(len(a) > 1 for a in alive):
        asked = [(m, w) for m, a in enumerate(alive) if len(a) > 1 for w in windows(a, judge.window) if len(w) > 1]
        texts = [_prompt(judge.template, questions[m], [candidates[m][i] or "" for i in w]) for m, w in asked]
        answered = await ask_async(
            judge.client, model=judge.model, texts=texts, ids=[keys[m] for m, _ in asked], max_tokens=judge.max_tokens
        )
        winners: dict[tuple[int, int], int] = {}
        for (m, w), (reply, used) in zip(asked, answered, strict=True):
            k = parse_pick(reply, len(w))
            picks[m].calls += 1
            picks[m].usage.add(used)
            if k is None:
                picks[m].fallbacks += 1
                winners[m, w[0]] = _highest(w, rewards[m] if rewards is not None else None)
            else:
                winners[m, w[0]] = w[k - 1]
        for m, a in enumerate(alive):
            if len(a) > 1:
                alive[m] = [winners.get((m, w[0]), w[0]) for w in windows(a, judge.window)]
                if len(alive[m]) == 1:
                    picks[m].index = alive[m][0]
    return picks


pick_best = remote.blocking(pick_best_async)
"""``pick_best_async`` run to the end outside an event loop (``winnow bon``, ``winnow.best_of_n``)."""


def _prompt(template: str, question, texts: list[str]) -> str:
    shown = "\n\n".join(f"Candidate {k}:\n{text}" for k, text in enumerate(texts, start=1))
    return fill(template, {"question": render_prompt(question), "candidates": shown})


def _highest(window: list[int], rewards: Sequence[float] | None) -> int:
    """The window's candidate of highest reward; the first shown on a tie or with none known."""
    if rewards is None:
        return window[0]
    known = [(-rewards[i], k) for k, i in enumerate(window) if not math.isnan(rewards[i])]
    return window[min(known)[1]] if known else window[0]
