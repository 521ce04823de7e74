"""What containing a reward costs: ``call_reward`` on ``length`` over 10^5 completions.

Run by hand: ``python benchmarks/bench_reward_call.py`` (a few seconds). Prints a markdown
table: the bare function called batch by batch, ``call_reward`` with no time limit (the
default: argument copies, os._exit swapped, working folder checked, values validated), and
``call_reward`` with ``--reward-timeout`` (each batch in a daemon thread). Times are the best
of several repeats, measured side by side in one process.
"""

from __future__ import annotations

import argparse
import time

from winnow.rewards import builtins, call_reward, contained


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    texts = [f"completion number {i} " * (1 + i % 7) for i in range(args.rows)]
    prompts = ["p"] * args.rows
    ids = [f"q{i // 16}" for i in range(args.rows)]
    samples = [i % 16 for i in range(args.rows)]
    starts = range(0, args.rows, args.batch)

    def bare():
        for s in starts:
            builtins.length(prompts[s : s + args.batch], texts[s : s + args.batch])

    def via_call_reward(timeout=None):
        for s in starts:
            e = s + args.batch
            call_reward(
                builtins.length,
                "length",
                prompts[s:e],
                texts[s:e],
                timeout=timeout,
                prompt_ids=ids[s:e],
                sample_indices=samples[s:e],
            )

    def containment_alone():
        for s in starts:
            with contained():
                list(prompts[s : s + args.batch]), list(texts[s : s + args.batch])

    rows = []
    base = best_time(bare, args.repeats)
    for name, fn in (
        ("bare length()", bare),
        ("containment alone (os._exit swap, getcwd, argument copies)", containment_alone),
        ("call_reward, no limit (default)", via_call_reward),
        ("call_reward, --reward-timeout 60", lambda: via_call_reward(60.0)),
    ):
        t = base if fn is bare else best_time(fn, args.repeats)
        rows.append({"path": name, "seconds": t, "ratio": t / base})
    print(f"| path ({args.rows:,} completions, batches of {args.batch}) | seconds | vs bare |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['seconds']:.3f} | {r['ratio']:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
