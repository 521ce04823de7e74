"""Adaptive sampling against a fixed N, and majority voting against single samples (SmolLM2, CPU).

(A) The constraints demo's training prompts (IFEval's strict check, pass at 1.0), MAX = 16:
    adaptive ``--stop-when pass`` (``--adaptive-step`` 2) against a fixed N = 16, both
    sampled for real in this run. Targets: at least 2x fewer completions, and a share of
    prompts with a passing completion at least 98% of the fixed run's. The adaptive rule is
    also replayed on the fixed run's own matrix (the same samples, so the comparison
    without sampling noise).
(B) Arithmetic questions with a reference answer, scored by the math verifier: the vote of
    8 samples (``bon --aggregate majority``, math-verify's equality) against one sample.

    python benchmarks/bench_adaptive.py [--prompts 105] [--max-new-tokens 48] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_test_time import arithmetic_prompts
from results import checks, print_checks, result

from winnow import select as sel
from winnow import stages
from winnow.adaptive import sample_adaptive, score_adaptive
from winnow.answers import answer_tools
from winnow.config import AdaptiveConfig, GenerateConfig, ScoreConfig
from winnow.demo_constraints import PASS, REWARD, constraint_prompts
from winnow.models import SMOLLM2
from winnow.records import Prompt
from winnow.rundir import load_scored


def adaptive_against_fixed(root: Path, prompts: list[Prompt], *, maximum: int, step: int, tokens: int) -> dict:
    # the demo's sampling settings (batches of 64: an adaptive step's few samples per prompt fill them)
    sample = dict(models=[SMOLLM2], n=maximum, temperature=0.8, max_new_tokens=tokens, batch_size=64, shard_size=64)
    score = ScoreConfig(reward_fn=REWARD, pass_threshold=PASS)
    start = time.perf_counter()
    stages.generate(root / "fixed", prompts, GenerateConfig(**sample))
    stages.score(root / "fixed", score)
    fixed_s = time.perf_counter() - start
    start = time.perf_counter()
    adaptive = AdaptiveConfig(step=step, stop_when="pass")
    done = sample_adaptive(root / "adaptive", prompts, GenerateConfig(**sample), score, adaptive)
    score_adaptive(root / "adaptive", score)
    adaptive_s = time.perf_counter() - start
    fixed = load_scored(root / "fixed")
    fixed_rewards = fixed[2]
    fixed_tokens = sum(c["num_tokens"] for c in fixed[1].values())
    a = done["adaptive"]
    adaptive_rewards = load_scored(root / "adaptive")[2]
    # the rule replayed on the fixed matrix: columns until the first pass, in whole steps
    replay = []
    for row in fixed_rewards:
        hits = np.flatnonzero(row >= PASS)
        replay.append(maximum if not hits.size else min(maximum, (hits[0] // step + 1) * step))
    return {
        "prompts": len(prompts),
        "fixed_samples": int((~np.isnan(fixed_rewards)).sum()),
        "adaptive_samples": a["samples"],
        "replay_samples": int(sum(replay)),
        "fixed_tokens": fixed_tokens,
        "adaptive_tokens": a["tokens"],
        "fixed_yield": float(np.mean((fixed_rewards >= PASS).any(axis=1))),
        "adaptive_yield": float(np.mean((adaptive_rewards >= PASS).any(axis=1))),
        "fixed_seconds": fixed_s,
        "adaptive_seconds": adaptive_s,
    }


def majority_against_single(root: Path, prompts: list[Prompt], *, n: int, tokens: int) -> dict:
    config = GenerateConfig(models=[SMOLLM2], n=n, temperature=0.8, max_new_tokens=tokens, batch_size=16, seed=3)
    stages.generate(root / "votes", prompts, config)
    stages.score(root / "votes", ScoreConfig(reward_fn="math", pass_threshold=1.0))
    scored_prompts, by_key, rewards, _ = load_scored(root / "votes")
    extract, equal = answer_tools("math")
    correct = rewards >= 1.0
    votes = []
    for i, p in enumerate(scored_prompts):
        texts = [by_key.get((p.id, j), {}).get("text") for j in range(n)]
        pick = sel.aggregate(texts, rewards[i], "majority", extract=extract, equal=equal)
        votes.append(bool(correct[i, pick]) if pick >= 0 else False)
    return {
        "prompts": len(prompts),
        "n": n,
        "single": float(np.nanmean(correct)),
        "majority": float(np.mean(votes)),
        "best_of_n_oracle": float(np.mean(correct.any(axis=1))),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=105, help="training prompts for (A) (default: all 105)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--questions", type=int, default=40, help="arithmetic questions for (B)")
    parser.add_argument("--run-dir", help="where the runs go (default: a temp folder; reruns resume)")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, no targets")
    args = parser.parse_args(argv)
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="winnow-bench-adaptive-"))
    count, tokens, questions = args.prompts, args.max_new_tokens, args.questions
    if args.quick:
        count, tokens, questions = 6, 8, 6
    train, _ = constraint_prompts()
    a = adaptive_against_fixed(root, train[:count], maximum=16, step=2, tokens=tokens)
    b = majority_against_single(root, arithmetic_prompts(questions), n=8, tokens=tokens)
    saving = a["fixed_samples"] / max(a["adaptive_samples"], 1)
    yield_ratio = a["adaptive_yield"] / a["fixed_yield"] if a["fixed_yield"] else float("nan")
    print(f"\n## Adaptive sampling (stop at the first pass) against a fixed N = 16, {a['prompts']} prompts\n")
    print("| | fixed N = 16 | adaptive (step 2) | adaptive rule replayed on the fixed samples |")
    print("|---|---:|---:|---:|")
    print(f"| completions sampled | {a['fixed_samples']} | {a['adaptive_samples']} | {a['replay_samples']} |")
    print(f"| tokens sampled | {a['fixed_tokens']} | {a['adaptive_tokens']} | - |")
    print(f"| prompts with a passing completion | {a['fixed_yield']:.3f} | {a['adaptive_yield']:.3f} | - |")
    print(f"| wall seconds | {a['fixed_seconds']:.0f} | {a['adaptive_seconds']:.0f} | - |")
    print(f"\n## Majority vote of {b['n']} against one sample, {b['prompts']} arithmetic questions (math verifier)\n")
    print("| | accuracy |\n|---|---:|")
    print(f"| one sample | {b['single']:.3f} |\n| majority of {b['n']} | {b['majority']:.3f} |")
    print(f"| any of {b['n']} correct (oracle) | {b['best_of_n_oracle']:.3f} |")
    rows = [
        ("fixed completions / adaptive completions", saving, ">= 2", saving >= 2),
        ("adaptive yield / fixed yield", yield_ratio, ">= 0.98", yield_ratio >= 0.98),
        ("majority accuracy - single accuracy", b["majority"] - b["single"], "reported", True),
    ]
    judged = checks(rows, quick=args.quick)
    print_checks(judged, detail=False)
    return result("adaptive", judged, adaptive=a, votes=b)


if __name__ == "__main__":
    main()
