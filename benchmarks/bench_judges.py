"""The two judges of docs/howto/test-time-compute.md with a real small model as the judge.

SmolLM2-135M-Instruct (the shipped ``smollm2``) is served by ``winnow serve`` in this
process (uvicorn in a thread) and reached through the production client:

1. **Rule, then a judge.** A hand-built set of math answers with known truth: each
   reference with answers the ``math`` rule cannot read (words: "seventy-two", "ten
   apples"), half of them right, and answers it reads and fails though they are right
   ("It is 72, not 70"). ``RuleThenJudge`` under ``fallback_on: fail``: the counts, the
   judge's accuracy on the rows it decided (its verdict against the truth), its unclear
   replies, and the seconds per judge call.
2. **A judge that picks.** ``winnow bon`` on the first ``--prompts`` constraints prompts
   (``winnow/data/constraints_prompts.jsonl``), n samples from smollm2, the ``ifeval``
   reward (share of the row's instructions followed), ``--select-by judge`` in windows of
   ``--window``: how often the judge's pick is the reward's, the mean reward of the
   judge's picks against the reward's picks and a random sample's (the mean), the calls,
   the fallbacks and the seconds.

A 135M model is a weak judge: the figures say what it does, not what a judge can do.

    python benchmarks/bench_judges.py [--prompts 24] [--n 4] [--window 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

# the tests' local-server helpers (``serving``: uvicorn in a thread, waiting for /health) serve the judge here too
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# answers: (text, truly equivalent to the reference)
MATH_SET = {
    "1/2": [("one half", True), ("a half", True), ("a quarter", False), ("two thirds", False)],
    "72": [("seventy-two", True), ("It is 72, not 70", True), ("seventy", False), ("eighty", False)],
    "3": [("three", True), ("The answer is 3, not 4", True), ("four", False), ("five", False)],
    "10": [("ten", True), ("ten apples", True), ("twelve", False), ("nine", False)],
    "5": [("five", True), ("5 is right, not 6", True), ("six", False), ("seven", False)],
    "100": [("one hundred", True), ("a hundred", True), ("fifty", False), ("one thousand", False)],
}
QUESTIONS = {
    "1/2": "What is 1 divided by 2?",
    "72": "How many eggs are in six dozen?",
    "3": "What is 12 divided by 4?",
    "10": "Ann has 4 apples and buys 6 more. How many apples does she have?",
    "5": "What is 2 + 3?",
    "100": "What is 10 times 10?",
}


def judge_app():
    """``winnow serve smollm2`` as an app, the model loaded, its served name ``judge``."""
    from winnow.config import ServeConfig
    from winnow.serve.main import build_app

    return build_app(ServeConfig(model="smollm2", served_model_name="judge", device="cpu"))


def rule_then_judge(url: str) -> dict:
    from winnow.remote import ClientSettings
    from winnow.rewards.fallback import RuleThenJudge
    from winnow.verifiers.math import math

    rows = [(ref, text, truth) for ref, answers in MATH_SET.items() for text, truth in answers]
    judge = RuleThenJudge(partial(math, reference_column="answer"), ClientSettings(url), model="judge", on="fail")
    start = time.perf_counter()
    scores = judge([QUESTIONS[r] for r, _, _ in rows], [t for _, t, _ in rows], answer=[r for r, _, _ in rows])
    seconds = time.perf_counter() - start
    extras = judge.last_extras
    asked = [i for i, e in enumerate(extras) if "judge" in e]
    decided = [i for i in asked if extras[i]["judge"] != "unclear"]
    right = sum((scores[i] == 1.0) == rows[i][2] for i in decided)
    truth_right = sum((s == 1.0) == truth for s, (_, _, truth) in zip(scores, rows, strict=True))
    rule_right = sum((e.get("rule") == "pass") == truth for e, (_, _, truth) in zip(extras, rows, strict=True))
    return {
        "rows": len(rows),
        "rule_passes": sum(e.get("rule") == "pass" for e in extras),
        "judge_asked": len(asked),
        "judge_passes": sum(extras[i]["judge"] == "pass" for i in asked),
        "judge_fails": sum(extras[i]["judge"] == "fail" for i in asked),
        "judge_unclear": len(asked) - len(decided),
        "judge_overrides": sum(extras[i]["rule"] == "fail" and extras[i]["judge"] == "pass" for i in asked),
        "judge_accuracy_on_decided": right / len(decided) if decided else None,
        "accuracy_rule_alone": rule_right / len(rows),
        "accuracy_rule_then_judge": truth_right / len(rows),
        "seconds_per_judge_call": seconds / max(len(asked), 1),
        "replies": sorted({extras[i]["judge_reply"] for i in asked})[:10],
    }


def judge_picks(url: str, prompts: int, n: int, window: int) -> dict:
    from winnow.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(__file__).resolve().parent.parent / "winnow" / "data" / "constraints_prompts.jsonl"
        rows = source.read_text().splitlines()[:prompts]
        (Path(tmp) / "prompts.jsonl").write_text("\n".join(rows) + "\n")
        run = Path(tmp) / "run"
        argv = ["bon", "--prompts", f"{tmp}/prompts.jsonl", "--run-dir", str(run), "--model", "smollm2"]
        argv += ["--n", str(n), "--max-new-tokens", "48", "--temperature", "0.8", "--device", "cpu"]
        argv += ["--reward-fn", "ifeval", "--select-by", "judge", "--pick-judge", url, "--pick-model", "judge"]
        start = time.perf_counter()
        assert main([*argv, "--pick-window", str(window)]) == 0
        seconds = time.perf_counter() - start
        best = [json.loads(line) for line in (run / "best.jsonl").open()]
        rewards = np.load(run / "score" / "rewards.npy")
    judged = [r["reward"] for r in best if r["reward"] is not None]
    reward_best = [float(np.nanmax(rewards[i])) for i in range(len(best))]
    agree = sum(r["sample_index"] == r["reward_pick"] for r in best)
    # a tie of rewards makes several samples as good as the reward's pick
    as_good = sum(r["reward"] == b for r, b in zip(best, reward_best, strict=True))
    return {
        "prompts": len(best),
        "n": n,
        "window": window,
        "agree_with_reward_pick": agree,
        "agreement": agree / len(best),
        "judge_pick_as_good_as_reward_pick": as_good,
        "mean_reward_judge_pick": float(np.mean(judged)),
        "mean_reward_reward_pick": float(np.mean(reward_best)),
        "mean_reward_random_sample": float(np.nanmean(rewards)),
        "judge_calls": sum(r["judge_calls"] for r in best),
        "fallbacks": sum(r["judge_fallbacks"] for r in best),
        "seconds_bon_total": seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--window", type=int, default=4)
    args = parser.parse_args(argv)
    from serving import serve_in_thread

    with serve_in_thread(judge_app()) as root:  # uvicorn in a thread of this process
        url = f"{root}/v1"
        out = {
            "rule_then_judge": rule_then_judge(url),
            "judge_pick": judge_picks(url, args.prompts, args.n, args.window),
        }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
