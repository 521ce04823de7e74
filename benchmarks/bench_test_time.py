"""Test-time compute methods side by side (SmolLM2, CPU): accuracy and tokens sampled.

Each task is sampled once at a fixed N, for real; every method then reads the same samples
in sampling order, so the methods differ only in how they choose an answer and when they
stop, never in sampling luck. A method that stops early is charged the tokens of the
samples it read (whole steps), which is what sampling it for real would have cost: the
adaptive loop draws the same columns in the same order (``winnow.adaptive.is_closed`` is
the rule here and there).

(A) Arithmetic questions with a reference answer (math verifier, pass at 1.0), N = 16,
    sampled with each completion's confidence (``--top-logprobs 20``, which changes no
    token): one sample; majority of N (math-verify's equality); confidence-weighted
    majority (DeepConf: each vote weighs its sample's lowest group confidence);
    ``consensus:F`` and ``confident-consensus:F`` adaptive stopping (the latter after a
    warm-up step, as ``winnow.adaptive`` runs it); Best-of-N picked by the verifier (an
    oracle: it reads the reference).
(B) The constraints demo's training prompts (IFEval strict check), N = 8: one sample;
    Best-of-N by the verifier's reward (it reads the prompt's instruction list, as a
    verified run does); ``pass`` adaptive stopping.

Bands: 95% bootstrap intervals over prompts (``winnow.report.stats.paired_bootstrap``) of
each accuracy, and of its difference from the fixed-N method it is compared with.

    python benchmarks/bench_test_time.py [--questions 60] [--constraints 105] [--quick]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow import select as sel
from winnow import stages
from winnow.adaptive import WARM_UP, is_closed
from winnow.answers import answer_tools
from winnow.confidence import WEIGHT
from winnow.config import GenerateConfig, ScoreConfig
from winnow.demo_constraints import PASS, REWARD, constraint_prompts
from winnow.models import SMOLLM2
from winnow.records import Prompt
from winnow.report.stats import paired_bootstrap
from winnow.rundir import load_scored

STEPS = {"arithmetic": 4, "constraints": 2}
"""Samples per adaptive step, per task (an eighth of N, as bench_adaptive's step 2 of 16 is)."""
CONSENSUS = 0.6
"""``consensus:F``: stop once the leading answer holds this share of the samples (the
share the targets are checked at)."""
LOOSER = 0.5
"""A looser share, shown beside it (2 of the first 4 samples agreeing stop a prompt)."""
TOP_LOGPROBS = 20
"""Top log-probabilities per token behind each sample's confidence (DeepConf's k)."""


@dataclass
class Matrix:
    """One task's fixed-N samples: rows are prompts, columns samples in sampling order.

    correct: bool (M, N), the verifier's verdict; tokens: int (M, N); texts: (M, N) str;
    answers: (M, N) the extracted answers (None: none), for the votes; equal: when two
    answers are the same (None: ``==``); confidence: float (M, N), each sample's lowest
    group confidence (NaN: none recorded)."""

    correct: np.ndarray
    tokens: np.ndarray
    texts: list[list[str]]
    answers: list[list[str | None]]
    equal: Callable[[str, str], bool] | None = None
    confidence: np.ndarray | None = None


@dataclass
class Method:
    """A method's outcome: correct float (M,), each prompt's verdict (1 right, 0 wrong; a
    share for ``one sample``, averaged over the N columns); samples and tokens: what it
    sampled over all prompts."""

    name: str
    correct: np.ndarray
    samples: float
    tokens: float


def arithmetic_prompts(count: int, seed: int = 0) -> list[Prompt]:
    """``What is a + b?`` (or minus), a and b in 2..30, the reference in an ``answer`` column."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        op = rng.choice(["+", "-"])
        answer = a + b if op == "+" else a - b
        text = f"What is {a} {op} {b}? Give the final number in \\boxed{{}}."
        out.append(Prompt(id=f"a{i:03d}", text=text, columns={"answer": str(answer)}))
    return out


def sampled(
    root: Path, prompts: list[Prompt], score: ScoreConfig, *, n: int, tokens: int, tools=None, top_logprobs: int = 0
) -> Matrix:
    """Sample N per prompt and score them (a run directory; a rerun resumes), as a Matrix;
    ``tools``: the (extract, equal) of the votes (``winnow.answers.answer_tools``);
    ``top_logprobs``: record each sample's confidence (0: not)."""
    config = GenerateConfig(
        models=[SMOLLM2], n=n, temperature=0.8, max_new_tokens=tokens, batch_size=64, seed=3, top_logprobs=top_logprobs
    )
    stages.generate(root, prompts, config)
    stages.score(root, score)
    scored, by_key, rewards, _ = load_scored(root)
    rows = [[by_key[(p.id, j)] for j in range(n)] for p in scored]
    texts = [[r["text"] for r in row] for row in rows]
    with np.errstate(invalid="ignore"):
        correct = rewards >= 1.0
    return Matrix(
        correct=correct,
        tokens=np.array([[r["num_tokens"] for r in row] for row in rows]),
        texts=texts,
        answers=[[tools[0](t) for t in row] for row in texts] if tools else [[None] * n for _ in texts],
        equal=tools[1] if tools else None,
        confidence=np.array([[np.nan if r.get(WEIGHT) is None else r[WEIGHT] for r in row] for row in rows]),
    )


def single(m: Matrix) -> Method:
    """One sample per prompt: the accuracy and tokens of any one column, averaged over the N
    columns (the same expectation as column 0 alone, with less noise)."""
    return Method("one sample", m.correct.mean(axis=1), len(m.texts), float(m.tokens.mean(axis=1).sum()))


def fixed(name: str, m: Matrix, choose: Callable[[int, int], int], n: int) -> Method:
    """A method that reads the first n samples of every prompt; ``choose(i, n)`` is the
    column it answers with (-1: no answer, wrong)."""
    correct = np.array([_right(m, i, choose(i, n)) for i in range(len(m.texts))], dtype=float)
    return Method(name, correct, n * len(m.texts), float(m.tokens[:, :n].sum()))


def stopped(
    name: str, m: Matrix, rule: tuple[str, float], choose: Callable[[int, int], int], maximum: int, step: int
) -> Method:
    """Adaptive stopping replayed: ``step`` samples at a time until ``rule`` holds or
    ``maximum`` are read; the answer is ``choose(i, read)``."""
    read = [_stop_at(m, i, rule, maximum, step) for i in range(len(m.texts))]
    correct = np.array([_right(m, i, choose(i, t)) for i, t in enumerate(read)], dtype=float)
    return Method(
        f"{name} (step {step})", correct, sum(read), float(sum(m.tokens[i, :t].sum() for i, t in enumerate(read)))
    )


def _stop_at(m: Matrix, i: int, rule: tuple[str, float], maximum: int, step: int) -> int:
    """Samples read before prompt i closes; under ``WARM_UP``'s rule not on the first step."""
    read = 0
    while read < maximum:
        read = min(read + step, maximum)
        if rule[0] == WARM_UP and read == step:
            continue
        rewards = m.correct[i, :read].astype(float)
        confidence = None if m.confidence is None else m.confidence[i, :read]
        if is_closed(rule, rewards, m.texts[i][:read], m.answers[i][:read], 1.0, m.equal, confidence):
            return read
    return read


def _right(m: Matrix, i: int, j: int) -> bool:
    return j >= 0 and bool(m.correct[i, j])


def voter(m: Matrix) -> Callable[[int, int], int]:
    """The majority vote over a prompt's first n samples (``winnow.select.majority``)."""
    return lambda i, n: sel.majority(m.answers[i][:n], equal=m.equal)


def confident_voter(m: Matrix) -> Callable[[int, int], int]:
    """The confidence-weighted vote over a prompt's first n samples (``winnow.select.aggregate``
    with ``confidence``: each answer weighs its samples' lowest group confidences)."""
    assert m.confidence is not None
    unscored = [np.nan] * len(m.correct[0])
    return lambda i, n: sel.aggregate(
        m.texts[i][:n], unscored[:n], "confidence", extract=_read(m, i), equal=m.equal, confidence=m.confidence[i, :n]
    )


def _read(m: Matrix, i: int) -> Callable[[str], str | None]:
    """Prompt i's extracted answers, looked up by text (extracted once, in ``sampled``)."""
    known = dict(zip(m.texts[i], m.answers[i], strict=True))
    return known.__getitem__


def verified(m: Matrix) -> Callable[[int, int], int]:
    """Best-of-N by the verifier: the first passing sample of the first n, else the first."""
    return lambda i, n: int(np.argmax(m.correct[i, :n]))


def band(values: np.ndarray, against: np.ndarray | None = None) -> tuple[float, float]:
    """95% bootstrap interval over prompts of mean(values), or of mean(values - against)."""
    base = np.zeros(len(values)) if against is None else against.astype(float)
    return paired_bootstrap(base, values.astype(float))


def table(title: str, m: Matrix, methods: list[Method], reference: Method) -> list[dict]:
    """Print one task's table (accuracy with its band, tokens, the difference from
    ``reference`` with its band) and return its rows."""
    print(f"\n## {title}\n")
    print(f"| method | accuracy [95% band] | samples | tokens sampled | vs {reference.name} [95% band] |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for x in methods:
        low, high = band(x.correct)
        dlow, dhigh = band(x.correct, reference.correct)
        diff = float(x.correct.mean() - reference.correct.mean())
        rows.append(
            {
                "method": x.name,
                "accuracy": float(x.correct.mean()),
                "band": [low, high],
                "samples": x.samples,
                "tokens": x.tokens,
                "difference": diff,
                "difference_band": [dlow, dhigh],
            }
        )
        print(
            f"| {x.name} | {x.correct.mean():.3f} [{low:.3f}, {high:.3f}] | {x.samples:,.0f} | {x.tokens:,.0f} "
            f"| {diff:+.3f} [{dlow:+.3f}, {dhigh:+.3f}] |"
        )
    return rows


def arithmetic(root: Path, count: int, n: int, tokens: int) -> tuple[list[dict], dict]:
    score = ScoreConfig(reward_fn="math", pass_threshold=1.0)
    tools = answer_tools("math")
    m = sampled(
        root / "arithmetic",
        arithmetic_prompts(count),
        score,
        n=n,
        tokens=tokens,
        tools=tools,
        top_logprobs=TOP_LOGPROBS,
    )
    vote, confident, step = voter(m), confident_voter(m), STEPS["arithmetic"]
    majority = fixed(f"majority of {n}", m, vote, n)
    adaptive = stopped(
        f"confident-consensus:{CONSENSUS} stopping", m, ("confident-consensus", CONSENSUS), confident, n, step
    )
    methods = [
        single(m),
        majority,
        fixed(f"confidence-weighted majority of {n}", m, confident, n),
        stopped(f"consensus:{CONSENSUS} stopping", m, ("consensus", CONSENSUS), vote, n, step),
        stopped(f"consensus:{LOOSER} stopping", m, ("consensus", LOOSER), vote, n, step),
        adaptive,
        stopped(f"confident-consensus:{LOOSER} stopping", m, ("confident-consensus", LOOSER), confident, n, step),
        fixed(f"Best-of-{n} by the verifier (oracle)", m, verified(m), n),
    ]
    title = f"(A) {count} arithmetic questions, math verifier, N = {n}, {tokens} new tokens"
    return table(title, m, methods, majority), {"adaptive": adaptive, "majority": majority}


def constraints(root: Path, count: int, n: int, tokens: int) -> list[dict]:
    train, _ = constraint_prompts()
    m = sampled(
        root / "constraints",
        train[:count],
        ScoreConfig(reward_fn=REWARD, pass_threshold=PASS),
        n=n,
        tokens=tokens,
    )
    best = fixed(f"Best-of-{n} by the verifier", m, verified(m), n)
    methods = [
        single(m),
        best,
        stopped("stop at the first pass", m, ("pass", 0.0), verified(m), n, STEPS["constraints"]),
    ]
    title = f"(B) {len(m.texts)} constraints prompts, IFEval strict, N = {n}, {tokens} new tokens"
    return table(title, m, methods, best)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=60, help="arithmetic questions for (A)")
    parser.add_argument("--constraints", type=int, default=105, help="constraints prompts for (B) (all: 105)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--run-dir", help="where the samples go (default: a temp folder; reruns resume)")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, no targets")
    args = parser.parse_args(argv)
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="winnow-bench-test-time-"))
    questions, count, tokens, n_a, n_b = args.questions, args.constraints, args.max_new_tokens, 16, 8
    if args.quick:
        questions, count, tokens, n_a, n_b = 4, 3, 8, 8, 4
    start = time.perf_counter()
    a_rows, a = arithmetic(root, questions, n_a, tokens)
    b_rows = constraints(root, count, n_b, tokens)
    seconds = time.perf_counter() - start
    checks = _checks(a["majority"], a["adaptive"], quick=args.quick)
    print(f"\n({seconds:.0f} s in all: sampling, or resuming it from --run-dir, and the replays)")
    return {
        "benchmark": "test_time",
        "rows": checks,
        "passed": all(r["passed"] is not False for r in checks),
        "arithmetic": a_rows,
        "constraints": b_rows,
        "seconds": seconds,
    }


def _checks(fixed_n: Method, adaptive: Method, *, quick: bool) -> list[dict]:
    """The target: the stopping method samples >= 2x fewer tokens than the fixed N, at an
    accuracy whose difference from the fixed N's has a band that reaches 0 or above."""
    saving = fixed_n.tokens / max(adaptive.tokens, 1.0)
    _, high = band(adaptive.correct, fixed_n.correct)
    rows = [
        (f"tokens, {fixed_n.name} / {adaptive.name}", saving, ">= 2", saving >= 2),
        (f"accuracy, {adaptive.name} - {fixed_n.name}: band's upper end", high, ">= 0", high >= 0),
    ]
    print("\n| check | measured | target | result |\n|---|---:|---|---|")
    for name, value, target, ok in rows:
        print(f"| {name} | {value:.3g} | {target} | {'-' if quick else ('PASS' if ok else 'FAIL')} |")
    return [
        {"check": name, "measured": value, "target": target, "passed": None if quick else ok, "detail": ""}
        for name, value, target, ok in rows
    ]


if __name__ == "__main__":
    main()
