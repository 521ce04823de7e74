"""Agreement of the ``math`` verifier with known truth and with raw math-verify.

Run by hand: ``python benchmarks/agreement_math.py`` (about a minute on 2 cores), ``--json``
for the figures as JSON. The cases are the default suite's (``tests/verifiers/cases/
math.jsonl``: completion, reference, expected verdict, class) plus cases varied from them
by program: each raw-LaTeX reference class with other numbers (intervals, sets, tuples,
multiples of pi, scientific notation, fractions, square roots, polynomials, money), its
right answer and a wrong one that the old reading (the reference's last number) passed.

Printed: cases; agreement with known truth (the verdict, None for unscored, equal to the
expected one); false positives (1.0 where the truth is 0.0 or unscored); unscored (None)
rows; agreement with raw math-verify on delimited references: for every case whose
reference is a string, ``verify(parse("$" + reference + "$"), parse(completion))`` (or the
reference as it is when it is delimited already) against winnow's verdict on the same
case with the reference written that way; and throughput, completions per second through
``math`` (its worker started before timing), next to raw math-verify in this process.

Targets: no false positive, at least 95% right, the same verdicts as raw math-verify on
every delimited case.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

from winnow.verifiers.math import _DELIMITED, math

CASES = Path(__file__).resolve().parent.parent / "tests" / "verifiers" / "cases" / "math.jsonl"


def boxed(answer: str) -> str:
    return f"Working through it step by step, the final answer is $\\boxed{{{answer}}}$."


def varied(rng: random.Random, count: int) -> list[dict]:
    """``count`` cases per class: (reference, right answer, wrong answer, class)."""
    rows = []
    for _ in range(count):
        a, b = sorted(rng.sample(range(-20, 40), 2))
        p, q = rng.randint(1, 30), rng.randint(2, 31)
        while q == p:
            q = rng.randint(2, 31)
        k = rng.randint(2, 9)
        forms = [
            ("interval", f"({a}, {b}]", f"({a},{b}]", f"{b}"),
            ("interval", f"[{a}, \\infty)", f"[{a},\\infty)", f"({a}, \\infty)"),
            ("inequality", f"x \\ge {a}", f"x \\geq {a}", f"{a}"),
            ("set", f"\\{{{a}, {b}\\}}", f"\\{{{b}, {a}\\}}", f"{b}"),
            ("tuple", f"({a}, {b})", f"({a},{b})", f"{b}"),
            ("pi", f"{k}\\pi", f"{k}\\pi", f"{k}"),
            ("scientific", f"{k}.5 \\times 10^{{{p}}}", f"{k}.5 \\cdot 10^{{{p}}}", f"{p}"),
            ("dfrac", f"\\dfrac{{{p}}}{{{q}}}", f"\\frac{{{p}}}{{{q}}}", f"{q}"),
            ("sqrt", f"\\frac{{\\sqrt{{{k}}}}}{{{q}}}", f"\\frac{{\\sqrt{{{k}}}}}{{{q}}}", f"{q}"),
            ("polynomial", f"x^2+{2 * k}x+{k * k}", f"(x+{k})^2", f"{k * k}"),
            ("currency", f"\\${p},{q:03d}", f"{p}{q:03d}", f"{q}"),
        ]
        for cls, reference, right, wrong in forms:
            rows.append({"completion": boxed(right), "reference": reference, "expected": 1.0, "class": cls})
            rows.append({"completion": boxed(wrong), "reference": reference, "expected": 0.0, "class": cls})
    return rows


def delimited(reference: str) -> str:
    return reference if _DELIMITED.search(reference) else f"${reference}$"


def raw_math_verify(rows: list[dict]) -> list[float]:
    from math_verify import parse, verify

    out = []
    for r in rows:
        gold = parse(delimited(r["reference"]))
        answer = parse(r["completion"])
        out.append(1.0 if gold and answer and verify(gold, answer) else 0.0)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--varied", type=int, default=10, help="programmatic cases per class form")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    rows = [json.loads(line) for line in CASES.read_text().splitlines()]
    rows += varied(random.Random(args.seed), args.varied)
    completions = [r["completion"] for r in rows]
    math(["q"], ["1"], answer=["1"])  # the worker started and math-verify imported, before timing

    start = time.perf_counter()
    got = math(["q"] * len(rows), completions, answer=[r["reference"] for r in rows])
    took = time.perf_counter() - start
    right = sum(v == r["expected"] for v, r in zip(got, rows, strict=True))
    false_pos = [r for v, r in zip(got, rows, strict=True) if v == 1.0 and r["expected"] != 1.0]

    # raw math-verify against winnow on the same references, delimited
    texts = [r for r in rows if isinstance(r["reference"], str) and r["reference"].rpartition("####")[2].strip()]
    wrapped = [dict(r, reference=delimited(r["reference"].rpartition("####")[2])) for r in texts]
    start = time.perf_counter()
    raw = raw_math_verify(wrapped)
    raw_took = time.perf_counter() - start
    ours = math(["q"] * len(wrapped), [r["completion"] for r in wrapped], answer=[r["reference"] for r in wrapped])
    same = sum(a == b for a, b in zip(raw, ours, strict=True))
    differ = [(r["reference"], r["completion"], a, b) for r, a, b in zip(wrapped, raw, ours, strict=True) if a != b]

    figures = {
        "cases": len(rows),
        "right": right,
        "right_rate": round(right / len(rows), 4),
        "false_positives": len(false_pos),
        "unscored": sum(v is None for v in got),
        "delimited_cases": len(wrapped),
        "same_as_math_verify": same,
        "differ_from_math_verify": differ,
        "items_per_s": round(len(rows) / took, 1),
        "math_verify_items_per_s": round(len(wrapped) / raw_took, 1),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{'cases':<42}{figures['cases']}")
        print(f"{'agreement with known truth':<42}{right}/{len(rows)} ({100 * right / len(rows):.1f}%)")
        print(f"{'false positives':<42}{len(false_pos)}")
        print(f"{'unscored (None)':<42}{figures['unscored']}")
        print(f"{'same verdict as math-verify, delimited':<42}{same}/{len(wrapped)}")
        print(f"{'throughput, winnow math (items/s)':<42}{figures['items_per_s']}")
        print(f"{'throughput, raw math-verify (items/s)':<42}{figures['math_verify_items_per_s']}")
        for r in false_pos:
            print("false positive:", r)
        for d in differ:
            print("differs from math-verify:", d)
    return figures


if __name__ == "__main__":
    main()
