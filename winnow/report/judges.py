"""The report's judge sections: a rule backed by a judge (``score.fallback_judge``) and a
judge that picked Best-of-N's completions (``bon --select-by judge``).

- ``rule_then_judge``: the score stage's counts (``winnow.rewards.fallback.tally``), as its
  manifest holds them.
- ``judge_pick``: read from ``RUN_DIR/best.jsonl`` when ``bon --select-by judge`` wrote it
  there: on how many prompts the judge's pick was also the reward's pick (the highest
  reward, earliest sample on a tie), the judge calls made and the windows whose reply
  named no candidate (``winnow.rewards.pick``).
"""

from __future__ import annotations

import json
from pathlib import Path

from winnow.budget import Usage
from winnow.rewards.fallback import TALLY
from winnow.summary import usage_text

BEST = "best.jsonl"
"""Where ``winnow bon`` writes by default, in the run dir."""


def judge_sections(run_dir: Path, scored: dict) -> dict:
    """The report's ``rule_then_judge`` and ``judge_pick`` entries, those that apply."""
    out = {}
    if "rule_then_judge" in scored:
        out["rule_then_judge"] = scored["rule_then_judge"]
    picks = pick_agreement(run_dir / BEST)
    if picks is not None:
        out["judge_pick"] = picks
    return out


def pick_agreement(path: Path) -> dict | None:
    """How often a judge's pick was the reward's: None unless ``path`` holds judge picks.

    ``agreement`` = agree / prompts compared (those with both a judge's pick and a scored
    completion to be the reward's pick); None when there are none. ``as_good``: prompts
    whose judge's pick has the highest reward, the reward's pick or another tied with it.
    """
    if not path.is_file():
        return None
    prompts = agree = as_good = compared = calls = fallbacks = 0
    used: list[dict | None] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("selected_by") != "judge":
                return None  # a Best-of-N by reward or by votes: nothing a judge picked
            prompts += 1
            calls += row["judge_calls"]
            fallbacks += row["judge_fallbacks"]
            used.append(row.get("judge_usage"))
            if row["sample_index"] is not None and row["reward_pick"] is not None:
                compared += 1
                agree += row["sample_index"] == row["reward_pick"]
                as_good += row["reward"] == row["best_reward"]  # rewards tie often: another sample as good
    if not prompts:
        return None
    return {
        "prompts": prompts,
        "compared": compared,
        "agree": agree,
        "agreement": agree / compared if compared else None,
        "as_good": as_good,
        "judge_calls": calls,
        "fallbacks": fallbacks,
        **({"judge_usage": summed_usage(used)} if used and None not in used else {}),  # rows written before: none
    }


def summed_usage(rows: list) -> dict:
    """The rows' ``judge_usage`` entries (``winnow.budget.Usage.record``) summed; priced as
    they are (one price per run).

    >>> row = {"requests": 3, "prompt_tokens": 9, "completion_tokens": 3, "price_per_mtok": [1.0, 2.0], "cost": 1.5e-05}
    >>> summed_usage([row, row])
    {'requests': 6, 'prompt_tokens': 18, 'completion_tokens': 6, 'price_per_mtok': [1.0, 2.0], 'cost': 3e-05}
    """
    total = Usage()
    for u in rows:
        total.requests += u["requests"]
        total.prompt_tokens += u["prompt_tokens"]
        total.completion_tokens += u["completion_tokens"]
        total.unreported += u.get("requests_without_usage", 0)
    return total.record(rows[0].get("price_per_mtok"))


NAMES = {
    "rule_passes": "rule passes",
    "judge_asked": "rows sent to the judge",
    "judge_passes": "judge passes",
    "judge_fails": "judge fails",
    "judge_unclear": "judge replies without a verdict (the rule's score stands)",
    "judge_overrides": "judge overrides (the rule failed the answer, the judge passed it)",
}
assert tuple(NAMES) == TALLY


def judges_markdown(r: dict) -> list[str]:
    """report.md's judge sections (none when neither applies)."""
    lines: list[str] = []
    counts = r.get("rule_then_judge")
    if counts:
        lines += ["## Rule, then a judge", "", "| rows | count |", "|---|---|"]
        lines += [f"| {NAMES[name]} | {counts[name]} |" for name in TALLY]
        lines += [""]
    pick = r.get("judge_pick")
    if pick:
        share = "-" if pick["agreement"] is None else f"{pick['agreement']:.1%}"
        lines += [
            "## A judge that picks",
            "",
            f"The judge's pick was also the reward's pick on {pick['agree']} of {pick['compared']} prompts "
            f"({share}), and had the highest reward (the reward's pick or one tied with it) on {pick['as_good']}; "
            f"{pick['judge_calls']} judge calls, {pick['fallbacks']} windows whose reply named no "
            "candidate (the window's highest reward taken instead)."
            + (f" The judge's calls used {usage_text(pick['judge_usage'])}." if pick.get("judge_usage") else ""),
            "",
        ]
    return lines
