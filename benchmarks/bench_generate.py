"""Completion tokens per second of the transformers backend on CPU, against two baselines.

    python benchmarks/bench_generate.py            # 32 prompts x N=8 x 64 new tokens (~10 min on 2 cores)
    python benchmarks/bench_generate.py --quick    # smoke size (~1 min)

Model: SmolLM2-135M-Instruct (``smollm2``), chat template applied, temperature 1.0, no
top-k/top-p. Methods, all on the same model object, the same prompts and the same seeds:

- ``one at a time``: ``model.generate`` with one sequence per call (on a subset of the prompts);
- ``generate, batches of 8``: ``model.generate(num_return_sequences=N)`` over fixed batches of
  8 prompts in input order (what ``HFBackend`` did before ``winnow.generate.decode``);
- ``HFBackend batch_size=B``: the backend as the generate stage runs it.

Only real completion tokens count: up to and including the first EOS, as
``Completion.num_tokens`` does. The machine may be shared, so methods run interleaved,
each repeat in turn, after one warm-up call each, and each keeps its best repeat.
"""

from __future__ import annotations

import argparse
import time

import torch

from winnow.generate import Sampling
from winnow.generate.hf import HFBackend
from winnow.records import Prompt

SUBJECTS = [
    "a rainy Monday commute",
    "an office printer",
    "a kitchen table",
    "a parking garage",
    "a bus timetable",
    "a pencil sharpener",
    "a laundry room",
    "a grocery receipt",
    "a hallway carpet",
    "a filing cabinet",
    "a traffic light",
    "a paper clip",
    "a train platform at noon",
    "a dishwasher cycle",
    "a stapler",
    "a coffee mug",
]
NOTE = (
    "The town library reopened after a long renovation that replaced the leaking roof. "
    "Electricians rewired the reading rooms and added outlets under every desk. "
    "A quiet study hall now fills the second floor, with tall windows facing the park. "
    "Volunteers moved thousands of books back onto the shelves over two weekends. "
    "The children's section gained a small stage for story time on Saturday mornings. "
    "The old card catalogue was kept as a display near the front entrance. "
    "Opening hours were extended to nine in the evening on weekdays. "
    "A cafe cart outside the entrance sells tea and pastries until noon. "
)
TARGETS = {"vs_one_at_a_time": 3.0, "vs_fixed_batches": 1.2}


def make_prompts(count: int) -> list[Prompt]:
    """``count`` prompts: even ones are one-line requests (~38 tokens once templated), odd
    ones ask about a note of 1..8 sentences (~60..155 tokens)."""
    sentences = NOTE.split(". ")
    prompts = []
    for i in range(count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        if i % 2 == 0:
            text = f"Describe {subject} in two sentences."
        else:
            k = 1 + (i // 2) % 8
            text = f"Read this note, then describe {subject} in two sentences.\n\n" + ". ".join(sentences[:k]) + "."
        prompts.append(Prompt(id=f"p{i:02d}", text=text))
    return prompts


def real_tokens(rows: list[list[int]], eos_ids: set[int]) -> int:
    """Tokens up to and including each row's first EOS (the rest is padding)."""
    total = 0
    for row in rows:
        stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
        total += len(row) if stop is None else stop + 1
    return total


@torch.inference_mode()
def hf_generate(
    backend: HFBackend, prompts: list[Prompt], s: Sampling, seed: int, prompts_per_call: int, n_per_call: int
) -> tuple[int, int]:
    """(completions, real tokens) from plain ``model.generate`` over fixed batches, in order."""
    torch.manual_seed(seed)
    tok, rows = backend.tokenizer, []
    tok.padding_side = "left"
    for start in range(0, len(prompts), prompts_per_call):
        ids = [backend.render(p) for p in prompts[start : start + prompts_per_call]]
        batch = tok.pad({"input_ids": ids}, return_tensors="pt").to(backend.device)
        for _ in range(s.n // n_per_call):
            out = backend.lm.generate(
                **batch,
                max_new_tokens=s.max_new_tokens,
                do_sample=True,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,  # top_k=0 is off; None would mean generate's default, 50
                num_return_sequences=n_per_call,
                pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(backend.eos_ids),
            )
            rows += out[:, batch["input_ids"].shape[1] :].tolist()
    return len(rows), real_tokens(rows, backend.eos_ids)


def winnow_backend(
    backend: HFBackend, prompts: list[Prompt], s: Sampling, seed: int, batch_size: int
) -> tuple[int, int]:
    backend.batch_size = batch_size
    out = backend.generate(prompts, s, seed=seed)
    return len(out), sum(c.num_tokens for c in out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke size: 8 prompts, N=4, 16 new tokens, 1 repeat")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--one-at-a-time-prompts", type=int, default=4, help="subset for the slow baseline")
    parser.add_argument("--batch-sizes", default="8,16", help="HFBackend batch sizes to measure; the first is judged")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.n, args.max_new_tokens, args.one_at_a_time_prompts, args.repeats = 8, 4, 16, 2, 1

    s = Sampling(n=args.n, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
    prompts = make_prompts(args.prompts)
    subset = prompts[: args.one_at_a_time_prompts]  # mixed lengths too: even short, odd long
    backend = HFBackend("smollm2", device="cpu")
    lengths = backend.prompt_lengths(prompts)
    print(
        f"{len(prompts)} prompts, {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
        f"N={s.n}, {s.max_new_tokens} new tokens, {torch.get_num_threads()} threads"
    )

    judged = f"HFBackend batch_size={args.batch_sizes.split(',')[0]}"
    methods = {
        "one at a time": lambda seed: hf_generate(backend, subset, s, seed, 1, 1),
        "generate, batches of 8": lambda seed: hf_generate(backend, prompts, s, seed, 8, s.n),
    }
    for b in args.batch_sizes.split(","):
        methods[f"HFBackend batch_size={b}"] = lambda seed, b=int(b): winnow_backend(backend, prompts, s, seed, b)

    warm = Sampling(n=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=4)
    hf_generate(backend, prompts[:2], warm, 0, 2, 2)  # first calls are slow (weights paged in, allocator)
    winnow_backend(backend, prompts[:2], warm, 0, 2)
    results: dict[str, dict] = {}
    for rep in range(args.repeats):
        for name, run in methods.items():
            start = time.perf_counter()
            completions, tokens = run(rep)
            seconds = time.perf_counter() - start
            print(f"  repeat {rep} {name}: {tokens} tokens in {seconds:.1f}s", flush=True)
            if name not in results or tokens / seconds > results[name]["tokens_per_s"]:
                results[name] = dict(
                    completions=completions, tokens=tokens, seconds=seconds, tokens_per_s=tokens / seconds
                )

    fixed, single = results["generate, batches of 8"]["tokens_per_s"], results["one at a time"]["tokens_per_s"]
    print(
        "\n| method | completions | completion tokens | seconds | tokens/s "
        "| vs generate, batches of 8 | vs one at a time |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        r["vs_fixed_batches"], r["vs_one_at_a_time"] = r["tokens_per_s"] / fixed, r["tokens_per_s"] / single
        print(
            f"| {name} | {r['completions']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} "
            f"| {r['vs_fixed_batches']:.2f}x | {r['vs_one_at_a_time']:.2f}x |"
        )
    checks = {key: results[judged][key] >= goal for key, goal in TARGETS.items()}
    for key, goal in TARGETS.items():
        print(f"{'PASS' if checks[key] else 'FAIL'}: {judged} {key} = {results[judged][key]:.2f}x (target >= {goal}x)")
    labels = {"vs_one_at_a_time": "one-completion-at-a-time loop", "vs_fixed_batches": "generate(n) in batches of 8"}
    rows = [
        {
            "check": f"{name} tokens/s over {labels[key]}",
            "measured": results[name][key],
            "target": f">= {goal:g}" if name == judged else "-",
            "passed": results[name][key] >= goal if name == judged else None,
            "detail": f"{results[name]['tokens_per_s']:.0f} tok/s",
        }
        for name in results
        if name.startswith("HFBackend")
        for key, goal in TARGETS.items()
    ]
    return {
        "benchmark": "generate",
        "rows": rows,
        "passed": all(checks.values()),
        "config": vars(args),
        "results": results,
        "judged": judged,
        "targets": checks,
    }


if __name__ == "__main__":
    main()
