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
    oracle: it reads the reference). Rule then judge, on the first ``--judged`` questions
    (all N samples of each): the math rule alone against the rule backed by the shipped
    SmolLM2 as an equivalence judge (``winnow.rewards.fallback.RuleThenJudge``), served by
    a real ``winnow serve`` subprocess on a free port, under ``fallback_on: no-answer``
    and ``fail``; the judge's calls, tokens and overrides beside them.
(B) The constraints demo's training prompts (IFEval strict check), N = 8: one sample;
    Best-of-N by the verifier's reward (it reads the prompt's instruction list, as a
    verified run does); ``pass`` adaptive stopping.
(C) Single-digit products (``What is 7 * 8? Reply with the number only.``, the math
    verifier), N = 16: (A)'s methods on a task the model answers right more often and
    agrees with itself on more; its wording, step and checked share were chosen on pilot
    questions that are not among the measured ones (``--pilot`` samples them).

Bands: 95% bootstrap intervals over prompts (``winnow.report.stats.paired_bootstrap``) of
each accuracy, and of its difference from the fixed-N method it is compared with.

    python benchmarks/bench_test_time.py [--questions 60] [--constraints 105] [--products 60] [--judged 8]
        [--quick | --pilot]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from results import checks, print_checks, result

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

# the tests' local-server helpers (``serving``: a free port, waiting for /health) serve the judge here too
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

STEPS = {"arithmetic": 4, "constraints": 2, "products": 2}
"""Samples per adaptive step, per task: a quarter of N for (A) and (B); an eighth for (C),
since under ``confident-consensus``'s warm-up a quarter caps the saving at 2x (no prompt
closes before half of N), so the 2x target could be met only if every prompt closed then."""
CONSENSUS = 0.6
"""``consensus:F``: stop once the leading answer holds this share of the samples."""
LOOSER = 0.5
"""A looser share, shown beside it (at a step of 4, 2 of the first 4 samples agreeing stop a
prompt; at a step of 2, any first 2 samples do: 1 of 2 already holds half)."""
CHECKED = {"arithmetic": CONSENSUS, "products": LOOSER}
"""The share of ``confident-consensus:F`` the targets are checked at, per task (one of
``CONSENSUS`` and ``LOOSER``, the shares the tables show); (C)'s was chosen on its pilot
questions (``PILOT``) before any measured question was sampled."""
PILOT = 12
"""(C)'s first questions in their shuffled order, set aside for choosing its wording, step and
share (``--pilot`` samples them); the measured questions are the ones after them."""
TOP_LOGPROBS = 20
"""Top log-probabilities per token behind each sample's confidence (DeepConf's k)."""
JUDGED = 8
"""Arithmetic questions (the first ones) whose N samples rule then judge re-scores: under
``fallback_on: fail`` nearly every sample of a 135M model is a judge call, several seconds
each on a 2-core CPU, so the judged rows cover these questions only."""


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


def product_prompts(count: int, *, pilot: bool = False) -> list[Prompt]:
    """``What is a * b?``, a and b in 1..9 (the 81 pairs in a shuffled order, seed 0): the
    first ``PILOT`` with ``pilot``, else up to ``count`` of the 69 after them.

    >>> [p.id for p in product_prompts(2)], product_prompts(1)[0].columns == {"answer": "35"}
    (['m12', 'm13'], True)
    """
    pairs = list(itertools.product(range(1, 10), repeat=2))
    random.Random(0).shuffle(pairs)
    span = range(PILOT) if pilot else range(PILOT, min(PILOT + count, len(pairs)))
    out = []
    for k in span:
        a, b = pairs[k]
        text = f"What is {a} * {b}? Reply with the number only."
        out.append(Prompt(id=f"m{k:02d}", text=text, columns={"answer": str(a * b)}))
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


@dataclass
class Rejudged:
    """The first k prompts' samples as rule then judge read them, all (k, N): rule, the
    rule's reading (``pass``, ``fail``, ``no_answer``); asked, bool, whether the judge was
    asked (under ``fallback_on: fail``, which asks about every row ``no-answer`` asks
    about and more); verdict, float, its verdict (1.0, 0.0; NaN: unclear or not asked);
    tokens, int, its call's prompt plus completion tokens (0: not asked)."""

    rule: np.ndarray
    asked: np.ndarray
    verdict: np.ndarray
    tokens: np.ndarray
    seconds: float = 0.0


def rejudge(m: Matrix, prompts: list[Prompt], judge, k: int) -> Rejudged:
    """Every sample of the first k prompts scored once by ``judge``: a ``RuleThenJudge``
    under ``fallback_on: fail`` (its call, then its ``last_extras``). The judge sees the same
    question, reference and answer under either ``fallback_on``, at temperature 0, so the
    ``no-answer`` rows read the verdicts of the rows that setting asks about
    (``passes``) rather than asking twice."""
    n = m.correct.shape[1]
    cells = [(i, j) for i in range(k) for j in range(n)]
    start = time.perf_counter()
    judge(
        [prompts[i].text for i, _ in cells],
        [m.texts[i][j] for i, j in cells],
        answer=[prompts[i].columns["answer"] for i, _ in cells],
        prompt_ids=[prompts[i].id for i, _ in cells],
    )
    seconds = time.perf_counter() - start
    extras = judge.last_extras
    verdicts = {"pass": 1.0, "fail": 0.0}
    usage = [e.get("judge_usage") or {} for e in extras]
    return Rejudged(
        rule=np.array([e.get("rule") for e in extras]).reshape(k, n),
        asked=np.array(["judge" in e for e in extras]).reshape(k, n),
        verdict=np.array([verdicts.get(e.get("judge", ""), np.nan) for e in extras]).reshape(k, n),
        tokens=np.array([(u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0) for u in usage]).reshape(
            k, n
        ),
        seconds=seconds,
    )


def asked_under(r: Rejudged, on: str) -> np.ndarray:
    """bool (k, N): the rows the judge is asked about under ``fallback_on`` = ``on`` (``fail``
    asks about the rule's fails too)."""
    return r.asked & ((r.rule == "no_answer") | (on == "fail"))


def passes(r: Rejudged, on: str | None) -> np.ndarray:
    """bool (k, N): the rule's passes, and under ``on`` (None: the rule alone) the rows the
    judge is asked about and says equivalent (an unclear reply leaves the rule's fail).

    >>> r = Rejudged(np.array([["pass", "fail", "no_answer", "fail"]]), np.array([[False, True, True, True]]),
    ...              np.array([[np.nan, 1.0, 1.0, np.nan]]), np.array([[0, 50, 50, 50]]))
    >>> passes(r, None).tolist(), passes(r, "no-answer").tolist(), passes(r, "fail").tolist()
    ([[True, False, False, False]], [[True, False, True, False]], [[True, True, True, False]])
    """
    rule = r.rule == "pass"
    return rule if on is None else rule | (asked_under(r, on) & (r.verdict == 1.0))


def judged_methods(m: Matrix, r: Rejudged, modes: list[str]) -> list[Method]:
    """One sample and Best-of-N by the verifier, over the first k prompts, as the rule alone
    and as rule then judge under each of ``modes`` count a pass."""
    k, n = r.rule.shape
    out = []
    for on in [None, *modes]:
        sub = dataclasses.replace(
            m, correct=passes(r, on), tokens=m.tokens[:k], texts=m.texts[:k], answers=m.answers[:k]
        )
        which = "rule only" if on is None else f"rule then judge ({on})"
        out.append(dataclasses.replace(single(sub), name=f"one sample, {which}"))
        out.append(fixed(f"Best-of-{n} by the verifier, {which}", sub, verified(sub), n))
    return out


def last_number(text: str) -> str | None:
    """The last integer written in a text, a loose reading to check the judge's verdicts by.

    >>> last_number("7 + 5 is 12."), last_number("It is -3, so \\boxed{-3}"), last_number("none")
    ('12', '-3', None)
    """
    numbers = re.findall(r"-?\d+", text)
    return numbers[-1] if numbers else None


def judge_counts(m: Matrix, prompts: list[Prompt], r: Rejudged, on: str) -> dict:
    """Under ``on``: the judge's calls, passes, fails, unclear replies, overrides (a rule
    fail it passes), tokens, and how many of its verdicts agree with the last-number
    reading (the verdict is 1.0 exactly when the text's last integer is the reference), and
    how many of its passes that reading passes too."""
    asked = asked_under(r, on)
    decided = asked & ~np.isnan(r.verdict)
    reads = {
        (i, j): last_number(m.texts[i][j]) == prompts[i].columns["answer"]
        for i, j in zip(*np.nonzero(decided), strict=True)
    }
    agree = sum(read == (r.verdict[i, j] == 1.0) for (i, j), read in reads.items())
    return {
        "fallback_on": on,
        "judge_calls": int(asked.sum()),
        "judge_passes": int((asked & (r.verdict == 1.0)).sum()),
        "judge_fails": int((asked & (r.verdict == 0.0)).sum()),
        "judge_unclear": int((asked & np.isnan(r.verdict)).sum()),
        "judge_overrides": int((asked & (r.rule == "fail") & (r.verdict == 1.0)).sum()),
        "judge_tokens": int(r.tokens[asked].sum()),
        "agree_with_last_number": int(agree),
        "passes_with_last_number": int(sum(read and r.verdict[i, j] == 1.0 for (i, j), read in reads.items())),
        "decided": int(decided.sum()),
    }


def judge_table(rows: list[dict], seconds_per_call: float) -> None:
    print(
        "\n| fallback_on | judge calls | passes | fails | unclear | overrides | judge tokens "
        "| agrees with last number | passes the last number passes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in rows:
        print(
            f"| {c['fallback_on']} | {c['judge_calls']} | {c['judge_passes']} | {c['judge_fails']} "
            f"| {c['judge_unclear']} | {c['judge_overrides']} | {c['judge_tokens']:,} "
            f"| {c['agree_with_last_number']} of {c['decided']} "
            f"| {c['passes_with_last_number']} of {c['judge_passes']} |"
        )
    print(f"\n({seconds_per_call:.1f} s per judge call, {JUDGE_CONCURRENCY} in flight)")


JUDGE_CONCURRENCY = 4
"""Judge requests in flight at once (the server batches them)."""


def served_judge(log: Path) -> tuple[str, subprocess.Popen]:
    """``winnow serve --model smollm2`` as a subprocess on a free port, its output in ``log``;
    its API root once ``/health`` answers."""
    from serving import free_port, wait_healthy

    port = free_port()
    argv = [sys.executable, "-m", "winnow", "serve", "--model", "smollm2", "--served-model-name", "judge"]
    with log.open("w") as out:  # the child holds its own copy of the file
        argv += ["--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(root, process, timeout=300)
    except AssertionError as e:
        process.terminate()
        raise RuntimeError(f"the judge server did not start ({e}); see {log}") from None
    return f"{root}/v1", process


def judged(m: Matrix, prompts: list[Prompt], k: int, log: Path) -> tuple[list[dict], list[dict]]:
    """Rule then judge on the first k prompts' samples with a served SmolLM2 judge (its
    server's output in ``log``): the table's rows and the judge's counts under each
    ``fallback_on``."""
    from functools import partial

    from winnow.remote import ClientSettings
    from winnow.rewards.fallback import RuleThenJudge
    from winnow.verifiers.math import math

    url, process = served_judge(log)
    try:
        client = ClientSettings(url, concurrency=JUDGE_CONCURRENCY, timeout=600.0)
        judge = RuleThenJudge(partial(math, reference_column="answer"), client, model="judge", on="fail")
        r = rejudge(m, prompts, judge, k)
    finally:
        process.terminate()
        process.wait(timeout=60)
    n, modes = m.correct.shape[1], ["no-answer", "fail"]
    methods = judged_methods(m, r, modes)
    title = f"(A, judged) the first {k} of the arithmetic questions, N = {n}: the math rule alone or backed by a judge"
    rows = table(title, m, methods, methods[0])
    counts = [judge_counts(m, prompts, r, on) for on in modes]
    judge_table(counts, r.seconds / max(int(r.asked.sum()), 1))
    return rows, counts


def voted(
    root: Path, prompts: list[Prompt], *, n: int, tokens: int, step: int, share: float, title: str
) -> tuple[list[dict], dict, Matrix]:
    """A short-answer task (the math verifier, votes with its equality) sampled at N and
    replayed by every voting method; its table's rows, ``{"adaptive", "majority"}`` (the
    checked ``confident-consensus:share`` stopping and the majority of N it is checked
    against) and the Matrix."""
    tools = answer_tools("math")
    score = ScoreConfig(reward_fn="math", pass_threshold=1.0)
    m = sampled(root, prompts, score, n=n, tokens=tokens, tools=tools, top_logprobs=TOP_LOGPROBS)
    vote, confident = voter(m), confident_voter(m)
    majority = fixed(f"majority of {n}", m, vote, n)
    confident_stops = {
        f: stopped(f"confident-consensus:{f} stopping", m, ("confident-consensus", f), confident, n, step)
        for f in (CONSENSUS, LOOSER)
    }
    methods = [
        single(m),
        majority,
        fixed(f"confidence-weighted majority of {n}", m, confident, n),
        stopped(f"consensus:{CONSENSUS} stopping", m, ("consensus", CONSENSUS), vote, n, step),
        stopped(f"consensus:{LOOSER} stopping", m, ("consensus", LOOSER), vote, n, step),
        *confident_stops.values(),
        fixed(f"Best-of-{n} by the verifier (oracle)", m, verified(m), n),
    ]
    rows = table(title, m, methods, majority)
    return rows, {"adaptive": confident_stops[share], "majority": majority}, m


def arithmetic(root: Path, count: int, n: int, tokens: int, judged_k: int = 0) -> tuple[list[dict], dict]:
    """(A)'s table and rows; with ``judged_k``, rule then judge's table on the first ones too
    (``out["judged"]``, ``out["judge"]``)."""
    prompts = arithmetic_prompts(count)
    title = f"(A) {count} arithmetic questions, math verifier, N = {n}, {tokens} new tokens"
    step, share = STEPS["arithmetic"], CHECKED["arithmetic"]
    rows, out, m = voted(root / "arithmetic", prompts, n=n, tokens=tokens, step=step, share=share, title=title)
    if judged_k:
        out["judged"], out["judge"] = judged(m, prompts, min(judged_k, count), root / "judge-server.log")
    return rows, out


def products(root: Path, count: int, n: int, tokens: int, *, pilot: bool = False) -> tuple[list[dict], dict]:
    """(C)'s table and rows, on its measured questions or (``pilot``) its pilot ones."""
    prompts = product_prompts(count, pilot=pilot)
    which = "pilot" if pilot else "measured"
    title = f"(C) {len(prompts)} single-digit products ({which}), math verifier, N = {n}, {tokens} new tokens"
    step, share = STEPS["products"], CHECKED["products"]
    rows, out, _ = voted(root / f"products-{which}", prompts, n=n, tokens=tokens, step=step, share=share, title=title)
    return rows, out


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
    parser.add_argument("--products", type=int, default=60, help="measured product questions for (C) (all: 69)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--judged", type=int, default=JUDGED, help="arithmetic questions rule then judge re-scores")
    parser.add_argument("--run-dir", help="where the samples go (default: a temp folder; reruns resume)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke sizes, no targets")
    mode.add_argument("--pilot", action="store_true", help="(C) on its pilot questions only, no targets")
    args = parser.parse_args(argv)
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="winnow-bench-test-time-"))
    questions, count, tokens, n_a, n_b = args.questions, args.constraints, args.max_new_tokens, 16, 8
    judged_k, product_count = args.judged, args.products
    if args.quick:
        questions, count, tokens, n_a, n_b, judged_k, product_count = 4, 3, 8, 8, 4, min(judged_k, 1), 4
    if args.pilot:
        c_rows, c = products(root, 0, n_a, tokens, pilot=True)
        return result("test_time", _checks(c["majority"], c["adaptive"], quick=True, task="(C) "), products=c_rows)
    start = time.perf_counter()
    a_rows, a = arithmetic(root, questions, n_a, tokens, judged_k)
    b_rows = constraints(root, count, n_b, tokens)
    c_rows, c = products(root, product_count, n_a, tokens)
    seconds = time.perf_counter() - start
    rows = _checks(a["majority"], a["adaptive"], quick=args.quick)
    rows += _checks(c["majority"], c["adaptive"], quick=args.quick, task="(C) ")
    print(f"\n({seconds:.0f} s in all: sampling, or resuming it from --run-dir, and the replays)")
    return result(
        "test_time",
        rows,
        arithmetic=a_rows,
        constraints=b_rows,
        products=c_rows,
        arithmetic_judged=a.get("judged", []),
        judge=a.get("judge", []),
        seconds=seconds,
    )


def _checks(fixed_n: Method, adaptive: Method, *, quick: bool, task: str = "") -> list[dict]:
    """The target: the stopping method samples >= 2x fewer tokens than the fixed N, at an
    accuracy whose difference from the fixed N's has a band that reaches 0 or above; the
    rows' names start with ``task`` ((A)'s rows carry none, as first recorded)."""
    saving = fixed_n.tokens / max(adaptive.tokens, 1.0)
    _, high = band(adaptive.correct, fixed_n.correct)
    rows = checks(
        [
            (f"{task}tokens, {fixed_n.name} / {adaptive.name}", saving, ">= 2", saving >= 2),
            (f"{task}accuracy, {adaptive.name} - {fixed_n.name}: band's upper end", high, ">= 0", high >= 0),
        ],
        quick=quick,
    )
    print_checks(rows, detail=False)
    return rows


if __name__ == "__main__":
    main()
