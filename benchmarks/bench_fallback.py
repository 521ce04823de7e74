"""What the ``generate()`` fallback costs against the fast loop, on a model both can run.

    python benchmarks/bench_fallback.py            # SmolLM2, 16 prompts x N=8 x 64 tokens (~5 min on 2 cores)
    python benchmarks/bench_fallback.py --quick    # smoke size

The same ``HFBackend`` object samples the same prompts with the same seeds twice: once with
its fast loop (``decode.sample``: one shared prefill per prompt, finished rows dropped,
batches of 16 prompts), once forced onto the path models like RWKV or MiniMax take
(``fallback.sample``: ``generate(num_return_sequences=N)``, one prompt per call, so nothing
is padded). Methods run interleaved, each keeps its best repeat. Only real completion tokens
count (``Completion.num_tokens``).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_generate import make_prompts

from winnow.generate import Sampling
from winnow.generate.hf import HFBackend

TARGET = 1.0  # the fallback is for correctness, not speed: the fast loop must simply not lose


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: 4 prompts, N=4, 16 new tokens, 1 repeat")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.repeats = 4, 4, 16, 1

    s = Sampling(n=args.n, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
    prompts = make_prompts(args.prompts)
    backend = HFBackend("smollm2", device="cpu", batch_size=args.batch_size)
    print(f"{len(prompts)} prompts, N={s.n}, {s.max_new_tokens} new tokens, {torch.get_num_threads()} threads")

    def run(reason: str | None, seed: int) -> tuple[int, int]:
        backend.fallback_reason = reason
        out = backend.generate(prompts, s, seed=seed)
        return len(out), sum(c.num_tokens for c in out)

    methods = {"fast loop (decode.sample)": None, "fallback (generate, one prompt a call)": "forced for the benchmark"}
    warm = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4)
    for reason in methods.values():
        backend.fallback_reason = reason
        backend.generate(prompts[:2], warm, seed=0)
    results: dict[str, dict] = {}
    for rep in range(args.repeats):
        for name, reason in methods.items():
            start = time.perf_counter()
            completions, tokens = run(reason, rep)
            seconds = time.perf_counter() - start
            print(f"  repeat {rep} {name}: {tokens} tokens in {seconds:.1f}s", flush=True)
            if name not in results or tokens / seconds > results[name]["tokens_per_s"]:
                results[name] = dict(
                    completions=completions, tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds
                )

    fast, slow = (results[name]["tokens_per_s"] for name in methods)
    print("\n| method | completions | completion tokens | seconds | tokens/s |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['completions']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} |")
    ratio = fast / slow
    print(f"{'PASS' if ratio >= TARGET else 'FAIL'}: fast loop over fallback = {ratio:.2f}x (target >= {TARGET}x)")
    return {
        "benchmark": "fallback",
        "rows": [
            {
                "check": "fast loop tokens/s over the generate() fallback (SmolLM2)",
                "measured": ratio,
                "target": f">= {TARGET:g}",
                "passed": ratio >= TARGET,
                "detail": f"{fast:.0f} vs {slow:.0f} tok/s",
            }
        ],
        "passed": ratio >= TARGET,
        "config": vars(args),
        "results": results,
    }


if __name__ == "__main__":
    main()
