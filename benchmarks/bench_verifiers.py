"""Benchmark the math, choice and exact verifiers: completions per second on 2 cores.

Run by hand: ``python benchmarks/bench_verifiers.py`` (about a minute on 2 cores) or with
``--quick``. The completions are GSM8K-shaped: a few sentences of worked arithmetic ending
in the answer (half of them right), 8 samples per prompt, the reference in GSM8K's
``#### N`` form; choice answers end in a letter written one of the usual ways; exact answers
are short phrases. Each verifier is timed two ways, side by side in one run:

  one process:  the verifier called on batches of ``fn_batch_size`` rows in this process;
  score stage:  the score stage's worker (``ScoreWorker.run``) with ``--score-processes``
                processes: for math, each batch a call in a pool process, the pool started
                before timing (its start-up is printed apart); choice and exact are regex
                work of microseconds, scored in the worker itself (a process would cost
                more than it saves), so this column adds only the stage's own bookkeeping.

Target: at least 200 completions/s for each through the score stage, and the stage's
rewards equal to the one-process call's. Best of ``--repeats``; the machine is shared,
so wall times vary from run to run. ``main(argv)`` returns the checks for ``run_all.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from winnow.config import ScoreConfig
from winnow.executors import ShardTask
from winnow.stages.score import ScoreWorker

NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis"]
THINGS = ["clips", "apples", "dollars", "pages", "marbles", "cookies", "minutes", "tickets"]


def gsm8k_like(rng: random.Random, prompts: int, n: int) -> tuple[list[str], list[str]]:
    """(completions, references): worked arithmetic ending in a number; about half right."""
    completions, references = [], []
    for _ in range(prompts):
        a, b = rng.randint(2, 400), rng.randint(2, 400)
        answer = a + b * 2
        reference = f"She had {a} and got {b} twice, {b} * 2 = <<{b}*2={2 * b}>>{2 * b}.\n#### {answer}"
        for _ in range(n):
            name, thing = rng.choice(NAMES), rng.choice(THINGS)
            said = answer if rng.random() < 0.5 else answer + rng.randint(1, 9)
            text = (
                f"{name} starts with {a} {thing}. Then {name} gets {b} more {thing} two times, "
                f"which is {b} * 2 = {2 * b} {thing}. Adding them up, {a} + {2 * b} = {said}. "
                f"So {name} has {said} {thing} in total. The answer is {said}."
            )
            completions.append(text)
            references.append(reference)
    return completions, references


def choice_like(rng: random.Random, count: int) -> tuple[list[str], list[str]]:
    forms = ["The answer is {}.", "So the correct option is ({}).", "\\boxed{{{}}}", "{}. Paris", "Answer: {}"]
    completions, references = [], []
    for _ in range(count):
        letter = rng.choice("ABCD")
        completions.append(
            "Let us look at each option in turn and rule out the others. " + rng.choice(forms).format(letter)
        )
        references.append(rng.choice("ABCD"))
    return completions, references


def exact_like(rng: random.Random, count: int) -> tuple[list[str], list[str]]:
    words = ["Paris", "the Eiffel Tower", "Marie Curie", "1969", "Mount Everest", "blue whale"]
    completions = [rng.choice(words) + rng.choice(["", ".", "!", "  "]) for _ in range(count)]
    return completions, [rng.choice(words) for _ in range(count)]


def payload(completions: list[str], references: list[str]) -> list:
    return [
        (
            f"question {i // 8}",
            {"prompt_id": f"q{i // 8}", "sample_index": i % 8, "model": "m", "text": c},
            {"answer": r},
        )
        for i, (c, r) in enumerate(zip(completions, references, strict=True))
    ]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="512 completions per verifier, one repeat")
    args.add_argument("--processes", type=int, default=2, help="score stage processes (default: 2)")
    args.add_argument("--repeats", type=int, default=3)
    opts = args.parse_args(argv)
    count = 512 if opts.quick else 4096
    repeats = 1 if opts.quick else opts.repeats
    rng = random.Random(0)
    data = {
        "math": gsm8k_like(rng, count // 8, 8),
        "choice": choice_like(rng, count),
        "exact": exact_like(rng, count),
    }
    from winnow.rewards import load_reward_fn

    print(f"{count} completions per verifier, {os.cpu_count()} CPUs visible, best of {repeats}")
    print(
        f"{'verifier':<9}{'one process /s':>16}{'score stage /s':>16}{'ratio':>8}{'pool start s':>14}{'mean reward':>13}"
    )
    rows = []
    for name, (completions, references) in data.items():
        fn = load_reward_fn(name)
        step = ScoreConfig().fn_batch_size
        fn(["q"], completions[:1], answer=references[:1])  # imports (math-verify loads sympy) outside the timing

        def serial(fn=fn, completions=completions, references=references, step=step):
            return [
                fn(["q"] * len(completions[i : i + step]), completions[i : i + step], answer=references[i : i + step])
                for i in range(0, len(completions), step)
            ]

        t_serial = best_of(repeats, serial)
        expected = [v for scores in serial() for v in scores]
        worker = ScoreWorker(ScoreConfig(reward_fn=name, processes=opts.processes), columns=("answer",))
        task = ShardTask("bench", payload(completions, references))
        start = time.perf_counter()
        warm = ShardTask("warm", payload(completions[: 2 * step], references[: 2 * step]))
        worker.run(warm)  # starts the pool: every process imports winnow and the verifier
        t_pool_start = time.perf_counter() - start
        out: list[dict] = []
        t_stage = best_of(
            repeats, lambda worker=worker, task=task, out=out: out.__setitem__(slice(None), worker.run(task))
        )
        mean = sum(r["reward"] or 0.0 for r in out) / len(out)
        serial_per_s, stage_per_s = count / t_serial, count / t_stage
        print(
            f"{name:<9}{serial_per_s:>16,.0f}{stage_per_s:>16,.0f}"
            f"{stage_per_s / serial_per_s:>8.2f}{t_pool_start:>14.1f}{mean:>13.3f}"
        )
        same = [r["reward"] for r in out] == expected
        rows.append(check(f"{name}: completions/s through the score stage", stage_per_s, ">= 200", stage_per_s >= 200))
        rows.append(check(f"{name}: stage rewards equal the one-process call's", float(same), "== 1", same))
    return {"benchmark": "verifiers", "rows": rows, "passed": all(r["passed"] for r in rows)}


def check(name: str, measured: float, target: str, passed: bool) -> dict:
    return {"check": name, "measured": measured, "target": target, "passed": passed, "detail": ""}


if __name__ == "__main__":
    main()
