"""vLLM (CPU build) against the transformers backend, on the same workload, in one run.

    .venv-vllm/bin/python benchmarks/bench_vllm.py           # SmolLM2, 32 prompts x N=8 x 64 tokens
    .venv-vllm/bin/python benchmarks/bench_vllm.py --quick   # smoke size

Needs the environment ``bash scripts/setup_vllm.sh`` makes (vLLM's CPU build; transformers
as vLLM pins it). Both backends get the same prompts (``bench_generate.make_prompts``, chat
template applied by the same code), temperature 1.0, no top-k/top-p, and count completion
tokens the same way (``Completion.num_tokens``: up to and including EOS). vLLM runs its
default multi-process engine with ``--gpu-memory-utilization`` of system memory for its KV
cache; the engine's start-up is timed separately and not counted. Methods run interleaved,
after a warm-up each, and each keeps its best repeat.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_generate import make_prompts

from winnow.generate import Sampling
from winnow.generate.hf import HFBackend


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: 8 prompts, N=4, 16 new tokens, 1 repeat")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="HFBackend prompts per batch (the stage default)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.15)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.repeats = 8, 4, 16, 1

    import transformers
    import vllm

    from winnow.generate.vllm import VLLMBackend

    s = Sampling(n=args.n, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
    prompts = make_prompts(args.prompts)
    print(
        f"{len(prompts)} prompts, N={s.n}, {s.max_new_tokens} new tokens | torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads | transformers {transformers.__version__} | vllm {vllm.__version__}"
    )
    hf = HFBackend("smollm2", device="cpu", batch_size=args.batch_size)
    start = time.perf_counter()
    engine = VLLMBackend("smollm2", max_model_len=512, gpu_memory_utilization=args.gpu_memory_utilization)
    print(f"vLLM engine start: {time.perf_counter() - start:.0f} s", flush=True)

    methods = {f"transformers (HFBackend, batch {args.batch_size})": hf, "vLLM CPU (VLLMBackend)": engine}
    warm = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4)
    for backend in methods.values():
        backend.generate(prompts[:2], warm, seed=0)
    results: dict[str, dict] = {}
    for rep in range(args.repeats):
        for name, backend in methods.items():
            start = time.perf_counter()
            out = backend.generate(prompts, s, seed=rep)
            seconds = time.perf_counter() - start
            tokens = sum(c.num_tokens for c in out)
            print(f"  repeat {rep} {name}: {tokens} tokens in {seconds:.1f}s", flush=True)
            if name not in results or tokens / seconds > results[name]["tokens_per_s"]:
                results[name] = dict(
                    completions=len(out), tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds
                )

    hf_rate, vllm_rate = (results[name]["tokens_per_s"] for name in methods)
    print("\n| backend | completions | completion tokens | seconds | tokens/s |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['completions']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} |")
    print(f"vLLM over transformers: {vllm_rate / hf_rate:.2f}x")
    return {
        "benchmark": "vllm",
        "rows": [
            {
                "check": "vLLM (CPU) tokens/s over the transformers backend (SmolLM2)",
                "measured": vllm_rate / hf_rate,
                "target": "-",
                "passed": None,
                "detail": f"{vllm_rate:.0f} vs {hf_rate:.0f} tok/s",
            }
        ],
        "passed": True,
        "config": vars(args),
        "results": results,
    }


if __name__ == "__main__":  # vLLM's engine process re-imports this module: start nothing then
    main()
