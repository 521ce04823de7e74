"""How often ``choice`` reads a completion right: the hand-written case set and a generated one.

    python benchmarks/agreement_choice.py          # a table
    python benchmarks/agreement_choice.py --json   # the same figures as JSON

Each case has a completion, a reference letter and its true verdict: ``pass`` (the stated
letter is the reference), ``fail`` (another letter is stated) or ``no_answer`` (none is
stated: a bare list of options, a hedge, prose whose "a" or "I" is no letter). Accuracy is
the share of cases whose verdict ``choice`` gets; a false positive is a case scored 1.0
whose true verdict is not ``pass`` (the failure that puts a wrong answer in training data).

The generated set varies letter case, the wrapping of the letter (bare, ``(b)``, ``[b]``,
``**B**``, ``\\textbf{}``, ``$B$``, quotes) and what follows it, under several answer
statements; it adds self-corrections, option lists, hedges and article/pronoun traps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from winnow.verifiers.choice import choice

CASES = Path(__file__).resolve().parents[1] / "tests" / "verifiers" / "cases" / "choice.jsonl"
LETTERS = "ABCDEFGH"  # I and J are kept out of generated letters: "I" is the pronoun trap
STATEMENTS = ["The answer is {}", "Answer: {}", "I choose {}", "the best option is {}", "Final answer - {}"]
WRAPS = ["{}", "({})", "[{}]", "**{}**", "\\textbf{{{}}}", "${}$", "'{}'"]
ENDINGS = ["", ".", "!", " because it fits the data."]


def verdict(completion: str, reference) -> str:
    scores = choice(["q"], [completion], answer=[reference])
    return "no_answer" if scores.no_answer_at else ("pass" if scores[0] == 1.0 else "fail")


def generated(seed: int = 0) -> list[dict]:
    """Cases built from templates, each with its true verdict."""
    rng = random.Random(seed)
    cases = []

    def add(completion, reference, expected, form):
        cases.append({"completion": completion, "reference": reference, "expected": expected, "form": form})

    for statement, wrap, ending, lower in itertools.product(STATEMENTS, WRAPS, ENDINGS, (False, True)):
        before_word = lower and wrap == "{}" and ending.startswith(" ")
        letter = "A" if before_word and rng.random() < 0.5 else rng.choice(LETTERS)
        shown = letter.lower() if lower else letter
        # a bare "a" before more words is the article ("the answer is a prime"); "b".."h" are letters
        bare_word = before_word and letter == "A"
        reference = letter if rng.random() < 0.7 else rng.choice([x for x in LETTERS if x != letter])
        expected = "no_answer" if bare_word else ("pass" if reference == letter else "fail")
        text = statement.format(wrap.format(shown)) + ending
        add(text, reference, expected, f"{statement} / {wrap} / {ending!r} / {'lower' if lower else 'upper'}")
    for wrap in ["{}", "({})"]:
        first, last = rng.sample(LETTERS, 2)
        add(f"\\boxed{{{first}}}. Wait, actually the answer is {wrap.format(last)}", last, "pass", "correction")
        add(f"The answer is {first}. On reflection, the answer is {wrap.format(last)}.", last, "pass", "correction")
    for fmt, count in itertools.product(["{}) {}", "{}. {}", "({}) {}", "**{}.** {}"], (2, 3, 4, 5)):
        options = "\n".join(fmt.format(LETTERS[i], rng.randint(1, 99)) for i in range(count))
        add(options, rng.choice(LETTERS[:count]), "no_answer", f"list {fmt!r} x{count}")
    for hedge in ["either {} or {}", "{} or {}", "The answer is {} or {}.", "({}) or ({})", "Answer: {}/{}"]:
        x, y = rng.sample(LETTERS, 2)
        add(hedge.format(x, y), x, "no_answer", f"hedge {hedge!r}")
    for statement, noun in itertools.product(STATEMENTS, ["prime number", "good guess", "bit of both"]):
        add(statement.format("a") + f" {noun}.", "A", "no_answer", f"article after {statement!r}: a {noun}")
    for trap in ["The answer is a prime number.", "I think so.", "I choose a different method.", "A cat sat."]:
        add(trap, "A" if "a" in trap.lower() else "I", "no_answer", f"trap {trap!r}")
    return cases


def measure(cases: list[dict]) -> dict:
    start = time.perf_counter()
    got = [verdict(c["completion"], c["reference"]) for c in cases]
    seconds = time.perf_counter() - start
    right = sum(g == c["expected"] for g, c in zip(got, cases, strict=True))
    return {
        "forms": len({c["form"] for c in cases}),
        "cases": len(cases),
        "accuracy": right / len(cases),
        "false_positives": sum(g == "pass" != c["expected"] for g, c in zip(got, cases, strict=True)),
        "no_answer_expected": sum(c["expected"] == "no_answer" for c in cases),
        "no_answer_read": sum(g == "no_answer" for g in got),
        "per_second": len(cases) / seconds,
        "misses": [
            {"completion": c["completion"], "expected": c["expected"], "got": g}
            for g, c in zip(got, cases, strict=True)
            if g != c["expected"]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    hand = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    results = {"hand-written": measure(hand), "generated": measure(generated())}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("| set | forms | cases | accuracy | false positives | no answer (true / read) | completions/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['forms']} | {r['cases']} | {r['accuracy']:.1%} | {r['false_positives']} "
            f"| {r['no_answer_expected']} / {r['no_answer_read']} | {r['per_second']:,.0f} |"
        )
    for name, r in results.items():
        for miss in r["misses"]:
            print(f"miss ({name}): {miss['completion']!r}: expected {miss['expected']}, got {miss['got']}")


if __name__ == "__main__":
    main()
