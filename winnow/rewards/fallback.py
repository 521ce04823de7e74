"""Rule first, then a judge: the rows a rule verifier cannot decide go to a judge model.

The verifiers that compare an answer with a reference column (``math``, ``choice``,
``exact``: a built-in whose ``reads`` holds ``reference_column``) miss correct answers
written in a way their rule does not read. With ``score.fallback_judge``, a row goes to a
judge behind an OpenAI-compatible server when:

- the rule read no answer in it (``no_answer``; ``fallback_on: no-answer``, the default), or
- with ``fallback_on: fail``, also when the rule read an answer and failed it.

Rows the rule passes, and rows it leaves unscored (no reference to compare), never go to
the judge; nor does an empty answer (nothing to be equivalent). The judge sees the
question, the reference and the answer in one prompt (the shipped
``winnow/data/judge_equivalence.txt``, or ``score.fallback_prompt``) and its verdict
(``parse_verdict``) replaces the rule's 0.0: 1.0 for equivalent, 0.0 for not. A reply
with no verdict leaves the rule's score.

Every row records what decided it (``row_fields``): ``rule`` (``pass``, ``fail`` or
``no_answer``: the rule's reading), ``decided_by`` (``rule`` or ``judge``) and, where the
judge was asked, ``judge`` (``pass``, ``fail`` or ``unclear``), ``judge_reply`` and
``judge_usage`` (its request's tokens, which the score manifest sums as for the judge reward). The score
stage adds them up (``tally``) into its manifest's ``rule_then_judge`` counts, which the
report shows.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from winnow import remote
from winnow.errors import WinnowError
from winnow.rewards import BUILTINS, RewardFn
from winnow.rewards.judge import ask, fill, load_template, render_prompt
from winnow.verifiers import Scores

TEMPLATE = "judge_equivalence.txt"
"""The shipped prompt of the fallback judge (``winnow/data/``)."""
SLOTS = ("question", "reference", "answer")
MAX_TOKENS = 16
"""Tokens the judge may answer with: a verdict is a word."""

_VERDICT = re.compile(
    r"\b(?:(?P<no>(?:not|isn't|is\s+not|aren't|are\s+not)\s+(?:equivalent|correct|the\s+same)"
    r"|no|inequivalent|different|incorrect|wrong|false)|(?P<yes>yes|equivalent|correct|the\s+same|true))\b",
    re.IGNORECASE,
)


def parse_verdict(reply: str) -> float | None:
    """1.0 (equivalent) or 0.0 (not) from the judge's reply; the first verdict word decides;
    None when the reply holds none.

    >>> [parse_verdict(r) for r in ["yes", "No.", "Equivalent", "not equivalent", "The answer is not correct"]]
    [1.0, 0.0, 1.0, 0.0, 0.0]
    >>> [parse_verdict(r) for r in ["Verdict: YES, both are 1/2", "They are different", "maybe", ""]]
    [1.0, 0.0, None, None]
    """
    match = _VERDICT.search(reply)
    if match is None:
        return None
    return 0.0 if match.group("no") else 1.0


def reference_shown(reference) -> str:
    """A reference column's value as the judge reads it: text as it is, accepted answers
    joined by ``or``, anything else as JSON.

    >>> [reference_shown(r) for r in ["#### 72", 0.5, ["Paris", "Paris, France"], {"x": 1}]]
    ['#### 72', '0.5', 'Paris or Paris, France', '{"x": 1}']
    """
    if isinstance(reference, str):
        return reference
    if isinstance(reference, list):
        return " or ".join(reference_shown(r) for r in reference)
    return json.dumps(reference)


def falls_back(spec: str) -> bool:
    """Whether the built-in ``spec`` is a rule a judge can back: it compares an answer with a
    reference column."""
    return spec in BUILTINS and "reference_column" in BUILTINS[spec].reads


def check_fallback(config) -> None:
    """Refuse a fallback judge that no reward of ``config`` would use (it would be ignored)."""
    if not config.fallback_judge:
        return
    load_template(config.fallback_prompt, TEMPLATE, SLOTS, "score.fallback_prompt")
    specs = [spec for kind, spec in config.rewards() if kind == "fn"]
    if not any(falls_back(spec) for spec in specs):
        rules = ", ".join(name for name in BUILTINS if falls_back(name))
        raise WinnowError(
            f"score.fallback_judge: backs a rule verifier ({rules}); the rewards are {', '.join(specs) or 'none'}"
        )


def fallback_note(config, spec: str) -> str:
    """What a plan says after a rule's name when a judge backs it (empty otherwise)."""
    if not (config.fallback_judge and falls_back(spec)):
        return ""
    rows = "no answer" if config.fallback_on == "no-answer" else "no answer or a fail"
    return f", then judge {config.judge_model} at {config.fallback_judge} on {rows}"


class RuleThenJudge:
    """``RuleThenJudge(rule, client, model=...)(prompts, completions, **kw) -> Scores``: the
    rule's scores (and no-answer positions), with the rows it cannot decide decided by the
    judge; ``last_extras`` holds each row's fields (``row_fields``) of the last call."""

    def __init__(
        self,
        rule: RewardFn,
        client: remote.ClientSettings,
        *,
        model: str,
        on: str = "no-answer",
        prompt: str | None = None,
        reference_column: str = "answer",
    ):
        self.rule, self.client, self.model, self.on = rule, client, model, on
        self.template = load_template(prompt, TEMPLATE, SLOTS, "score.fallback_prompt")
        self.reference_column = reference_column
        self.pacer = client.pacer()
        """The per-minute limits (``judge_max_requests_per_minute``, ...), shared by all its calls."""
        self.last_extras: list[dict] = []

    def __call__(self, prompts: list, completions: list[str], **kw) -> Scores:
        scores = self.rule(prompts, completions, **kw)
        no_answer = set(getattr(scores, "no_answer_at", None) or ())  # the rule verifiers give positions
        rule = [_reading(v, i in no_answer) for i, v in enumerate(scores)]
        asked = [
            i
            for i, reading in enumerate(rule)
            if completions[i].strip() and (reading == "no_answer" or (reading == "fail" and self.on == "fail"))
        ]
        references = kw[self.reference_column]
        texts = [
            fill(
                self.template,
                {
                    "question": render_prompt(prompts[i]),
                    "reference": reference_shown(references[i]),
                    "answer": completions[i],
                },
            )
            for i in asked
        ]
        ids = kw.get("prompt_ids") or list(range(len(completions)))
        asking = [ids[i] for i in asked]
        replies = ask(self.client, model=self.model, texts=texts, ids=asking, max_tokens=MAX_TOKENS, pacer=self.pacer)
        out = list(scores)
        self.last_extras = [row_fields(reading) for reading in rule]
        for i, (reply, usage) in zip(asked, replies, strict=True):
            verdict = parse_verdict(reply)
            if verdict is not None:
                out[i] = verdict
            # its usage too: the score manifest sums every judge's (judge_usage) and prices it
            self.last_extras[i] = {**row_fields(rule[i], verdict, reply), "judge_usage": usage}
        return Scores(out, no_answer_at=sorted(no_answer))


def _reading(value: float | None, no_answer: bool) -> str | None:
    """The rule's reading of a row: no_answer, pass (1.0), fail; None where it left it unscored."""
    if value is None:
        return None
    return "no_answer" if no_answer else "pass" if value == 1.0 else "fail"


def row_fields(rule: str | None, verdict: float | None = None, reply: str | None = None) -> dict:
    """What a score row records of how it was decided (none for a row the rule left unscored).

    >>> row_fields("pass"), row_fields(None)
    ({'rule': 'pass', 'decided_by': 'rule'}, {})
    >>> row_fields("fail", 1.0, "yes")
    {'rule': 'fail', 'decided_by': 'judge', 'judge': 'pass', 'judge_reply': 'yes'}
    >>> row_fields("no_answer", None, "hmm")["decided_by"], row_fields("no_answer", None, "hmm")["judge"]
    ('rule', 'unclear')
    """
    if rule is None:
        return {}
    if reply is None:
        return {"rule": rule, "decided_by": "rule"}
    judge = "unclear" if verdict is None else "pass" if verdict == 1.0 else "fail"
    return {"rule": rule, "decided_by": "rule" if verdict is None else "judge", "judge": judge, "judge_reply": reply}


TALLY = ("rule_passes", "judge_asked", "judge_passes", "judge_fails", "judge_unclear", "judge_overrides")
"""The counts of ``tally``, in the order the summary and report give them."""


def tally(row: dict) -> Counter:
    """One score row's contribution to the ``rule_then_judge`` counts: a rule pass; a row
    the judge was asked about, and its verdict; an override (the rule read an answer and
    failed it, the judge passed it).

    >>> dict(tally({"rule": "fail", "decided_by": "judge", "judge": "pass"}))
    {'judge_asked': 1, 'judge_passes': 1, 'judge_overrides': 1}
    >>> dict(tally({"rule": "pass", "decided_by": "rule"})), dict(tally({}))
    ({'rule_passes': 1}, {})
    """
    out: Counter = Counter()
    out["rule_passes"] += row.get("rule") == "pass"
    if "judge" in row:
        out["judge_asked"] += 1
        out[f"judge_{'passes' if row['judge'] == 'pass' else 'fails' if row['judge'] == 'fail' else 'unclear'}"] += 1
        out["judge_overrides"] += row["rule"] == "fail" and row["judge"] == "pass"
    return +out
