"""What recording confidence (``--top-logprobs K``) costs the transformers decode loop, and
that it samples the very same tokens.

    python benchmarks/bench_logprobs.py            # SmolLM2, 8 prompts x N=8 x 48 tokens, K=20
    python benchmarks/bench_logprobs.py --quick    # smoke size

One ``HFBackend`` samples the same prompts with the same seeds with and without
``Sampling.top_logprobs``, interleaved, each keeping its best repeat. The extra work per
step is a ``log_softmax`` and a ``topk`` over the vocabulary for the rows still running; the
tokens must be identical (asserted), since the figures of the demos are checked to 6 decimals.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from bench_generate import make_prompts

from winnow.generate import Sampling
from winnow.generate.hf import HFBackend


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: 2 prompts, N=2, 8 new tokens, 1 repeat")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.repeats = 2, 2, 8, 1

    plain = Sampling(n=args.n, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
    methods = {
        "off": plain,
        f"top_logprobs={args.top_logprobs}": dataclasses.replace(plain, top_logprobs=args.top_logprobs),
    }
    prompts = make_prompts(args.prompts)
    backend = HFBackend("smollm2", device="cpu", batch_size=16)
    print(f"{len(prompts)} prompts, N={plain.n}, {plain.max_new_tokens} new tokens, {torch.get_num_threads()} threads")
    backend.generate(prompts[:2], dataclasses.replace(plain, n=2, max_new_tokens=4), seed=0)  # warm-up
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU seconds: what a shared machine's other jobs inflate least
    texts: dict[str, list[str]] = {}
    tokens = 0
    for rep in range(args.repeats):
        for name, sampling in methods.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            out = backend.generate(prompts, sampling, seed=rep)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
            cpu[name] = min(cpu.get(name, float("inf")), time.process_time() - start_cpu)
            texts[name] = [c.text for c in out]
            tokens = sum(c.num_tokens for c in out)
        assert len({tuple(t) for t in texts.values()}) == 1, "recording log-probabilities changed a token"
    for name, seconds in best.items():
        print(f"{name:>16}: {seconds:7.1f} s wall  {cpu[name]:7.1f} s CPU  {tokens / seconds:7.1f} tokens/s")
    on = f"top_logprobs={args.top_logprobs}"
    overhead, cpu_overhead = best[on] / best["off"] - 1, cpu[on] / cpu["off"] - 1
    print(f"same tokens: yes; overhead: {overhead:+.1%} wall, {cpu_overhead:+.1%} CPU")
    return {"seconds": best, "cpu_seconds": cpu, "tokens": tokens, "overhead": overhead, "cpu_overhead": cpu_overhead}


if __name__ == "__main__":
    main()
